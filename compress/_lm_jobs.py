"""What the byte-LM compression jobs (``nas compress merge-experts`` and ``shed``) share.

- **Sources** (:func:`load_lm`): a zoo name (``moe-pydoc``, ``mamba-pydoc``, loaded by
  ``nas.supernets.training._models.load_zoo_model``) or a folder that
  ``save_subnet`` / ``nas export`` / an earlier compression wrote, checked to be the
  family the command compresses.
- **Data** (task ``pydoc-lm``, bytes): calibration and recovery windows are random
  windows of the train split (seeded); the held-out loss is the task's cross-entropy in
  nats per byte on the first :data:`EVAL_WINDOWS` consecutive windows of its validation
  split, the same windows before and after.
- **Time** (:func:`forward_ms`): one forward pass at batch 1 and :func:`window_length`
  bytes, one thread, thread CPU time, the median of repeats until its 95% interval is
  within 3% (``hardware``'s protocol, :data:`~nas.hardware._local_model.SETTINGS`).
- **Export** (:func:`export_lm`): ``save_subnet`` (so ``nas.load_subnet`` rebuilds the
  model) and, where the graph allows, ``model.onnx``, written only after ONNX Runtime
  reproduced torch's logits on held-out windows; otherwise the summary says why not.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from nas._extras import installed
from nas._files import atomic_write, check_output
from nas.supernets._export import load_subnet, read_subnet_config, save_subnet
from nas.supernets.tasks._lm import LM_TASK_NAME, VOCAB_SIZE, PydocLMTask

__all__ = ["EVAL_WINDOWS", "LENGTH", "ONNX_FILE", "ZOO_MODELS", "count_params",
           "check_option", "export_lm", "forward_ms", "heldout_loss", "load_lm",
           "train_windows", "window_length"]

TASK = LM_TASK_NAME
ZOO_MODELS = ("moe-pydoc", "mamba-pydoc")
"""The zoo's byte LMs these commands were written for (for messages)."""
LENGTH = 64
"""Bytes per window: calibration, held-out loss, timing and the ONNX graph's input
(less for a model whose positions cover less)."""
EVAL_WINDOWS = 64
"""Held-out windows the loss is taken on (4,096 bytes at 64 bytes a window)."""
ONNX_FILE = "model.onnx"
ONNX_TOLERANCE = 1e-4
"""Largest absolute difference allowed between ONNX Runtime's logits and torch's."""
ONNX_CHECK_WINDOWS = 4
"""Held-out windows (besides the traced one) the ONNX graph is checked on."""


# -- sources -----------------------------------------------------------------------------


def load_lm(source: str, *, expected: type[nn.Module], family: str, command: str
            ) -> tuple[nn.Module, dict[str, Any]]:
    """The model ``source`` names and where it came from (for the summary).

    Args:
        source: a zoo name or an export folder.
        expected: the class the command compresses.
        family: its export family (for messages).
        command: the command's name (for messages).

    Raises:
        FileNotFoundError: ``source`` is neither a folder nor a zoo model.
        ValueError: the model is not ``expected`` or not a byte LM, or the folder is not a
            valid export.
    """
    folder = Path(source)
    if folder.is_dir():
        metadata = read_subnet_config(folder).get("metadata", {})
        model = load_subnet(folder)
        origin: dict[str, Any] = {"kind": "export", "path": str(folder)}
        if isinstance(metadata, dict) and metadata.get("task"):
            origin["task"] = metadata["task"]
    elif folder.exists():
        raise ValueError(f"--model {source!r} is a file; give a zoo name "
                         f"({', '.join(ZOO_MODELS)}) or a folder written by nas export or "
                         f"nas compress")
    else:
        model = _zoo_model(source)
        origin = {"kind": "zoo", "name": source}
    if not isinstance(model, expected):
        raise ValueError(f"nas compress {command} compresses a {expected.__name__} (family "
                         f"{family}); --model {source!r} is a {type(model).__name__}")
    vocab = model.subnet_config().get("vocab_size")
    if vocab != VOCAB_SIZE:
        raise ValueError(f"--model {source!r} has a vocabulary of {vocab}; these commands "
                         f"compress byte LMs ({VOCAB_SIZE} tokens, task {TASK})")
    return model.eval(), origin


