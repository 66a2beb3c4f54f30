"""Hessian-aware saliency of prunable structures (NViT's criterion).

For a structure S with weights ``w_S`` and a batch b with gradient ``g_b = dL_b/dw``,
``s_b(S) = (w_S . g_b,S) ** 2``; the saliency is the mean over batches. This equals
``w_S^T F w_S`` with ``F = mean_b g_b g_b^T`` (the empirical Fisher block of S), the
second-order (Hessian) estimate of the loss increase from zeroing all of S together,
which a sum of per-weight scores would miss (Yang et al., CVPR 2023, NViT; Molchanov et
al., CVPR 2019, for the first-order Taylor group criterion).

At a model whose loss is at its minimum (a dense model distilled from itself) the plain
gradient is zero; :func:`random_probe_loss` then gives per-batch gradients whose outer
products average to the Gauss-Newton matrix ``J^T J`` of the outputs, which is the
Hessian of a squared-error distillation loss there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from nas._progress import progress_bar
from nas.compress._structures import StructureIndex
from nas.compress._transformer import DenseTransformer

__all__ = ["LossFn", "magnitude", "random_probe_loss", "saliency"]

LossFn = Callable[[nn.Module, Any], Tensor]
"""``loss(model, batch) -> scalar``: the loss whose curvature the saliency estimates."""


def saliency(
    model: DenseTransformer,
    batches: Iterable[Any],
    loss: LossFn,
    *,
    index: StructureIndex | None = None,
    progress: bool = False,
) -> Tensor:
    """Mean over ``batches`` of ``(sum over S of w * dL/dw) ** 2`` for every structure.

    Args:
        model: the encoder (its train/eval mode is used as it is).
        batches: what ``loss`` takes as its second argument; at least one.
        loss: ``loss(model, batch) -> scalar tensor``.
        index: the structures (default: all of ``model``'s, in
            :func:`~nas.compress._structures.structures` order).
        progress: show a tqdm bar.

    Returns:
        ``(S,)`` float64 saliencies, in ``index.items`` order.

    Raises:
        ValueError: no batch.
    """
    index = StructureIndex(model) if index is None else index
    names, params = zip(*model.named_parameters())
    frozen = [p for p in params if not p.requires_grad]
    total = torch.zeros(len(index), dtype=torch.float64)
    count = 0
    try:
        for p in frozen:  # a frozen (e.g. pretrained) model still has a saliency
            p.requires_grad_(True)
        for batch in progress_bar(batches, desc="saliency", disable=not progress, leave=False):
            with torch.enable_grad():
                value = loss(model, batch)
                grads = torch.autograd.grad(value, params, allow_unused=True)
            products = {
                n: (p.detach() * g) if g is not None else torch.zeros_like(p)
                for n, p, g in zip(names, params, grads)
            }
            total += index.total(products) ** 2
            count += 1
    finally:
        for p in frozen:
            p.requires_grad_(False)
    if count == 0:
        raise ValueError("batches must hold at least one batch, got none")
    return total / count


def magnitude(model: DenseTransformer, *, index: StructureIndex | None = None) -> Tensor:
    """The magnitude baseline: the root mean square weight of each structure ``(S,)``
    (mean, so structures of different sizes compare)."""
    index = StructureIndex(model) if index is None else index
    squares = {n: p.detach() ** 2 for n, p in model.named_parameters()}
    return (index.total(squares) / index.sizes).sqrt()


def random_probe_loss(
    outputs: Callable[[nn.Module, Any], Tensor], *, seed: int = 0
) -> LossFn:
    """A loss ``sum(r * outputs(model, batch))`` with a fresh ``r ~ N(0, I)`` per call
    (seeded): ``E[g g^T] = sum_i J_i^T J_i``, the Gauss-Newton curvature of a squared-error
    distillation of ``outputs`` (e.g. sentence embeddings ``(B, C)``), useful where the
    real loss has no gradient (the dense model against itself)."""
    generator = torch.Generator().manual_seed(seed)

    def probe(model: nn.Module, batch: Any) -> Tensor:
        out = outputs(model, batch)
        r = torch.randn(out.shape, generator=generator, dtype=out.dtype)
        return (r * out).sum()

    return probe
