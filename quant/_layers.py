"""The quantized layer: integer weights, per-channel scales, calibrated 8-bit grids.

One module serves the search, export and loading: :func:`quantize_layers` swaps each
quantized ``nn.Linear``/``nn.Conv1d``/``nn.Conv2d`` of a dense subnet for a
:class:`QuantizedLayer` holding what ships (``weight_int8``; ``weight_int4`` packed
two per byte; other widths below 8 as a bitstream per row, ``weight_packed``;
``weight_fp16``; ``weight_scale`` per output channel, the bias, and the input and output
grids), whose forward pass computes in float what integer kernels compute. Its state
dict is the export's safetensors; its forward pass traces to the Q/DQ graph ONNX Runtime
fuses into integer kernels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.quant._modules import QUANTIZABLE
from nas.quant._quantizers import HALF_BITS, ActivationQuant, quantize_weight

STORED_BITS = (16, 8, 7, 6, 5, 4, 3, 2)
"""Widths an export stores at their own width: fp16, int8, int4 as nibbles (the layout
MatMulNBits and the Triton GEMM read), 2, 3, 5, 6 and 7 bits as a bitstream per row
(:func:`pack_bits`; simulated only: no runtime runs them)."""

MAX_INTEGER_BITS = 8
"""The widest integer weights; wider layers (fp16) hold floats and take no grids."""

Grids = Mapping[str, tuple[ActivationQuant, ActivationQuant]]
"""Module name -> (input grid, output grid)."""


class QuantizedLayer(nn.Module):
    """A linear or convolution layer with ``bits``-bit weights (and, with ``grids``,
    8-bit static input and output grids).

    ``weight`` is the dequantized float weight (functional code that reads a layer's
    weight keeps working, on the rounded values).
    """

    def __init__(self, layer: nn.Module, bits: int,
                 grids: tuple[ActivationQuant, ActivationQuant] | None = None) -> None:
        super().__init__()
        if not isinstance(layer, QUANTIZABLE):
            raise ValueError(f"only {', '.join(t.__name__ for t in QUANTIZABLE)} layers "
                             f"quantize, got {type(layer).__name__}")
        if not (2 <= bits <= 8 or bits == HALF_BITS):
            raise ValueError(f"a quantized layer has 2- to 8-bit or 16-bit (fp16) weights, "
                             f"got {bits}")
        self.bits = bits
        self.kind = type(layer).__name__
        self.shape = tuple(layer.weight.shape)
        self.conv = ({"stride": layer.stride, "padding": layer.padding,
                      "dilation": layer.dilation, "groups": layer.groups}
                     if self.kind != "Linear" else {})
        if bits == HALF_BITS:
            self.register_buffer("weight_fp16", layer.weight.detach().half().clone())
        else:
            q, scale = quantize_weight(layer.weight, bits)
            rows = q.reshape(q.shape[0], -1)
            if bits == 8:
                self.register_buffer("weight_int8", q)
            elif bits == 4:
                self.register_buffer("weight_int4", pack_nibbles(rows))
            else:
                self.register_buffer("weight_packed", pack_bits(rows, bits))
            self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().clone())
        self.static = grids is not None
        if grids is not None:
            for side, grid in zip(("input", "output"), grids, strict=True):
                self.register_buffer(f"{side}_scale", torch.tensor(grid.scale,
                                                                   dtype=torch.float32))
                self.register_buffer(f"{side}_zero_point",
                                     torch.tensor(grid.zero_point, dtype=torch.uint8))

    @property
    def integers(self) -> Tensor:
        """The integer weights, ``int8`` of the layer's weight shape (not for fp16)."""
        if self.bits == 8:
            return self.weight_int8
        k = math.prod(self.shape[1:])
        if self.bits == 4:
            values = unpack_nibbles(self.weight_int4, self.shape[0])[:, :k]
        else:
            values = unpack_bits(self.weight_packed, self.bits, k)
        return values.reshape(self.shape)

    @property
    def weight(self) -> Tensor:
        if self.bits == HALF_BITS:
            return self.weight_fp16.float()
        scale = self.weight_scale.reshape((-1,) + (1,) * (len(self.shape) - 1))
        return self.integers.float() * scale

    def grid(self, side: str) -> ActivationQuant:
        return ActivationQuant(float(getattr(self, f"{side}_scale")),
                               int(getattr(self, f"{side}_zero_point")))

    def forward(self, x: Tensor) -> Tensor:
        if self.static:
            x = _fake(x, self.input_scale, self.input_zero_point)
        if self.kind == "Linear" and self.bits == 4 and torch.onnx.is_in_onnx_export():
            from nas.quant._onnx import matmul_nbits

            y = matmul_nbits(x, self)
            y = y if self.bias is None else y + self.bias
        elif self.kind == "Linear":
            y = F.linear(x, self._grid_weight(), self.bias)
        else:
            conv = F.conv2d if self.kind == "Conv2d" else F.conv1d
            y = conv(x, self._grid_weight(), self.bias, **self.conv)
        if self.static:
            y = _fake(y, self.output_scale, self.output_zero_point)
        return y

    def _grid_weight(self) -> Tensor:
        """The dequantized weight through a per-channel fake quantization that changes no
        value (it is on its grid) but makes the ONNX exporter write the Q/DQ pair that
        :func:`nas.quant._onnx.fold_weight_quantizers` turns into an int8 initializer."""
        if self.bits != 8:
            return self.weight
        zero = torch.zeros(self.weight_scale.shape, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(self.weight, self.weight_scale, zero,
                                                      0, -128, 127)

    def extra_repr(self) -> str:
        return f"{self.kind}{list(self.shape)}, {self.bits}-bit, static={self.static}"


def _fake(x: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point.to(torch.int32), 0, 255)


def quantize_layers(model: nn.Module, bits: Mapping[str, int], grids: Grids | None) -> nn.Module:
    """Swap every layer named in ``bits`` for its :class:`QuantizedLayer` (in place; the
    layers with a grid in ``grids`` get static 8-bit activations). Returns ``model``."""
    modules = dict(model.named_modules())
    for name, width in bits.items():
        grid = grids.get(name) if grids is not None else None
        parent, _, attr = name.rpartition(".")
        setattr(modules[parent] if parent else model, attr,
                QuantizedLayer(modules[name], width, grid))
    return model


def pack_nibbles(q: Tensor) -> Tensor:
    """Rows of 4-bit integers (in ``[-8, 7]``) packed two per byte: even columns in the
    low nibble, odd ones in the high nibble, each offset by 8; an odd row length is
    padded with a zero."""
    if q.shape[1] % 2:
        q = F.pad(q, (0, 1))
    nibbles = (q.to(torch.int16) + 8).to(torch.uint8)
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)


