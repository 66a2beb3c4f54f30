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

import numpy as np
import torch
import torch.nn.functional as F

from nas.supernets.tasks._classify import (
    SPLIT_SEED,
    SPLITS,
    ClassificationTask,
    stratified_split,
)

__all__ = ["CLASSES", "LAYOUTS", "NATIVE_RESOLUTION", "DigitsTask", "digits_split"]

NATIVE_RESOLUTION = 8
CLASSES = 10
LAYOUTS = ("image", "vector")


@functools.cache
def _split_indices() -> dict[str, np.ndarray]:
    """Stratified 70/15/15 indices into scikit-learn's digits, the same everywhere."""
    from sklearn.datasets import load_digits

    return stratified_split(load_digits().target, CLASSES, seed=SPLIT_SEED)


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


class DigitsTask(ClassificationTask):
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
