"""ONNX export and ONNX Runtime latency: the same model as a deployment runtime runs it.

``onnx`` and ``onnxruntime`` are the optional extra ``nas-platform[onnx]``; they are
imported on first use, so the rest of the package works without them.

What exports: a HAT dense subnet's teacher-forced forward pass (source and previous
tokens in, logits out), its encoder and one-step decoder graphs (greedy decoding
deployed: :mod:`nas.supernets.hat._deploy`) and any plain network (NAS-Bench-201's).
A graph ONNX rejects is a one-line error from :func:`export_onnx`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nas._extras import require
from nas.hardware._profile import Measurement, measure_latency
from nas.quant import QuantizedLayer
from nas.quant._onnx import NBITS_DOMAIN

OPSET = 17
"""ONNX opset of exported models (ONNX Runtime 1.14 and later run it)."""


def export_onnx(
    model: nn.Module,
    example_inputs: Sequence[torch.Tensor],
    path: str | Path,
    *,
    opset: int = OPSET,
    dynamic: bool = False,
    names: tuple[list[str], list[str]] | None = None,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> Path:
    """Export ``model`` (in eval mode) to an ONNX file and check the graph.

    Uses the TorchScript exporter (``dynamo=False``): the dynamo exporter needs
    ``onnxscript``, which is not a dependency. Inputs are named ``input0``, ``input1``,
    ... with fixed shapes, those of ``example_inputs``, unless ``names`` gives the input
    and output names and ``dynamic_axes`` the free dims of each.

    Raises:
        ValueError: the exported graph is not valid ONNX (e.g. an op on a type ONNX
            does not allow).
    """
    require("onnx", purpose="ONNX export")
    import onnx

    other = _unexportable(model)
    if other:
        raise ValueError(
            f"ONNX export holds 8-bit quantized layers (int8 QDQ) and 4-bit linear ones "
            f"(MatMulNBits); this subnet has {', '.join(other)} layers: export it as "
            f"safetensors"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = tuple(example_inputs)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # We chose the TorchScript exporter (see above): its deprecation is known.
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                model, inputs, str(path), dynamo=False, opset_version=opset,
                input_names=names[0] if names else [f"input{i}" for i in range(len(inputs))],
                output_names=names[1] if names else None,
                dynamic_axes=dynamic_axes or (_dynamic_axes(inputs) if dynamic else None),
                custom_opsets={NBITS_DOMAIN: 1} if 4 in _quantized_bits(model) else None,
            )
    finally:
        model.train(was_training)
    if _quantized_bits(model):
        store_integer_weights(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"{type(model).__name__} exports to an invalid ONNX graph: "
                         f"{first}") from None
    return path


def onnx_session(path: str | Path, *, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session of the model at ``path`` with ``threads`` intra-op
    threads and one inter-op thread (sequential execution): a pinned thread count, as
    for torch, makes figures comparable."""
    require("onnx", purpose="ONNX Runtime")
    import onnxruntime as ort

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feeds(session: Any, inputs: Sequence[torch.Tensor | np.ndarray]) -> dict[str, np.ndarray]:
    names = [i.name for i in session.get_inputs()]
    if len(inputs) != len(names):
        raise ValueError(f"the ONNX model takes {len(names)} input(s) ({', '.join(names)}), "
                         f"got {len(inputs)}")
    return {name: x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
            for name, x in zip(names, inputs)}


def run_onnx(session: Any, inputs: Sequence[torch.Tensor | np.ndarray]) -> list[np.ndarray]:
    """The outputs of one run of ``session`` on positional ``inputs``."""
    return session.run(None, _feeds(session, inputs))


class OnnxModule(nn.Module):
    """An ONNX file on ONNX Runtime, called like the torch model it was exported from
    (positional tensor inputs, tensor output), so a task can score the exported graph
    itself: ``task.evaluate(OnnxModule("model.onnx"))``. The graph must take the shapes
    it is given (quantized exports take any batch and sequence length)."""

    def __init__(self, path: str | Path, *, threads: int = 1) -> None:
        super().__init__()
        self.path = Path(path)
        self._session = onnx_session(self.path, threads=threads)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        outputs = run_onnx(self._session, [x.cpu() for x in inputs])
        return torch.from_numpy(outputs[0])


def measure_onnx(
    path: str | Path,
    inputs: Sequence[torch.Tensor | np.ndarray],
    *,
    threads: int = 1,
    warmup: int = 3,
    min_repeats: int = 10,
    max_repeats: int = 200,
    rel_ci: float = 0.02,
) -> Measurement:
    """Latency of one ONNX Runtime run of the model at ``path``, ms, with the stopping
    rule of :func:`~nas.hardware._profile.measure_latency`.

    The session and its input arrays are made once, outside the timed calls; the
    environment adds the runtime's version and provider.

    Raises:
        ValueError: the wrong number of inputs, or a budget out of range.
    """
    import onnxruntime as ort

    session = onnx_session(path, threads=threads)
    feeds = _feeds(session, inputs)
    measurement = measure_latency(
        lambda: session.run(None, feeds), threads=threads, warmup=warmup,
        min_repeats=min_repeats, max_repeats=max_repeats, rel_ci=rel_ci,
    )
    env = {**measurement.environment, "runtime": f"onnxruntime {ort.__version__}",
           "providers": ",".join(session.get_providers())}
    return dataclasses.replace(measurement, environment=env)


def _dynamic_axes(inputs: tuple[torch.Tensor, ...]) -> dict[str, dict[int, str]]:
    """Every dim of a token input (batch and length), the batch dim of a float one."""
    return {
        f"input{i}": ({d: f"input{i}_dim{d}" for d in range(x.dim())}
                      if not x.is_floating_point() else {0: "batch"})
        for i, x in enumerate(inputs)
    }


def _quantized_bits(model: nn.Module) -> list[int]:
    return [m.bits for m in model.modules() if isinstance(m, QuantizedLayer)]


def _unexportable(model: nn.Module) -> list[str]:
    """Quantized layers ONNX cannot hold, as ``4-bit Conv2d``: other widths than 8 and 4,
    and 4-bit layers that are not linear (MatMulNBits is a matrix product)."""
    return sorted({f"{m.bits}-bit {m.kind}" for m in model.modules()
                   if isinstance(m, QuantizedLayer)
                   and not (m.bits == 8 or (m.bits == 4 and m.kind == "Linear"))})


def store_integer_weights(path: Path) -> None:
    """Rewrite the exported graph with int8 weight initializers (see
    :func:`nas.quant._onnx.fold_weight_quantizers`)."""
    import onnx

    from nas.quant._onnx import fold_weight_quantizers

    graph = onnx.load(str(path))
    fold_weight_quantizers(graph)
    onnx.save(graph, str(path))
