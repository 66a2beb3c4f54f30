"""Weight-only quantized GEMMs for decode shapes, as Triton kernels that dequantize in-kernel.

Why: at decode time a linear layer multiplies a handful of activation rows (``M`` = 1 to
16) by a large weight, so the GEMM is memory bound: its time is the time to read the
weight. Storing the weight as int8 halves, and as packed int4 quarters, the bytes read
compared with fp16; the kernels read the integer tiles and dequantize them in registers,
so the fp16 weight never exists in memory.

Two formats:

- **int8, per output channel** (:func:`nas.quant._quantizers.quantize_weight` with 8
  bits): ``q`` is ``int8`` of shape ``(N, K)`` on the symmetric grid ``[-127, 127]``
  with fp32 ``scales`` of shape ``(N,)``; ``W = q * scales[:, None]``.
- **int4, grouped along K** (:func:`quantize_int4_grouped`): one fp32 scale per
  ``group`` consecutive k of a row, ``scales`` of shape ``(N, K // group)``; values on
  the symmetric grid ``[-7, 7]``, ``W[n, k] = q[n, k] * scales[n, k // group]``.

**int4 packing** (:func:`pack_int4`, :func:`unpack_int4`): ``packed`` is ``uint8`` of
shape ``(N, K // 2)``; byte ``packed[n, j]`` holds ``k = 2j`` in its low nibble and
``k = 2j + 1`` in its high nibble, each stored offset by 8 (offset binary: nibble
``= q + 8``, so ``q = nibble - 8``; the grid ``[-7, 7]`` uses nibbles 1 to 15 and an
unpacked nibble 0 reads as -8).

Both compute ``y = x @ W.T (+ bias)`` for ``x`` of shape ``(..., K)`` (leading dims
flattened to ``M`` rows) in fp16, bf16 or fp32, and return ``y`` in ``x``'s dtype. Each
runs the Triton kernel when ``x`` is on CUDA, or when ``TRITON_INTERPRET=1`` (Triton's
CPU interpreter; tensors stay on the CPU, bf16 refused since the interpreter computes it
wrongly), and otherwise the plain torch reference (``_reference_*``: dequantize, then
matmul), so CPU code works without triton installed.

Kernel layout: a grid of (N blocks, M blocks); each program loops over K in ``BLOCK_K``
tiles, loads the integer weight tile and its scales, dequantizes them to ``x``'s dtype
(exactly the weight the reference builds), and accumulates ``tl.dot`` products in fp32.
``tl.dot`` needs tiles of at least 16 along every dim, so M is padded to ``BLOCK_M = 16``
with masked loads and stores. The int4 kernel keeps ``BLOCK_K`` a divisor of ``group`` so
that a tile has one scale per column, and multiplies the low nibbles by the even columns
of ``x`` and the high nibbles by the odd ones (no interleaving in registers).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
from torch import Tensor

INT4_GROUP = 128
"""The default int4 group size along K."""

GROUP_MULTIPLE = 32
"""int4 group sizes are multiples of this (32, 64, 128, ...): a ``BLOCK_K`` tile of the
kernel holds ``BLOCK_K // 2 >= 16`` bytes along K, what ``tl.dot`` needs."""

INT4_QMAX = 7
INT4_OFFSET = 8
"""Stored nibble = value + 8 (offset binary)."""

BLOCK_M = 16
BLOCK_N = 32
INT8_BLOCK_K = 128
INT4_BLOCK_K_MAX = 128
NUM_WARPS = 4
NUM_STAGES = 3

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

tl: Any = None
"""``triton.language``, bound by :func:`_kernels` on first use (triton is optional, so it
is not imported with this module; the kernels below read it as a global)."""


# ---------------------------------------------------------------------------- public API


def int8_weight_only_linear(
    x: Tensor, q: Tensor, scales: Tensor, bias: Tensor | None = None
) -> Tensor:
    """``x @ (q * scales[:, None]).T + bias``: ``q`` ``int8`` of shape ``(N, K)``,
    ``scales`` of shape ``(N,)`` (per output channel), ``x`` of shape ``(..., K)``; the
    result has shape ``(..., N)`` and ``x``'s dtype."""
    _check_x(x)
    if q.dtype != torch.int8:
        raise ValueError(f"q must be an int8 tensor, got {q.dtype}")
    if q.dim() != 2:
        raise ValueError(f"q must have shape (N, K), got {tuple(q.shape)}")
    n, k = q.shape
    if x.shape[-1] != k:
        raise ValueError(f"x has K={x.shape[-1]} in its last dim, q of shape (N, K) has K={k}")
    _check_float("scales", scales, (n,), "(N,)")
    _check_bias(bias, n)
    _check_devices(x, q=q, scales=scales, bias=bias)
    x2 = x.reshape(-1, k)
    if _use_triton(x):
        y = _launch_int8(x2, q, scales, bias)
    else:
        y = _reference_int8(x2, q, scales, bias)
    return y.reshape(*x.shape[:-1], n)


