"""Resumable training: a run folder holding the run's settings and its latest states.

Layout of ``RUN/`` (nothing in it is pickled; safetensors for tensors, JSON for the rest):

- ``run.json``: ``format``, ``version``, the run's ``settings`` (everything that decides
  what it computes: the recipe as resolved, the data, ranks, precision, accumulation),
  ``out`` (the checkpoint it ends with) and ``command``.
- ``step-NNNNNNN/``, one per saved step (the two newest are kept):
  ``weights.safetensors`` (the supernet's float32 state, tied tensors once, their
  aliases in the metadata), ``optimizer.safetensors`` (``<parameter index>.<name>``:
  AdamW's ``step``, ``exp_avg``, ``exp_avg_sq``), ``rng.safetensors`` (``torch.<rank>``
  and ``cuda.<rank>``: each rank's generator, which draws its dropout masks),
  ``scheme.safetensors`` (the training scheme's tensors, e.g. OFA's teacher) and
  ``state.json``: ``step``, the learning-rate ``scheduler``'s and the ``scaler``'s
  state, the optimiser's ``param_groups``, ``subnet_rng`` (numpy's generator that
  samples the subnets), the ``scheme``'s JSON state, ``running_loss``, ``wall_s``,
  ``resumed_at`` (the steps earlier runs stopped at) and the sha256 of every file.

A state is written into ``step-NNNNNNN.partial/`` and renamed when complete, so a run
killed while writing leaves the previous state intact; :meth:`RunFolder.latest` skips
a torn or corrupt state with a warning and uses the newest good one.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from nas._files import file_sha256, write_text_atomic

logger = logging.getLogger(__name__)

FORMAT = "nas-training-run"
VERSION = 1
KEEP = 2
"""States kept in a run folder: the newest, and the one before in case it is torn."""
_FILES = ("weights", "optimizer", "rng", "scheme")


@dataclass
class TrainingState:
    """Everything a run needs to continue exactly where it stopped, after ``step``."""

    step: int
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    subnet_rng: dict[str, Any]
    torch_rng: list[torch.Tensor]
    cuda_rng: list[torch.Tensor] = field(default_factory=list)
    scaler: dict[str, Any] | None = None
    scheme: dict[str, Any] = field(default_factory=dict)
    scheme_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    running_loss: float = math.nan
    wall_s: float = 0.0
    resumed_at: list[int] = field(default_factory=list)


class RunFolder:
    """A training run's folder: its settings and saved states (module docstring)."""

    def __init__(self, path: Path, document: Mapping[str, Any]) -> None:
        self.path = path
        self.document = dict(document)

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.document["settings"])

    @classmethod
    def create(cls, path: str | Path, *, settings: Mapping[str, Any], out: str,
               command: str | None, force: bool) -> RunFolder:
        """Start a run folder at ``path`` (created; one holding files needs ``force``,
        which clears it)."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ValueError(f"run folder '{path}' is a file; give a folder")
        if path.is_dir() and any(path.iterdir()):
            if not force:
                raise FileExistsError(
                    f"run folder '{path}' already holds a run; resume it with --resume "
                    f"{path}, or pass --force to start over")
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        document = {
            "format": FORMAT, "version": VERSION, "settings": dict(settings), "out": out,
            "command": command,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        write_text_atomic(path / "run.json", json.dumps(document, indent=2) + "\n")
        return cls(path, document)

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        """An existing run folder; one-line errors for anything else."""
        path = Path(path)
        meta = path / "run.json"
        if not meta.is_file():
            raise FileNotFoundError(
                f"'{path}' is not a training run folder (no run.json); give the folder that "
                "nas train wrote beside its checkpoint (<out>.run)")
        try:
            document = json.loads(meta.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{meta}: not valid JSON ({err})") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError(f"{meta}: not a training run (expected format {FORMAT!r})")
        if document.get("version") != VERSION:
            raise ValueError(f"{meta}: run version {document.get('version')!r} is not "
                             f"supported (expected {VERSION})")
        return cls(path, document)

    # -- states ---------------------------------------------------------------------------

    def save(self, state: TrainingState) -> Path:
        """Write ``state`` as ``step-NNNNNNN/`` (atomically), then drop older states
        beyond :data:`KEEP`."""
        final = self.path / f"step-{state.step:07d}"
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        weights, aliases = unique_tensors(state.weights)
        _save(partial / "weights.safetensors", weights, {"aliases": json.dumps(aliases)})
        _save(partial / "optimizer.safetensors", {
            f"{index}.{name}": value for index, entry in state.optimizer["state"].items()
            for name, value in entry.items()})
        rng = {f"torch.{r}": t for r, t in enumerate(state.torch_rng)}
        rng |= {f"cuda.{r}": t for r, t in enumerate(state.cuda_rng)}
        _save(partial / "rng.safetensors", rng)
        _save(partial / "scheme.safetensors", state.scheme_tensors)
        document = {
            "step": state.step,
            "scheduler": state.scheduler,
            "param_groups": state.optimizer["param_groups"],
            "scaler": state.scaler,
            "subnet_rng": state.subnet_rng,
            "scheme": state.scheme,
            "running_loss": None if math.isnan(state.running_loss) else state.running_loss,
            "wall_s": state.wall_s,
            "resumed_at": state.resumed_at,
            "sha256": {name: file_sha256(partial / f"{name}.safetensors") for name in _FILES},
        }
        (partial / "state.json").write_text(json.dumps(document, indent=2) + "\n",
                                            encoding="utf-8")
        if final.exists():  # a state that failed to load, replaced by a good one
            shutil.rmtree(final)
        partial.rename(final)
        for old in self._steps()[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("saved the training state of step %d in %s", state.step, final)
        return final

    def latest(self) -> TrainingState | None:
        """The newest state that reads back whole; ``None`` when the run saved none.

        Raises:
            ValueError: the run saved states and none of them reads back.
        """
        for partial in self.path.glob("step-*.partial"):
            logger.warning("skipping %s: a state whose writing was interrupted", partial.name)
        steps = self._steps()
        for folder in reversed(steps):
            try:
                return _load(folder)
            except (OSError, ValueError, KeyError, SafetensorError) as err:
                logger.warning("skipping %s: %s", folder.name, err)
        if steps:
            raise ValueError(f"no state in '{self.path}' reads back whole ({len(steps)} "
                             "corrupt); start the run over with --force")
        return None

    def _steps(self) -> list[Path]:
        return sorted(p for p in self.path.glob("step-*")
                      if p.is_dir() and p.name[5:].isdigit())


def _save(path: Path, tensors: Mapping[str, torch.Tensor],
          metadata: dict[str, str] | None = None) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path),
              metadata=metadata)


def _load(folder: Path) -> TrainingState:
    document = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    for name in _FILES:
        digest = file_sha256(folder / f"{name}.safetensors")
        if digest != document["sha256"][name]:
            raise ValueError(f"{name}.safetensors does not match its recorded sha256")
    weights, aliases = read_weights(folder / "weights.safetensors")
    weights |= {name: weights[target] for name, target in aliases.items()}
    optimizer_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(folder / "optimizer.safetensors")).items():
        index, name = key.split(".", 1)
        optimizer_state.setdefault(int(index), {})[name] = value
    rng = load_file(str(folder / "rng.safetensors"))
    ranks = sorted(int(k.split(".")[1]) for k in rng if k.startswith("torch."))
    return TrainingState(
        step=int(document["step"]),
        weights=weights,
        optimizer={"state": optimizer_state, "param_groups": document["param_groups"]},
        scheduler=document["scheduler"],
        subnet_rng=document["subnet_rng"],
        torch_rng=[rng[f"torch.{r}"] for r in ranks],
        cuda_rng=[rng[f"cuda.{r}"] for r in ranks if f"cuda.{r}" in rng],
        scaler=document["scaler"],
        scheme=document["scheme"],
        scheme_tensors=load_file(str(folder / "scheme.safetensors")),
        running_loss=math.nan if document["running_loss"] is None else document["running_loss"],
        wall_s=float(document["wall_s"]),
        resumed_at=list(document["resumed_at"]),
    )


def unique_tensors(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Drop tied duplicates (safetensors refuses shared storage): name -> the kept name."""
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, tuple[int, ...], tuple[int, ...], torch.dtype], str] = {}
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        kept[name] = tensor
    return kept, aliases


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors of a safetensors file and its tied aliases (name -> kept name)."""
    try:
        state = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        aliases = json.loads(metadata.get("aliases", "{}"))
    except (SafetensorError, OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a valid safetensors file ({err})") from None
    return state, aliases
