"""Graph exports of a dense subnet (ONNX, TorchScript), each run back and checked.

A graph format is only worth shipping if it computes what the PyTorch model computes:
each file is written, loaded back in the runtime a user would deploy it with (ONNX
Runtime, ``torch.jit.load``) and compared with torch on the task's example inputs. The
inputs and torch's outputs are saved beside the files so a user can repeat the check
without our package.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

FILES = {"safetensors": "model.safetensors", "onnx": "model.onnx",
         "torchscript": "model.torchscript.pt"}
INPUTS = "example_inputs.npz"
OUTPUTS = "expected_outputs.npz"

TOLERANCE = 1e-4
"""Largest absolute difference allowed between a graph format's outputs and torch's."""

QUANTIZED_COSINE = 0.999
"""Smallest cosine similarity allowed between a quantized ONNX graph's outputs (on ONNX
Runtime's integer kernels) and the fake-quantized torch model's."""


def input_spec(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[dict[str, Any]]:
    """Names (graph input and forward argument), shapes and dtypes of the example inputs."""
    arguments = list(inspect.signature(model.forward).parameters)
    return [
        {"name": f"input{i}", "argument": arguments[i] if i < len(arguments) else None,
         "shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch.")}
        for i, x in enumerate(inputs)
    ]


def write_graphs(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], folder: Path, formats: list[str],
    *, quantized: bool = False,
) -> dict[str, dict[str, Any]]:
    """Write each graph format, run it back and compare with torch on ``inputs``.

    A quantized model's ONNX graph runs on ONNX Runtime's integer kernels, which may
    round a value to the neighbouring step of its 8-bit grid where torch's float
    arithmetic rounds the other way; its outputs are compared by cosine similarity
    (at least :data:`QUANTIZED_COSINE`) instead, and its graph takes any batch and
    sequence length (so the export can be scored on a whole validation split)."""
    with torch.no_grad():
        expected = _flatten(model(*inputs))
    np.savez(folder / INPUTS, **{f"input{i}": x.numpy() for i, x in enumerate(inputs)})
    np.savez(folder / OUTPUTS, **{f"output{i}": y for i, y in enumerate(expected)})
    writers: dict[str, Callable[[nn.Module, tuple[torch.Tensor, ...], Path],
                                list[np.ndarray]]] = {
        "onnx": _onnx, "torchscript": _torchscript,
    }
    results = {}
    for name in formats:
        writer = functools.partial(_onnx, dynamic=True) if quantized and name == "onnx" \
            else writers[name]
        actual = writer(model, inputs, folder / FILES[name])
        diff = _max_abs_diff(expected, actual, name)
        check: dict[str, Any] = {"max_abs_diff": diff, "tolerance": TOLERANCE}
        if quantized and name == "onnx":
            cosine = _cosine(expected, actual)
            if cosine < QUANTIZED_COSINE:
                raise ValueError(f"the quantized onnx export's outputs have cosine {cosine:.6f} "
                                 f"to torch's (less than {QUANTIZED_COSINE}); nothing was "
                                 f"written")
            check = {"max_abs_diff": diff, "cosine": cosine, "min_cosine": QUANTIZED_COSINE}
        elif diff > TOLERANCE:
            raise ValueError(f"the {name} export differs from torch by {diff:.2e} "
                             f"(more than {TOLERANCE:g}); nothing was written")
        results[name] = {"file": FILES[name], "checked_with": _runtime(name), **check}
    return results


def _onnx(model: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, *,
          dynamic: bool = False) -> list[np.ndarray]:
    """Export to ONNX and run the file in ONNX Runtime."""
    from nas.hardware._onnx import export_onnx, onnx_session, run_onnx

    export_onnx(model, inputs, path, dynamic=dynamic)
    return list(run_onnx(onnx_session(path), inputs))


def _torchscript(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path
) -> list[np.ndarray]:
    """Trace to TorchScript, save, load the file back and run it.

    TorchScript is deprecated in favour of ``torch.export``, but it is what the issue
    asks for and what ``torch.jit.load`` runs without our package: the warning is known.
    """
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        traced = torch.jit.trace(model, inputs, strict=False)
        traced.save(str(path))
        loaded = torch.jit.load(str(path)).eval()
        return _flatten(loaded(*inputs))


def _flatten(outputs: Any) -> list[np.ndarray]:
    """A model's output (a tensor or a nested tuple/list of them) as a list of arrays."""
    if isinstance(outputs, torch.Tensor):
        return [outputs.detach().cpu().numpy()]
    return [array for item in outputs for array in _flatten(item)]


def _cosine(expected: list[np.ndarray], actual: list[np.ndarray]) -> float:
    e = np.concatenate([x.astype(np.float64).ravel() for x in expected])
    a = np.concatenate([x.astype(np.float64).ravel() for x in actual])
    norms = np.linalg.norm(e) * np.linalg.norm(a)
    return float(e @ a / norms) if norms else float(np.array_equal(e, a))


def _max_abs_diff(expected: list[np.ndarray], actual: list[np.ndarray], name: str) -> float:
    if len(expected) != len(actual) or any(
        e.shape != a.shape for e, a in zip(expected, actual, strict=False)
    ):
        raise ValueError(f"the {name} export returns outputs shaped "
                         f"{[a.shape for a in actual]}, torch {[e.shape for e in expected]}")
    return max((float(np.max(np.abs(e.astype(np.float64) - a))) if e.size else 0.0
                for e, a in zip(expected, actual, strict=True)), default=0.0)


def _runtime(name: str) -> str:
    if name == "onnx":
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"
    return f"torch.jit.load (torch {torch.__version__})"