def unpack_nibbles(packed: Tensor, rows: int) -> Tensor:
    """Inverse of :func:`pack_nibbles` (rows of ``2 * packed.shape[1]`` int8 values; the
    caller drops a padding column by reshaping)."""
    low = (packed & 0x0F).to(torch.int8) - 8
    high = (packed >> 4).to(torch.int8) - 8
    return torch.stack([low, high], dim=-1).reshape(rows, -1)


def pack_bits(q: Tensor, bits: int) -> Tensor:
    """Rows of ``bits``-bit integers (in ``[-2**(bits-1), 2**(bits-1) - 1]``) as one
    little-endian bitstream per row: value ``j`` of a row, offset by ``2**(bits-1)``,
    takes bits ``j * bits`` to ``(j + 1) * bits - 1``; a row is padded to whole bytes."""
    rows, k = q.shape
    offset = (q.to(torch.int16) + 2 ** (bits - 1)).to(torch.uint8)
    stream = ((offset.unsqueeze(-1) >> torch.arange(bits, dtype=torch.uint8)) & 1).reshape(
        rows, k * bits)
    stream = F.pad(stream, (0, -(k * bits) % 8)).reshape(rows, -1, 8).to(torch.int32)
    return (stream << torch.arange(8, dtype=torch.int32)).sum(-1).to(torch.uint8)


def unpack_bits(packed: Tensor, bits: int, k: int) -> Tensor:
    """Inverse of :func:`pack_bits`: ``int8`` rows of ``k`` values."""
    rows = packed.shape[0]
    stream = (packed.unsqueeze(-1) >> torch.arange(8, dtype=torch.uint8)) & 1
    planes = stream.reshape(rows, -1)[:, : k * bits].reshape(rows, k, bits).to(torch.int16)
    return ((planes << torch.arange(bits, dtype=torch.int16)).sum(-1)
            - 2 ** (bits - 1)).to(torch.int8)
