"""FlexiBERT's operations: the tensor kernels and the dense operation modules.

The kernels are plain functions of tensors and weights, so the supernet (which passes
slices of its largest weights) and the dense subnet (which owns exactly-sized weights)
run the same arithmetic and agree to float rounding. Everything is matmuls and
elementwise ops (the DFT and DCT as matrix products, the dynamic convolution's unfold
as shifted slices), so dense models trace and export to ONNX.

Operations (Tuli et al. 2022, Sec. 3.1; heads split the hidden size for every type):

- self-attention, scores ``q k^T / sqrt(d)`` (``sdp``) or ``q W k^T / sqrt(d)`` with a
  learned ``d x d`` matrix per layer (``wma``; initialised to the identity, so it starts
  as ``sdp``);
- linear transform: per head, the real part of the 2-D DFT over (sequence, head dim), as
  FNet, or the orthonormal 2-D DCT-II; parameter-free;
- dynamic separable convolution (ConvBERT, Jiang et al. 2020): a depthwise-separable
  convolution of the input gates the query; a linear map of the gated query generates a
  softmax-normalised kernel per position and head, which convolves a linear map of the
  input (the value) over the sequence.

Each operation is followed by its own output projection ``(h, h)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DynamicConv",
    "LinearTransform",
    "SelfAttention",
    "attention",
    "dynamic_conv",
    "linear_transform",
    "make_op",
    "op_kind",
]

def op_kind(op: str) -> tuple[str, str]:
    """``"dsc-9" -> ("dsc", "9")``.

    Raises:
        ValueError: an unknown operation.
    """
    kind, _, param = op.partition("-")
    valid = {"sa": ("sdp", "wma"), "lt": ("dft", "dct"), "dsc": ("5", "9")}
    if param not in valid.get(kind, ()):
        raise ValueError(
            "op must be one of ['sa-sdp', 'sa-wma', 'lt-dft', 'lt-dct', 'dsc-5', 'dsc-9'], "
            f"got {op!r}"
        )
    return kind, param


def _split(x: Tensor, heads: int) -> Tensor:  # (B, T, h) -> (B, n, T, d)
    b, t, h = x.shape
    return x.view(b, t, heads, h // heads).transpose(1, 2)


def attention(
    x: Tensor,
    bias: Tensor,
    q: tuple[Tensor, Tensor],
    k: tuple[Tensor, Tensor],
    v: tuple[Tensor, Tensor],
    heads: int,
    wma: Tensor | None = None,
) -> Tensor:
    """Multi-head self-attention; ``wma`` (d, d) turns on weighted multiplicative scores.

    ``x (B, T, h)``, ``bias (B, 1, 1, T)`` (0 or a large negative value for padding);
    ``q``/``k``/``v`` are (weight (h, h), bias (h,)). Returns the merged heads ``(B, T, h)``.
    """
    b, t, h = x.shape
    qh, kh, vh = (_split(F.linear(x, w, bb), heads) for w, bb in (q, k, v))  # (B, n, T, d)
    if wma is not None:
        qh = qh @ wma
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(h // heads) + bias  # (B, n, T, T)
    return (scores.softmax(-1) @ vh).transpose(1, 2).reshape(b, t, h)


def _dft_matrices(n: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """cos and sin of the n-point DFT's angles (both symmetric)."""
    idx = torch.arange(n, device=like.device)
    angle = (2 * math.pi / n) * torch.remainder(idx[:, None] * idx[None, :], n).to(like.dtype)
    return torch.cos(angle), torch.sin(angle)


def _dct_matrix(n: int, like: Tensor) -> Tensor:
    """The orthonormal DCT-II matrix ``(n, n)``: ``y = M @ x``."""
    idx = torch.arange(n, device=like.device).to(like.dtype)
    matrix = torch.cos(math.pi * (2 * idx[None, :] + 1) * idx[:, None] / (2 * n))
    scale = torch.full((n, 1), math.sqrt(2.0 / n), dtype=like.dtype, device=like.device)
    scale[0, 0] = math.sqrt(1.0 / n)
    return matrix * scale