def _zoo_model(name: str) -> nn.Module:
    """The zoo's model ``name``; the error lists the zoo's byte LMs."""
    from nas.supernets.training._models import MODEL_RECIPES, load_zoo_model

    if name not in MODEL_RECIPES:
        raise FileNotFoundError(
            f"--model {name!r} is neither a folder nor a zoo model; give one of "
            f"{', '.join(sorted(MODEL_RECIPES))} or a folder written by nas export or nas "
            f"compress")
    return load_zoo_model(name)


def check_option(name: str, value: object, *, zero: bool = False) -> None:
    """Refuse an option that is not a positive integer (non-negative with ``zero``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1):
        raise ValueError(f"{name} must be a {'non-negative' if zero else 'positive'} "
                         f"integer, got {value!r}")


# -- data and figures --------------------------------------------------------------------


def window_length(model: nn.Module) -> int:
    """:data:`LENGTH`, or the model's ``context`` if shorter (learned positions)."""
    return min(LENGTH, int(getattr(model, "context", LENGTH)))


def train_windows(count: int, length: int, *, seed: int) -> Tensor:
    """``count`` random windows ``(count, length + 1)`` of the train split's bytes
    (seeded), each one ``length`` inputs and its next byte."""
    inputs, targets = PydocLMTask(context=length).train_batches(
        batch_size=count, generator=torch.Generator().manual_seed(seed))()
    return torch.cat([inputs, targets[:, -1:]], dim=1)  # (count, length + 1)


def heldout_loss(model: nn.Module, length: int, *, windows: int = EVAL_WINDOWS
                 ) -> dict[str, float]:
    """``loss`` (nats per byte) and ``accuracy`` (next byte) on the first ``windows``
    validation windows of ``length`` bytes."""
    scores = PydocLMTask(context=length).evaluate(model, split="validation", limit=windows)
    return {"loss": scores["loss"], "accuracy": scores["accuracy"]}


def heldout_inputs(length: int, count: int) -> Tensor:
    """The first ``count`` validation windows ``(count, length)`` (inputs only)."""
    return PydocLMTask(context=length).windows("validation", limit=count)[0]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_ms(model: nn.Module, length: int) -> float:
    """One forward pass of the first validation window (batch 1, ``length`` bytes) on
    this CPU, ms: one thread, thread CPU time, the median of repeats."""
    from nas.hardware._local_model import SETTINGS
    from nas.hardware._profile import measure_latency

    tokens = heldout_inputs(length, 1)  # (1, length)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            measurement = measure_latency(
                lambda: model(tokens), threads=SETTINGS.threads, warmup=SETTINGS.warmup,
                min_repeats=SETTINGS.min_repeats, max_repeats=SETTINGS.max_repeats,
                rel_ci=SETTINGS.rel_ci, clock=time.thread_time)
    finally:
        model.train(was_training)
    return measurement.median_ms


# -- export ------------------------------------------------------------------------------


class _RMSNorm(nn.Module):
    """``nn.RMSNorm`` written out (``x * rsqrt(mean(x^2) + eps) * weight``): torch's
    TorchScript ONNX exporter has no ``aten::rms_norm`` (ONNX has RMSNormalization only
    from opset 23, which that exporter does not write)."""

    def __init__(self, norm: nn.RMSNorm) -> None:
        super().__init__()
        self.weight = norm.weight
        self.eps = norm.eps
        self.dims = tuple(range(-len(norm.normalized_shape), 0))

    def forward(self, x: Tensor) -> Tensor:
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        out = x * torch.rsqrt(x.pow(2).mean(self.dims, keepdim=True) + eps)
        return out if self.weight is None else out * self.weight