def int4_weight_only_linear(
    x: Tensor, packed: Tensor, scales: Tensor, group: int = INT4_GROUP, bias: Tensor | None = None
) -> Tensor:
    """``x @ W.T + bias`` with ``W = unpack_int4(packed) * scales`` repeated over each
    ``group`` of K: ``packed`` ``uint8`` of shape ``(N, K // 2)`` (see the module's packing
    convention), ``scales`` of shape ``(N, K // group)``, ``x`` of shape ``(..., K)``; the
    result has shape ``(..., N)`` and ``x``'s dtype."""
    _check_x(x)
    _check_packed(packed)
    n, k = packed.shape[0], 2 * packed.shape[1]
    if x.shape[-1] != k:
        raise ValueError(
            f"x has K={x.shape[-1]} in its last dim, packed of shape (N, K // 2) has K={k}"
        )
    _check_group(group, k)
    _check_float("scales", scales, (n, k // group), f"(N, K // group) = ({n}, {k // group})")
    _check_bias(bias, n)
    _check_devices(x, packed=packed, scales=scales, bias=bias)
    x2 = x.reshape(-1, k)
    if _use_triton(x):
        y = _launch_int4(x2, packed, scales, group, bias)
    else:
        y = _reference_int4(x2, packed, scales, group, bias)
    return y.reshape(*x.shape[:-1], n)


def pack_int4(q: Tensor) -> Tensor:
    """Pack integer values in ``[-8, 7]`` of shape ``(N, K)`` (K even) into ``uint8`` of
    shape ``(N, K // 2)``: low nibble = even k, high nibble = odd k, each ``value + 8``."""
    if q.dtype.is_floating_point or q.dtype == torch.bool or q.dtype.is_complex:
        raise ValueError(f"pack_int4 takes an integer tensor, got {q.dtype}")
    if q.dim() != 2 or q.shape[1] % 2:
        raise ValueError(f"pack_int4 takes shape (N, K) with K even, got {tuple(q.shape)}")
    if q.numel() and (int(q.min()) < -INT4_OFFSET or int(q.max()) > INT4_OFFSET - 1):
        raise ValueError(f"pack_int4 takes values in [-8, 7], got [{int(q.min())}, {int(q.max())}]")
    nibbles = (q.to(torch.int16) + INT4_OFFSET).to(torch.uint8)
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)


def unpack_int4(packed: Tensor) -> Tensor:
    """The ``int8`` values of shape ``(N, 2 * packed.shape[1])`` that :func:`pack_int4`
    packed."""
    _check_packed(packed)
    low = (packed & 0xF).to(torch.int8) - INT4_OFFSET
    high = (packed >> 4).to(torch.int8) - INT4_OFFSET
    return torch.stack((low, high), dim=-1).reshape(packed.shape[0], -1)


def quantize_int4_grouped(weight: Tensor, group: int = INT4_GROUP) -> tuple[Tensor, Tensor]:
    """Symmetric min-max int4 quantization of ``weight`` ``(N, K)`` with one fp32 scale per
    ``group`` consecutive k of a row: ``scale = max|w| / 7`` (1 for a group of zeros),
    values rounded to ``[-7, 7]``. Returns ``(packed uint8 (N, K // 2), scales fp32
    (N, K // group))``; each weight is within half a scale of its dequantized value."""
    if not weight.dtype.is_floating_point:
        raise ValueError(f"weight must be a floating tensor, got {weight.dtype}")
    if weight.dim() != 2:
        raise ValueError(f"weight must have shape (N, K), got {tuple(weight.shape)}")
    n, k = weight.shape
    _check_group(group, k)
    grouped = weight.detach().float().reshape(n, k // group, group)
    scales = grouped.abs().amax(dim=2) / INT4_QMAX
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))
    q = torch.clamp(torch.round(grouped / scales[..., None]), -INT4_QMAX, INT4_QMAX)
    return pack_int4(q.to(torch.int8).reshape(n, k)), scales


