"""Post-training calibration: the range of every quantized layer's input and output.

SimQ-NAS calibrates about a hundred samples of the training data without retraining;
the samples are fixed by a seed, so every subnet of a search is calibrated on the same
data and a rerun calibrates alike. Observers record the range of each layer's
input and output while the float model runs the task's loss on those samples
(:func:`calibrate`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

CALIBRATION_SAMPLES = 128
"""Examples calibrated on (SimQ-NAS: about 100)."""

CALIBRATION_BATCH = 32

PERCENTILE = 1e-4
"""Fraction of each activation's values cut off at either end (SimQ-NAS calibrates with
KL divergence or a percentile; 99.99% is TensorRT's and ONNX Runtime's usual one)."""


Ranges = dict[str, tuple[tuple[float, float], tuple[float, float]]]
"""Module name -> ((input min, input max), (output min, output max))."""


def calibration_batches(
    task: Any, *, samples: int = CALIBRATION_SAMPLES, seed: int = 0
) -> list[tuple[Tensor, ...]]:
    """``samples`` training examples of ``task`` in batches, the same for a given seed.

    Raises:
        ValueError: the task has no training data to calibrate on.
    """
    generator = torch.Generator().manual_seed(seed)
    try:
        next_batch = task.train_batches(batch_size=CALIBRATION_BATCH, generator=generator)
    except NotImplementedError:  # a user's task that cannot give training batches
        raise ValueError(
            f"task {getattr(task, 'name', task)!r} has no training data to calibrate a "
            "quantized subnet on; use --quantize none"
        ) from None
    return [next_batch() for _ in range(-(-samples // CALIBRATION_BATCH))]


def calibrate(
    model: nn.Module, names: Iterable[str], task: Any, batches: list[tuple[Tensor, ...]]
) -> Ranges:
    """Run ``task.loss(model, batch)`` on every batch (no gradients) and return the
    calibrated ranges of the named modules' inputs and outputs: per batch the
    :data:`PERCENTILE` tails are cut (a few outliers must not stretch the 8-bit grid over
    values that never occur, as min-max would), then the bounds are averaged over the
    batches. A module the forward pass never calls (its weight read directly by
    functional code) has no entry."""
    wanted = set(names)
    seen: dict[str, list[list[float]]] = {}
    hooks = []

    def observe(name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            seen.setdefault(name, []).append([*_bounds(inputs[0]), *_bounds(output)])
        return hook

    for name, module in model.named_modules():
        if name in wanted:
            hooks.append(module.register_forward_hook(observe(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                task.loss(model, batch)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    ranges: Ranges = {}
    for name, rows in seen.items():
        lo_in, hi_in, lo_out, hi_out = (sum(column) / len(rows) for column in zip(*rows))
        ranges[name] = ((lo_in, hi_in), (lo_out, hi_out))
    return ranges


def _bounds(x: Tensor) -> tuple[float, float]:
    """The :data:`PERCENTILE` and ``1 - PERCENTILE`` quantiles of ``x``'s values."""
    values = x.detach().reshape(-1).float()
    k = max(1, int(PERCENTILE * values.numel()))
    return (float(values.kthvalue(k).values),
            float(values.kthvalue(values.numel() - k + 1).values))