class _GraphView(nn.Module):
    """A copy of an LM for ONNX: ``forward(tokens)`` takes one positional tensor (the
    exporter passes every default of the signature, keyword-only ones included, as
    positional arguments) and its RMSNorms are written out (:class:`_RMSNorm`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).eval()
        for module in list(self.model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.RMSNorm):
                    setattr(module, name, _RMSNorm(child))

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model(tokens)  # (B, T, V)


TraceCheck = Callable[[nn.Module, Tensor], str | None]
"""``(model, example input) -> None`` if a graph traced on that input holds for every
input of its shape, else the reason it would not."""


def _onnx_graph(model: nn.Module, length: int, folder: Path,
                trace_check: TraceCheck | None) -> tuple[dict[str, Any] | str, Path | None]:
    """Export ``model`` to ``folder/model.onnx`` and check it in ONNX Runtime on held-out
    windows: ``(record, path)``, or ``("not exported: why", None)``."""
    if not installed("onnx"):
        return ("not exported: the onnx extra is not installed (pip install "
                "'nas-platform[onnx]')"), None
    from nas.hardware._onnx import export_onnx, onnx_session, run_onnx

    windows = heldout_inputs(length, ONNX_CHECK_WINDOWS + 1)  # (k, length)
    example = windows[:1]  # (1, length)
    if trace_check is not None:
        reason = trace_check(model, example)
        if reason is not None:
            return f"not exported: {reason}", None
    path = folder / ONNX_FILE
    view = _GraphView(model)
    try:
        with warnings.catch_warnings():
            # index_add's warning about repeated indices: the MoE layer's come from
            # nonzero (unique); the comparison with torch below would catch any other.
            warnings.filterwarnings("ignore", message=".*duplicated values in 'index'")
            export_onnx(view, (example,), path)
        session = onnx_session(path)
        with torch.inference_mode():
            diff = max(float(np.max(np.abs(run_onnx(session, [w[None]])[0]
                                           - view(w[None]).numpy())))
                       for w in windows)
    # Any failure of the exporter or the runtime means no graph; its first line says why.
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        return f"not exported: {type(err).__name__}: {first}", None
    if not diff <= ONNX_TOLERANCE:
        return (f"not exported: ONNX Runtime's logits differ from torch's by {diff:.2e} "
                f"(more than {ONNX_TOLERANCE:g})"), None
    import onnxruntime

    return {"file": ONNX_FILE, "input": {"name": "input0", "shape": [1, length],
                                         "dtype": "int64"},
            "output": f"logits (1, {length}, {VOCAB_SIZE})",
            "checked_with": f"onnxruntime {onnxruntime.__version__}",
            "checked_windows": len(windows), "max_abs_diff": diff,
            "tolerance": ONNX_TOLERANCE}, path


def export_lm(
    model: nn.Module,
    out: Path,
    *,
    family: str,
    summary: dict[str, Any],
    length: int,
    overwrite: bool,
    trace_check: TraceCheck | None = None,
) -> dict[str, Any]:
    """Write ``model`` to ``out`` (``save_subnet`` with ``summary`` as its metadata) and
    its ONNX graph where it exports and checks; ``summary["onnx"]`` records which.

    A run with ``overwrite`` that writes no graph removes a ``model.onnx`` left in
    ``out`` by an earlier export, so the folder never pairs weights with a stale graph.
    """
    with tempfile.TemporaryDirectory(prefix="nas-onnx-") as scratch:
        record, graph = _onnx_graph(model, length, Path(scratch), trace_check)
        summary["onnx"] = record
        check_output(out, kind="dir", force=overwrite)  # files may have appeared meanwhile
        save_subnet(model.eval(), out, family=family, metadata=summary, overwrite=overwrite)
        if graph is not None:
            atomic_write(out / ONNX_FILE, lambda temp: shutil.copyfile(graph, temp))
        else:
            (out / ONNX_FILE).unlink(missing_ok=True)
    return summary
