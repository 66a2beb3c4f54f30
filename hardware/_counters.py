"""MAC and parameter counts of a dense model, by tracing it with fvcore."""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

_NOT_MACS = (
    "aten::batch_norm", "aten::group_norm", "aten::layer_norm", "aten::instance_norm",
    "aten::upsample_nearest2d", "aten::upsample_bilinear2d", "aten::adaptive_avg_pool2d",
    "aten::grid_sampler",
)
"""fvcore's default handles that count element-wise work (5 "flops" per element of a
layer norm, ...), not multiply-accumulates; switched off so the total is MACs only."""


def _no_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """A handle counting 0 (fvcore lets a handle, not ``None``, override a default)."""
    return 0


def _sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """``scaled_dot_product_attention``: query-key scores plus the weighted sum of
    values, ``B*h*T*S*(d_k + d_v)`` MACs (the whole score matrix, causal or not, as the
    reference kernel computes it). fvcore has no handle for it."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])  # (..., T, d), (..., S, d), (..., S, dv)
    batch = 1
    for size in q[:-2]:
        batch *= size
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def count_macs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Multiply-accumulates of one ``model(*inputs)`` forward pass.

    fvcore counts one fused multiply-add as one "flop" for linear layers and matrix
    products, so its total is a MAC count once its element-wise handles (norms,
    pooling) are switched off; attention computed by
    ``F.scaled_dot_product_attention`` is counted by a handle added here. Other ops
    without a counter (softmax, embeddings, element-wise ops) count 0; they are logged
    at debug level rather than warned about, because they are expected and cheap.

    Args:
        model: a dense model (e.g. from ``supernet.extract``), run in eval mode.
        inputs: its positional inputs, e.g. ``task.example_inputs()``.
    """
    with warnings.catch_warnings():  # fvcore scripts helpers at import; torch warns
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*",
                                category=DeprecationWarning)
        from fvcore.nn import FlopCountAnalysis  # heavy import, only needed here

    was_training = model.training
    model.eval()
    try:
        analysis = (
            FlopCountAnalysis(model, inputs)
            .set_op_handle(**{op: _no_macs for op in _NOT_MACS})
            .set_op_handle("aten::scaled_dot_product_attention", _sdpa_macs)
            .unsupported_ops_warnings(False)
            .uncalled_modules_warnings(False)
            .tracer_warnings("none")
        )
        with torch.no_grad():
            total = int(analysis.total())
        unsupported = analysis.unsupported_ops()
    finally:
        model.train(was_training)
    if unsupported:
        logger.debug("ops without a MAC counter (counted as 0): %s", dict(unsupported))
    return total


def count_params(model: nn.Module) -> int:
    """Parameters of ``model``; a tensor shared by several modules (tied embeddings)
    counts once, as ``parameters()`` yields it once. A quantized layer's weights and bias
    (integer and float buffers) count as the parameters they are."""
    from nas.quant import QuantizedLayer

    quantized = sum(math.prod(m.shape) + (m.bias.numel() if m.bias is not None else 0)
                    for m in model.modules() if isinstance(m, QuantizedLayer))
    return sum(p.numel() for p in model.parameters()) + quantized