def linear_transform(x: Tensor, keep: Tensor, heads: int, kind: str) -> Tensor:
    """Per head, the 2-D transform over (sequence, head dim) of the zero-padded input.

    ``kind`` is ``"dft"`` (real part of the DFT, FNet) or ``"dct"`` (orthonormal DCT-II).
    ``x (B, T, h)``, ``keep (B, T, 1)`` 1 for real tokens. Returns ``(B, T, h)``.
    """
    b, t, h = x.shape
    xh = (x * keep).view(b, t, heads, h // heads)  # (B, T, n, d)
    if kind == "dft":
        cos_t, sin_t = _dft_matrices(t, x)
        cos_d, sin_d = _dft_matrices(h // heads, x)
        out = torch.einsum("st,btnd,ed->bsne", cos_t, xh, cos_d) - torch.einsum(
            "st,btnd,ed->bsne", sin_t, xh, sin_d
        )
    elif kind == "dct":
        out = torch.einsum("st,btnd,ed->bsne", _dct_matrix(t, x), xh, _dct_matrix(h // heads, x))
    else:
        raise ValueError(f"kind must be 'dft' or 'dct', got {kind!r}")
    return out.reshape(b, t, h)


def dynamic_conv(
    x: Tensor,
    keep: Tensor,
    *,
    query: tuple[Tensor, Tensor],
    depthwise: Tensor,
    pointwise: tuple[Tensor, Tensor],
    value: tuple[Tensor, Tensor],
    generator: tuple[Tensor, Tensor],
    heads: int,
) -> Tensor:
    """ConvBERT's span-based dynamic convolution; padding positions are zeroed first, so
    they add nothing to a real token's span.

    ``x (B, T, h)``, ``keep (B, T, 1)``; ``depthwise (h, 1, k)``; ``pointwise``,
    ``query``, ``value`` (weight (h, h), bias (h,)); ``generator`` (weight (n*k, h),
    bias (n*k,)). Returns ``(B, T, h)``.
    """
    b, t, h = x.shape
    kernel = depthwise.shape[-1]
    pad = (kernel - 1) // 2
    x = x * keep
    span = F.conv1d(x.transpose(1, 2), depthwise, padding=pad, groups=h).transpose(1, 2)
    gated = F.linear(span, *pointwise) * F.linear(x, *query)  # (B, T, h)
    weights = F.linear(gated, *generator).view(b, t, heads, 1, kernel).softmax(-1)
    values = F.pad(F.linear(x, *value) * keep, (0, 0, pad, pad))  # (B, T + 2p, h)
    taps = torch.stack([values[:, j : j + t] for j in range(kernel)], dim=-1)  # (B, T, h, k)
    taps = taps.view(b, t, heads, h // heads, kernel)
    return (taps * weights).sum(-1).reshape(b, t, h)


class SelfAttention(nn.Module):
    """Dense self-attention (``sdp`` or ``wma`` scores) with its output projection."""

    def __init__(self, hidden: int, heads: int, *, wma: bool) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.wma = nn.Parameter(torch.eye(hidden // heads)) if wma else None
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor, bias: Tensor, keep: Tensor) -> Tensor:
        mixed = attention(
            x, bias, (self.query.weight, self.query.bias), (self.key.weight, self.key.bias),
            (self.value.weight, self.value.bias), self.heads, self.wma,
        )
        return self.out(mixed)


class LinearTransform(nn.Module):
    """Dense DFT/DCT token mixing with its output projection."""

    def __init__(self, hidden: int, heads: int, *, kind: str) -> None:
        super().__init__()
        self.heads = heads
        self.kind = kind
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor, bias: Tensor, keep: Tensor) -> Tensor:
        return self.out(linear_transform(x, keep, self.heads, self.kind))


class DynamicConv(nn.Module):
    """Dense dynamic separable convolution with its output projection."""

    def __init__(self, hidden: int, heads: int, *, kernel: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.depthwise = nn.Parameter(torch.empty(hidden, 1, kernel))
        self.pointwise = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.generator = nn.Linear(hidden, heads * kernel)
        self.out = nn.Linear(hidden, hidden)
        nn.init.normal_(self.depthwise, std=0.02)

    def forward(self, x: Tensor, bias: Tensor, keep: Tensor) -> Tensor:
        mixed = dynamic_conv(
            x, keep,
            query=(self.query.weight, self.query.bias),
            depthwise=self.depthwise,
            pointwise=(self.pointwise.weight, self.pointwise.bias),
            value=(self.value.weight, self.value.bias),
            generator=(self.generator.weight, self.generator.bias),
            heads=self.heads,
        )
        return self.out(mixed)


def make_op(op: str, hidden: int, heads: int) -> nn.Module:
    """The dense module of operation ``op`` (e.g. ``"dsc-9"``) at these sizes."""
    kind, param = op_kind(op)
    if kind == "sa":
        return SelfAttention(hidden, heads, wma=param == "wma")
    if kind == "lt":
        return LinearTransform(hidden, heads, kind=param)
    return DynamicConv(hidden, heads, kernel=int(param))
