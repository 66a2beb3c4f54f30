"""A user's images as a classification task: ``ROOT/<class name>/<image files>``.

What ``nas train --supernet ofa --data ROOT`` (and ``sortednet``) trains on. Images are
read with Pillow, following the digits' conventions (:mod:`nas.supernets.tasks._digits`):

- classes are the sub-folders of ``ROOT`` (hidden ones skipped), sorted by name; the
  label is a class's index. Images are the files of a class folder whose suffix is in
  :data:`IMAGE_SUFFIXES` (any case); other files and hidden ones (macOS's ``._*``) are
  ignored;
- the split is the digits' (:func:`stratified_split`): seeded (seed 0), stratified by
  class, 70/15/15 train/validation/test, over the files sorted by class and name, so it
  is the same on every machine whatever order the file system lists them in. Within a
  split examples are ordered by a stable hash (sha1) of ``class/file``, so the first
  ``limit`` examples of a split are a fair sample of every class;
- channels come from the data: grey (1) when every image is grey-level (Pillow modes
  ``1``, ``L``, ``LA``, ``I``, ``I;16``, ``F``), else RGB (3, alpha dropped); a caller
  may fix them (``channels=1`` converts everything to grey). 8-bit pixels are assumed;
- images are resized (bilinear) to ``resolution`` x ``resolution``, scaled to [0, 1] and
  standardised per channel with the training split's mean and standard deviation;
- training loads lazily: the constructor reads every file's header (a file that is not
  an image fails there, naming it), decodes the training images once for the statistics
  (keeping none) and decodes and keeps the validation and test images (so a bad file
  fails before training, not at its end); a training batch decodes only its own images
  (:meth:`ImageFolderTask.load_batch`, what DataLoader workers run).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from nas._task import BatchKeys, shuffled_epochs
from nas.supernets.tasks._classify import SPLITS, ClassificationTask, stratified_split

__all__ = ["IMAGE_SUFFIXES", "ImageFolderTask"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
LAYOUTS = ("image", "vector")
MIN_PER_CLASS = 6
"""Images per class that put at least one in each split (70/15/15, rounded)."""


class ImageFolderTask(ClassificationTask):
    """Classify the images of a folder of class folders (see the module docstring).

    Args:
        root: the folder holding one sub-folder of images per class.
        layout: ``"image"`` (``(C, R, R)`` inputs) or ``"vector"`` (``C * R * R`` values).
        resolution: the side R images are resized to.
        channels: 1 (grey) or 3 (RGB); ``None`` decides from the data.
        label_smoothing: of the training loss.
        name: the task's name; ``images:<folder name>`` when omitted.

    Raises:
        ValueError: not a folder, fewer than 2 classes, an empty class folder, a file that
            is not a readable image (named), or too few images to fill every split.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        layout: str = "image",
        resolution: int = 20,
        channels: int | None = None,
        label_smoothing: float = 0.0,
        name: str | None = None,
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
            raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1, 3 or None, got {channels!r}")
        self.root = Path(root)
        self.name = name or f"images:{self.root.resolve().name}"
        self.layout, self.resolution, self.label_smoothing = layout, resolution, label_smoothing
        self.classes, files, labels = _scan(self.root)
        self.channels = channels or _channels_of(files)
        index = stratified_split(labels, len(self.classes))
        self._files: dict[str, list[Path]] = {}
        self._labels: dict[str, torch.Tensor] = {}
        for split in SPLITS:
            if len(index[split]) == 0:
                raise ValueError(
                    f"{self.root}: {len(files)} images in {len(self.classes)} classes leave "
                    f"the {split} split empty; give at least {MIN_PER_CLASS} images per class"
                )
            order = sorted(index[split], key=lambda i: _hash(files[i], self.root))
            self._files[split] = [files[i] for i in order]
            self._labels[split] = torch.tensor([labels[i] for i in order], dtype=torch.long)
        self._mean, self._std = self._train_statistics()
        self._held_out = {split: (self._inputs(self._files[split]), self._labels[split])
                          for split in SPLITS[1:]}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(f)}" for s, f in self._files.items())
        return (f"ImageFolderTask({self.name!r}, classes={len(self.classes)}, "
                f"channels={self.channels}, resolution={self.resolution}, {sizes})")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_features(self) -> int:
        """Values per example in the ``"vector"`` layout (``C * R * R``)."""
        return self.channels * self.resolution * self.resolution

    def files(self, split: str) -> tuple[Path, ...]:
        """The image files of ``split``, in the order of its examples."""
        return tuple(self._split_files(split))

    # -- data ------------------------------------------------------------------------------

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, labels)`` of ``split``; training images are decoded afresh on every
        call (training reads its batches through :meth:`load_batch`)."""
        if split in self._held_out:
            return self._held_out[split]
        return self._inputs(self._split_files(split)), self._labels["train"]

    def train_inputs(self, count: int) -> torch.Tensor:
        """The first ``count`` training inputs (a hash-ordered sample of every class)."""
        return self._inputs(self._files["train"][:count])

    def train_keys(
        self, *, batch_size: int, generator: torch.Generator
    ) -> Callable[[], list[int]]:
        """Shuffled epochs over the training images, ``batch_size`` at a time."""
        return shuffled_epochs(len(self._files["train"]), batch_size=batch_size,
                               generator=generator)

    def load_batch(self, keys: BatchKeys) -> tuple[torch.Tensor, ...]:
        """``(inputs, labels)`` of the training images ``keys``, decoded now."""
        keys = torch.as_tensor(keys, dtype=torch.long).tolist()
        files = self._files["train"]
        return self._inputs([files[k] for k in keys]), self._labels["train"][keys]

    # -- helpers ---------------------------------------------------------------------------

    def _split_files(self, split: str) -> list[Path]:
        try:
            return self._files[split]
        except KeyError:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}") from None

    def _inputs(self, files: list[Path]) -> torch.Tensor:
        """Standardised inputs of ``files`` in this task's layout."""
        if files:
            pixels = torch.from_numpy(np.stack([self._decode(path) for path in files]))
        else:  # an empty share of a batch
            pixels = torch.empty((0, self.channels, self.resolution, self.resolution))
        images = (pixels - self._mean) / self._std  # (N, C, R, R)
        return images.flatten(1) if self.layout == "vector" else images

    def _decode(self, path: Path) -> np.ndarray:
        """One image as ``(C, R, R)`` float32 pixels in [0, 1]."""
        from PIL import Image

        try:
            with Image.open(path) as image:
                image = image.convert("L" if self.channels == 1 else "RGB")
                image = image.resize((self.resolution, self.resolution),
                                     Image.Resampling.BILINEAR)
                pixels = np.asarray(image, dtype=np.float32) / 255.0
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise ValueError(f"{path}: not a readable image ({error})") from None
        return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)

    def _train_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and standard deviation ``(C, 1, 1)`` of the training pixels,
        one image decoded at a time; a constant channel keeps a deviation of 1."""
        total = np.zeros(self.channels)
        squares = np.zeros(self.channels)
        for path in self._files["train"]:
            pixels = self._decode(path).astype(np.float64)
            total += pixels.sum((1, 2))
            squares += (pixels * pixels).sum((1, 2))
        n = len(self._files["train"]) * self.resolution * self.resolution
        mean = total / n
        var = np.maximum(squares - n * mean * mean, 0.0) / max(n - 1, 1)
        std = np.where(var > 0, np.sqrt(var), 1.0)
        shape = (self.channels, 1, 1)
        return (torch.tensor(mean, dtype=torch.float32).reshape(shape),
                torch.tensor(std, dtype=torch.float32).reshape(shape))


def _scan(root: Path) -> tuple[tuple[str, ...], list[Path], list[int]]:
    """Class names, image files (sorted by class and name) and their labels."""
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder; give a folder of class folders "
                         "(ROOT/<class name>/<images>)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 2:
        raise ValueError(f"{root}: found {len(folders)} class folder(s); give at least 2 "
                         "(ROOT/<class name>/<images>)")
    files: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        images = sorted(p for p in folder.iterdir() if p.is_file()
                        and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not images:
            raise ValueError(f"{folder}: class folder holds no images (suffixes "
                             f"{', '.join(IMAGE_SUFFIXES)})")
        files += images
        labels += [label] * len(images)
    return tuple(p.name for p in folders), files, labels


def _channels_of(files: list[Path]) -> int:
    """1 when every file is a grey-level image, else 3 (reads headers only)."""
    from PIL import Image

    grey = True
    for path in files:
        try:
            with Image.open(path) as image:
                grey = grey and image.mode in GREY_MODES
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise ValueError(f"{path}: not a readable image ({error})") from None
    return 1 if grey else 3


def _hash(path: Path, root: Path) -> bytes:
    """The stable order key of an image within its split: sha1 of ``class/file``."""
    return hashlib.sha1(path.relative_to(root).as_posix().encode("utf-8")).digest()
