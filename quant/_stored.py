"""A quantized subnet in an export: which layers ``config.json`` says are quantized, and
rebuilding them around the family's dense model before the weights are loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from nas.quant._layers import QuantizedLayer
from nas.quant._modules import QUANTIZABLE
from nas.quant._quantizers import HALF_BITS, ActivationQuant

SCHEME = ("weights per output channel symmetric (or fp16); activations per tensor asymmetric "
          "8-bit static, or not quantized (weight-only layers)")
_PLACEHOLDER = (ActivationQuant(1.0, 0), ActivationQuant(1.0, 0))
"""Grids of a layer being rebuilt: the weights file then gives the real ones."""


def quantization_document(model: nn.Module) -> dict[str, Any] | None:
    """``config.json``'s ``quantization`` entry for a model with quantized layers (None
    for a float model): the scheme and, per layer, its width and whether its
    activations are quantized."""
    layers = {name: {"bits": m.bits, "static": m.static}
              for name, m in model.named_modules() if isinstance(m, QuantizedLayer)}
    return {"scheme": SCHEME, "layers": layers} if layers else None


def read_quantization(document: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    """The validated ``layers`` of an export's ``quantization`` entry ({} for a float
    export). The entry is untrusted input: every field is type-checked."""
    entry = document.get("quantization")
    if entry is None:
        return {}
    layers = entry.get("layers") if isinstance(entry, dict) else None
    if not isinstance(layers, dict):
        raise ValueError(f"{path}: quantization must be an object with a \"layers\" object")
    for name, layer in layers.items():
        bits = layer.get("bits") if isinstance(layer, dict) else None
        static = layer.get("static") if isinstance(layer, dict) else None
        if (isinstance(bits, bool) or not isinstance(bits, int)
                or not (2 <= bits <= 8 or bits == HALF_BITS) or not isinstance(static, bool)):
            raise ValueError(f"{path}: quantized layer {name!r} must be "
                             f"{{\"bits\": 2 to 8 or 16, \"static\": true or false}}, "
                             f"got {layer!r}")
    return layers


def with_quantized_layers(model: nn.Module, layers: dict[str, dict[str, Any]],
                          path: Path) -> nn.Module:
    """``model`` with each layer named in ``layers`` swapped for an empty
    :class:`QuantizedLayer` of its width, ready to load the export's weights."""
    modules = dict(model.named_modules())
    for name, layer in layers.items():
        module = modules.get(name)
        if not isinstance(module, QUANTIZABLE):
            raise ValueError(f"{path}: quantized layer {name!r} is not a linear or "
                             f"convolution layer of this subnet")
        parent, _, attr = name.rpartition(".")
        setattr(modules[parent] if parent else model, attr,
                QuantizedLayer(module, layer["bits"], _PLACEHOLDER if layer["static"] else None))
    return model