def dequantize_int4(packed: Tensor, scales: Tensor, group: int = INT4_GROUP) -> Tensor:
    """The fp32 weight ``(N, K)`` that ``packed`` and ``scales`` represent."""
    q = unpack_int4(packed).float()
    return q * scales.float().repeat_interleave(group, dim=1)


# ------------------------------------------------------------------- torch references


def _reference_int8(x: Tensor, q: Tensor, scales: Tensor, bias: Tensor | None = None) -> Tensor:
    """Dequantize (in fp32, then to ``x``'s dtype), then matmul."""
    weight = (q.float() * scales.float()[:, None]).to(x.dtype)
    return torch.nn.functional.linear(x, weight, None if bias is None else bias.to(x.dtype))


def _reference_int4(
    x: Tensor, packed: Tensor, scales: Tensor, group: int, bias: Tensor | None = None
) -> Tensor:
    """Unpack and dequantize (in fp32, then to ``x``'s dtype), then matmul."""
    weight = dequantize_int4(packed, scales, group).to(x.dtype)
    return torch.nn.functional.linear(x, weight, None if bias is None else bias.to(x.dtype))


# ----------------------------------------------------------------------------- checks


def _check_x(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"x must be float16, bfloat16 or float32, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError("x must have shape (..., K), got a 0-d tensor")


def _check_packed(packed: Tensor) -> None:
    if packed.dtype != torch.uint8:
        raise ValueError(f"packed int4 weights must be a uint8 tensor, got {packed.dtype}")
    if packed.dim() != 2:
        raise ValueError(f"packed must have shape (N, K // 2), got {tuple(packed.shape)}")


def _check_group(group: int, k: int) -> None:
    if not isinstance(group, int) or group <= 0 or group % GROUP_MULTIPLE:
        raise ValueError(f"group must be a positive multiple of {GROUP_MULTIPLE}, got {group}")
    if k % group:
        raise ValueError(f"group {group} must divide K={k}")


def _check_float(name: str, t: Tensor, shape: tuple[int, ...], expected: str) -> None:
    if not t.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating tensor, got {t.dtype}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {expected}, got {tuple(t.shape)}")


def _check_bias(bias: Tensor | None, n: int) -> None:
    if bias is not None:
        _check_float("bias", bias, (n,), f"(N,) = ({n},)")


def _check_devices(x: Tensor, **tensors: Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} is on {t.device}, x on {x.device}: put them on one device")


# ---------------------------------------------------------------------------- dispatch


def _interpret() -> bool:
    """Whether ``TRITON_INTERPRET`` asks for Triton's CPU interpreter (as triton reads it)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on")


def _use_triton(x: Tensor) -> bool:
    if _interpret():
        if x.dtype == torch.bfloat16:
            raise ValueError(
                "x is bfloat16, which Triton's interpreter (TRITON_INTERPRET=1) computes "
                "wrongly; use float16 or float32, or run on CUDA"
            )
        return True
    return x.is_cuda


@functools.cache
def _kernels(interpret: bool) -> tuple[Any, Any]:
    """The two kernels, decorated by ``triton.jit`` (an interpreted function when
    ``TRITON_INTERPRET`` is set, which ``triton.jit`` reads when it decorates: hence one
    pair per mode)."""
    global tl
    from nas._extras import require

    require("triton", purpose="the Triton weight-only GEMM")
    import triton
    import triton.language

    tl = triton.language
    return triton.jit(_int8_kernel), triton.jit(_int4_kernel)


def _launch_int8(x: Tensor, q: Tensor, scales: Tensor, bias: Tensor | None) -> Tensor:
    (m, k), n = x.shape, q.shape[0]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    if m == 0 or n == 0:
        return y
    kernel, _ = _kernels(_interpret())
    scales = scales.float().contiguous()
    grid = (_cdiv(n, BLOCK_N), _cdiv(m, BLOCK_M))
    kernel[grid](
        x, q, scales, scales if bias is None else bias, y,
        m, n, k,
        x.stride(0), x.stride(1), q.stride(0), q.stride(1), y.stride(0), y.stride(1),
        HAS_BIAS=bias is not None, PRECISION=_precision(x),
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=INT8_BLOCK_K,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )  # fmt: skip
    return y


def _launch_int4(
    x: Tensor, packed: Tensor, scales: Tensor, group: int, bias: Tensor | None
) -> Tensor:
    (m, k), n = x.shape, packed.shape[0]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    if m == 0 or n == 0:
        return y
    _, kernel = _kernels(_interpret())
    scales = scales.float()
    block_k = next(b for b in (INT4_BLOCK_K_MAX, 64, GROUP_MULTIPLE) if group % b == 0)
    grid = (_cdiv(n, BLOCK_N), _cdiv(m, BLOCK_M))
    kernel[grid](
        x, packed, scales, scales if bias is None else bias, y,
        m, n, k,
        x.stride(0), x.stride(1), packed.stride(0), packed.stride(1),
        scales.stride(0), scales.stride(1), y.stride(0), y.stride(1),
        GROUP=group, HAS_BIAS=bias is not None, PRECISION=_precision(x),
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=block_k,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )  # fmt: skip
    return y


def _precision(x: Tensor) -> str:
    """fp32 activations get an exact fp32 ``tl.dot`` (not tf32); the GEMM is memory bound."""
    return "ieee" if x.dtype == torch.float32 else "tf32"


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ----------------------------------------------------------------------------- kernels
# Plain functions, decorated by ``triton.jit`` in :func:`_kernels`. Weight tiles are laid
# out (k, n) so that ``tl.dot(x_tile (BLOCK_M, k), w_tile (k, BLOCK_N))`` is x @ W.T.
# They call only builtins of triton.language (tl.full, not tl.zeros): its @jit helpers are
# decorated when triton is imported, so they interpret only if TRITON_INTERPRET was set
# before that import, while these kernels interpret whenever it is set at their first use.


def _int8_kernel(
    x_ptr, q_ptr, scale_ptr, bias_ptr, y_ptr,
    M, N, K,
    stride_xm, stride_xk, stride_qn, stride_qk, stride_ym, stride_yn,
    HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_n = offs_n < N
    mask_m = offs_m < M
    # One scale per output channel: the same for every K tile.
    scale = tl.load(scale_ptr + offs_n, mask=mask_n, other=0.0)
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        x = tl.load(
            x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
            mask=mask_m[:, None] & mask_k[None, :],
            other=0.0,
        )
        q = tl.load(
            q_ptr + offs_n[None, :] * stride_qn + offs_k[:, None] * stride_qk,
            mask=mask_k[:, None] & mask_n[None, :],
            other=0,
        )
        w = (q.to(tl.float32) * scale[None, :]).to(x.dtype)
        acc = tl.dot(x, w, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    tl.store(
        y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn,
        acc.to(y_ptr.dtype.element_ty),
        mask=mask_m[:, None] & mask_n[None, :],
    )


def _int4_kernel(
    x_ptr, p_ptr, scale_ptr, bias_ptr, y_ptr,
    M, N, K,
    stride_xm, stride_xk, stride_pn, stride_pk,
    stride_sn, stride_sg, stride_ym, stride_yn,
    GROUP: tl.constexpr, HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    # BLOCK_K divides GROUP, which divides K: no K masks, and one scale per column a tile.
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_n = offs_n < N
    mask_m = offs_m < M
    mask_x = mask_m[:, None]
    mask_p = mask_n[None, :]
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_b = k0 // 2 + tl.arange(0, BLOCK_K // 2)  # byte j holds k = 2j and 2j + 1
        x_row = x_ptr + offs_m[:, None] * stride_xm
        x_even = tl.load(x_row + (2 * offs_b)[None, :] * stride_xk, mask=mask_x, other=0.0)
        x_odd = tl.load(x_row + (2 * offs_b + 1)[None, :] * stride_xk, mask=mask_x, other=0.0)
        byte = tl.load(
            p_ptr + offs_n[None, :] * stride_pn + offs_b[:, None] * stride_pk,
            mask=mask_p,
            other=0,
        ).to(tl.int32)
        scale = tl.load(
            scale_ptr + offs_n * stride_sn + (k0 // GROUP) * stride_sg, mask=mask_n, other=0.0
        )[None, :]
        w_even = (((byte & 0xF) - 8).to(tl.float32) * scale).to(x_even.dtype)
        w_odd = (((byte >> 4) - 8).to(tl.float32) * scale).to(x_odd.dtype)
        acc = tl.dot(x_even, w_even, acc, input_precision=PRECISION)
        acc = tl.dot(x_odd, w_odd, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    tl.store(
        y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn,
        acc.to(y_ptr.dtype.element_ty),
        mask=mask_m[:, None] & mask_n[None, :],
    )
