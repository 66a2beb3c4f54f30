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
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from nas.supernets.hat import DecodingGraphs

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


DECODING_FILES = {"onnx": ("encoder.onnx", "decoder_step.onnx"),
                  "torchscript": ("encoder.torchscript.pt", "decoder_step.torchscript.pt")}
"""Format -> the encoder and decoder-step graph files of a seq2seq subnet."""

VOCAB = "vocab.json"


def decoding_graphs_of(model: nn.Module) -> DecodingGraphs | None:
    """The encoder and decoder-step graphs greedy decoding deploys ``model`` as (a
    :class:`~nas.supernets.hat.DecodingGraphs`), or None for a model that is not a
    seq2seq subnet with them (only HAT's are)."""
    from nas.supernets.hat import HATSubnet, decoding_graphs

    return decoding_graphs(model) if isinstance(model, HATSubnet) else None


def write_decoding_graphs(
    graphs: DecodingGraphs, src: torch.Tensor, reference: torch.Tensor, vocab: dict[str, Any],
    folder: Path, formats: list[str],
) -> dict[str, Any]:
    """Write the encoder and decoder-step graphs of ``graphs`` in each format, load them back,
    and check them: one step's outputs within :data:`TOLERANCE` of torch's, and greedy
    decoding of ``src`` (B, S) over them (the card's loop) equal, token for token, to
    ``reference``, the model's own ``greedy_decode``.

    Returns:
        config.json's ``decoding`` section: files per format, names, the cache's per-layer
        (heads, head width), the checks.

    Raises:
        ValueError: a graph whose step differs from torch or whose tokens differ.
    """
    from nas.studies import _decoding_loop as loop

    spec: dict[str, Any] = {
        "vocab": VOCAB, "max_positions": graphs.max_positions,
        "cache": [list(dims) for dims in graphs.cache],
        "encoder_inputs": ["src_tokens"], "encoder_outputs": graphs.encoder_outputs,
        "step_inputs": graphs.step_inputs, "step_outputs": graphs.step_outputs,
        "files": {}, "checks": {},
    }
    (folder / VOCAB).write_text(json.dumps(vocab, indent=2) + "\n")
    step_inputs = _step_example(graphs, src)
    with torch.no_grad():
        expected = _flatten(graphs.step(*step_inputs))
    writers = {"onnx": (_onnx_pair, loop.onnx_runner),
               "torchscript": (_torchscript_pair, loop.torchscript_runner)}
    for name in formats:
        write, runner = writers[name]
        encoder_file, step_file = DECODING_FILES[name]
        write(graphs, src, step_inputs, folder / encoder_file, folder / step_file)
        with warnings.catch_warnings():  # torch.jit.load's deprecation: known, see above
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
            encoder, step = runner(folder / encoder_file), runner(folder / step_file)
        diff = _max_abs_diff(expected, step(*(x.numpy() for x in step_inputs)), name)
        if diff > TOLERANCE:
            raise ValueError(f"the {name} decoder step differs from torch by {diff:.2e} "
                             f"(more than {TOLERANCE:g}); nothing was written")
        tokens = loop.greedy_decode(encoder, step, src.numpy(), spec, vocab)
        if not np.array_equal(tokens, reference.numpy()):
            raise ValueError(f"greedy decoding over the {name} graphs gives other tokens "
                             "than the model's greedy_decode; nothing was written")
        spec["files"][name] = {"encoder": encoder_file, "step": step_file}
        spec["checks"][name] = {"checked_with": _runtime(name), "step_max_abs_diff": diff,
                                "tolerance": TOLERANCE, "greedy_rows": int(src.shape[0]),
                                "greedy_tokens_equal": True}
    return spec


def _step_example(graphs: DecodingGraphs, src: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Step inputs to trace with: ``src``'s memory and a cache of length 2 (not 0 or 1,
    so that no cache length is specialised into the graph)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        memory = graphs.encoder(src)
    past = [torch.randn(src.shape[0], heads, 2, size, generator=generator)
            for heads, size in graphs.cache for _ in range(2)]
    token = torch.full((src.shape[0], 1), 1, dtype=torch.long)  # bos
    return (token, *memory, *past)


def _onnx_pair(graphs: DecodingGraphs, src: torch.Tensor,
               step_inputs: tuple[torch.Tensor, ...],
               encoder_path: Path, step_path: Path) -> None:
    from nas.hardware._onnx import export_onnx

    axes = graphs.dynamic_axes()
    for module, example, path, names in (
        (graphs.encoder, (src,), encoder_path, (["src_tokens"], graphs.encoder_outputs)),
        (graphs.step, step_inputs, step_path, (graphs.step_inputs, graphs.step_outputs)),
    ):
        export_onnx(module, example, path, names=names,
                    dynamic_axes={n: axes[n] for n in (*names[0], *names[1])})


def _torchscript_pair(graphs: DecodingGraphs, src: torch.Tensor,
                      step_inputs: tuple[torch.Tensor, ...], encoder_path: Path,
                      step_path: Path) -> None:
    """Trace both graphs (no trace check: the caller runs the saved files back)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        for module, example, path in ((graphs.encoder, (src,), encoder_path),
                                      (graphs.step, step_inputs, step_path)):
            torch.jit.trace(module, example, strict=False, check_trace=False).save(str(path))
