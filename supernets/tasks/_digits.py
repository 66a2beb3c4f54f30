"""Handwritten-digit classification on scikit-learn's bundled digits (real data, offline).

The 1,797 8x8 grey-level images of UCI's "Optical Recognition of Handwritten Digits"
ship inside scikit-learn, so this task installs with the package and never downloads.
It is the built-in task of the image supernets (OFA) and the MLP ones (SortedNet).

Data conventions:

- the split is fixed by a seeded permutation (seed 0): 70 % train, 15 % validation,
  15 % test, stratified by class, identical on every machine;
- pixels (0..16) are scaled to [0, 1] and standardised with the training split's
  mean and standard deviation;
- ``layout="image"`` gives ``(n, 1, R, R)`` tensors, bilinearly resized from 8x8 to
  ``resolution`` R (the small CNNs need more than 8 pixels to downsample five times);
  ``layout="vector"`` gives the flat ``(n, 64)`` pixels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas._task import BatchKeys, Task, Workload, forward_probe, shuffled_epochs

SPLITS = ("train", "validation", "test")
SPLIT_SEED = 0
NATIVE_RESOLUTION = 8
CLASSES = 10
LAYOUTS = ("image", "vector")
_EVAL_BATCH = 512


@functools.cache
def _split_indices() -> dict[str, np.ndarray]:
    """Stratified 70/15/15 indices into scikit-learn's digits, the same everywhere."""
    from sklearn.datasets import load_digits

    labels = load_digits().target
    rng = np.random.default_rng(SPLIT_SEED)
    parts: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    for label in range(CLASSES):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_train, n_val = round(0.70 * len(members)), round(0.15 * len(members))
        parts["train"].append(members[:n_train])
        parts["validation"].append(members[n_train:n_train + n_val])
        parts["test"].append(members[n_train + n_val:])
    return {split: np.sort(np.concatenate(chunks)) for split, chunks in parts.items()}


@functools.cache
def digits_split(split: str, layout: str = "image", resolution: int = 32) -> tuple[
    torch.Tensor, torch.Tensor
]:
    """``(inputs, labels)`` of one split in ``layout`` (see the module docstring).

    Raises:
        ValueError: an unknown split or layout, or a resolution below 8.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    if resolution < NATIVE_RESOLUTION:
        raise ValueError(f"resolution must be at least {NATIVE_RESOLUTION}, got {resolution}")
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = torch.as_tensor(digits.data / 16.0, dtype=torch.float32)
    train = pixels[_split_indices()["train"]]
    mean, std = train.mean(), train.std()
    index = _split_indices()[split]
    inputs = (pixels[index] - mean) / std
    labels = torch.as_tensor(digits.target[index], dtype=torch.long)
    if layout == "vector":
        return inputs, labels
    images = inputs.reshape(-1, 1, NATIVE_RESOLUTION, NATIVE_RESOLUTION)
    if resolution != NATIVE_RESOLUTION:
        images = F.interpolate(
            images, size=(resolution, resolution), mode="bilinear", align_corners=False
        )
    return images.contiguous(), labels


class DigitsTask(Task):
    """Classify a digit; ``accuracy`` is top-1 on the split, ``loss`` its cross-entropy.

    Args:
        name: the registry name of this variant.
        layout: ``"image"`` (``(1, R, R)`` inputs) or ``"vector"`` (64 pixels).
        resolution: image side R (``"image"`` only).
        label_smoothing: of the training loss.
    """

    def __init__(
        self,
        name: str,
        *,
        layout: str = "image",
        resolution: int = 32,
        label_smoothing: float = 0.0,
    ) -> None:
        digits_split("validation", layout, resolution)  # validates layout and resolution
        self.name = name
        self.layout = layout
        self.resolution = resolution
        self.label_smoothing = label_smoothing

    def __repr__(self) -> str:
        return f"DigitsTask({self.name!r}, layout={self.layout!r}, resolution={self.resolution})"

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return digits_split(split, self.layout, self.resolution)

    def evaluate(
        self, model: nn.Module, *, split: str = "validation", limit: int | None = None
    ) -> dict[str, float]:
        """``accuracy`` and mean cross-entropy ``loss`` on ``split`` (first ``limit``)."""
        inputs, labels = self.split(split)
        if limit is not None:
            if limit < 1:
                raise ValueError(f"limit must be a positive integer, got {limit!r}")
            inputs, labels = inputs[:limit], labels[:limit]
        model.eval()
        correct, total_loss = 0, 0.0
        with torch.inference_mode():
            for start in range(0, len(labels), _EVAL_BATCH):
                logits = model(inputs[start:start + _EVAL_BATCH])
                target = labels[start:start + _EVAL_BATCH]
                correct += int((logits.argmax(-1) == target).sum())
                total_loss += float(F.cross_entropy(logits, target, reduction="sum"))
        return {"accuracy": correct / len(labels), "loss": total_loss / len(labels)}

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        inputs, labels = batch
        return F.cross_entropy(model(inputs), labels, label_smoothing=self.label_smoothing)

    def train_keys(
        self, *, batch_size: int, generator: torch.Generator
    ) -> Callable[[], list[int]]:
        """Shuffled epochs over the training split, ``batch_size`` examples at a time."""
        return shuffled_epochs(len(self.split("train")[1]), batch_size=batch_size,
                               generator=generator)

    def load_batch(self, keys: BatchKeys) -> tuple[torch.Tensor, ...]:
        inputs, labels = self.split("train")
        return inputs[keys], labels[keys]

    def workload(self) -> Workload:
        """One digit in, one prediction out, batch 1 (the seq2seq lengths read as 1)."""
        return Workload(src_len=1.0, tgt_len=1.0, batch=1, beam=1)

    def latency_probe(self, model: nn.Module) -> Callable[[], None]:
        """Classify :meth:`example_inputs`'s digit, on the model's device and dtype."""
        return forward_probe(model, self.example_inputs())

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """The first validation digit, batch 1."""
        return (self.split("validation")[0][:1].clone(),)
