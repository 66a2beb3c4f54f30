"""The Triton weight-only GEMMs (int8 per channel, int4 grouped): the kernels under Triton's
CPU interpreter (``TRITON_INTERPRET=1``) against the torch reference and the fp32 matmul
of the dequantized weight, the int4 packing, the CPU reference path and the errors.

``triton.jit`` reads ``TRITON_INTERPRET`` when it decorates, and the module decorates its
kernels on first use, once per mode: setting the variable with ``monkeypatch`` before the
call is enough (one subprocess test checks the variable set at start-up too)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import nas.quant._triton_gemm as gemm
from nas._extras import MissingExtraError
from nas.quant._quantizers import quantize_weight
from nas.quant._triton_gemm import (
    dequantize_int4,
    int4_weight_only_linear,
    int8_weight_only_linear,
    pack_int4,
    quantize_int4_grouped,
    unpack_int4,
)

REFERENCE_INT8 = gemm._reference_int8
REFERENCE_INT4 = gemm._reference_int4
"""The torch references (the ``interpret`` fixture replaces them in the module)."""

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TOLERANCE = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}
"""Largest error relative to the largest |output|: fp32 accumulation order, and for fp16
the weight and output rounded to fp16 (a few units in the last place)."""


@pytest.fixture
def interpret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton's CPU interpreter, and no fall-back to the torch reference."""
    pytest.importorskip("triton", reason="the Triton kernels need the 'triton' extra")
    monkeypatch.setenv("TRITON_INTERPRET", "1")

    def no_reference(*args: object, **kwargs: object) -> None:
        raise AssertionError("the torch reference ran instead of the Triton kernel")

    monkeypatch.setattr(gemm, "_reference_int8", no_reference)
    monkeypatch.setattr(gemm, "_reference_int4", no_reference)


@pytest.fixture
def no_interpret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def inputs(m: int, k: int, n: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g).to(dtype)
    weight = torch.randn(n, k, generator=g) / k**0.5
    bias = torch.randn(n, generator=g)
    return x, weight, bias


def assert_close(y: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    assert y.shape == expected.shape
    scale = max(float(expected.float().abs().max()), 1.0)
    error = float((y.float() - expected.float()).abs().max())
    assert error <= TOLERANCE[dtype] * scale, f"max error {error:.3g} at scale {scale:.3g}"


# ------------------------------------------------------------------ kernels (interpreter)

SHAPES = [(1, 64, 32), (3, 128, 48), (16, 128, 32)]
DTYPES = [torch.float32, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("m", "k", "n"), SHAPES)
def test_int8_kernel_matches_reference_and_fp32(interpret, m, k, n, dtype) -> None:
    x, weight, bias = inputs(m, k, n, dtype)
    q, scales = quantize_weight(weight, 8)
    for b in (None, bias):
        y = int8_weight_only_linear(x, q, scales, b)
        assert y.dtype == dtype
        dequantized = q.float() * scales[:, None]
        fp32 = x.float() @ dequantized.T + (0 if b is None else b)
        assert_close(y, fp32, dtype)
        assert_close(y, REFERENCE_INT8(x, q, scales, b), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("m", "k", "n"), SHAPES)
def test_int4_kernel_matches_reference_and_fp32(interpret, m, k, n, dtype) -> None:
    x, weight, bias = inputs(m, k, n, dtype)
    for group, b in ((32, bias), (64, None), (k, bias)):
        packed, scales = quantize_int4_grouped(weight, group)
        y = int4_weight_only_linear(x, packed, scales, group, b)
        assert y.dtype == dtype
        dequantized = dequantize_int4(packed, scales, group)
        fp32 = x.float() @ dequantized.T + (0 if b is None else b)
        assert_close(y, fp32, dtype)
        assert_close(y, REFERENCE_INT4(x, packed, scales, group, b), dtype)


def test_leading_dims_strides_and_a_partial_k_tile(interpret) -> None:
    # int8 takes any K: 200 is one full 128 tile and a masked one; x is a strided view.
    x_big, weight, bias = inputs(2 * 3, 2 * 200, 40, torch.float32)
    x = x_big[:, ::2].reshape(2, 3, 200)
    assert not x.is_contiguous()
    q, scales = quantize_weight(weight[:, :200], 8)
    y = int8_weight_only_linear(x, q, scales, bias)
    assert y.shape == (2, 3, 40)
    expected = x.reshape(6, 200) @ (q.float() * scales[:, None]).T + bias
    assert_close(y.reshape(6, 40), expected, torch.float32)

    packed, scales4 = quantize_int4_grouped(weight[:, :128], 64)
    y4 = int4_weight_only_linear(x[..., :128], packed, scales4, 64)
    expected4 = x[..., :128].reshape(6, 128) @ dequantize_int4(packed, scales4, 64).T
    assert_close(y4.reshape(6, 40), expected4, torch.float32)


def test_more_than_one_m_block_and_no_rows(interpret) -> None:
    x, weight, _ = inputs(17, 64, 32, torch.float16)
    q, scales = quantize_weight(weight, 8)
    fp32 = x.float() @ (q.float() * scales[:, None]).T
    assert_close(int8_weight_only_linear(x, q, scales), fp32, torch.float16)
    assert int8_weight_only_linear(x[:0], q, scales).shape == (0, 32)


def test_interpreter_set_at_start_up() -> None:
    pytest.importorskip("triton", reason="the Triton kernels need the 'triton' extra")
    code = (
        "import torch\n"
        "import nas.quant._triton_gemm as g\n"
        "g._reference_int4 = None\n"
        "x = torch.randn(2, 64)\n"
        "p, s = g.quantize_int4_grouped(torch.randn(32, 64), 32)\n"
        "y = g.int4_weight_only_linear(x, p, s, 32)\n"
        "w = g.dequantize_int4(p, s, 32)\n"
        "assert (y - x @ w.T).abs().max() < 1e-4, y\n"
        "assert type(g._kernels(True)[1]).__name__ == 'InterpretedFunction'\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=env)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_kernels_on_cuda(no_interpret, dtype) -> None:
    x, weight, bias = inputs(4, 256, 96, dtype)
    x, weight, bias = x.cuda(), weight.cuda(), bias.cuda()
    q, scales = quantize_weight(weight, 8)
    fp32 = x.float() @ (q.float() * scales[:, None]).T + bias
    assert_close(int8_weight_only_linear(x, q, scales, bias), fp32, dtype)
    packed, scales4 = quantize_int4_grouped(weight, 128)
    fp32 = x.float() @ dequantize_int4(packed, scales4, 128).T + bias
    assert_close(int4_weight_only_linear(x, packed, scales4, 128, bias), fp32, dtype)


# ------------------------------------------------------------------------- int4 format


def test_pack_unpack_round_trip_and_the_nibble_order() -> None:
    q = torch.randint(-8, 8, (5, 64), generator=torch.Generator().manual_seed(0))
    packed = pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.shape == (5, 32)
    assert torch.equal(unpack_int4(packed), q.to(torch.int8))
    # Low nibble = even k, high nibble = odd k, each value + 8.
    assert pack_int4(torch.tensor([[1, -2, -7, 7]])).tolist() == [[9 | 6 << 4, 1 | 15 << 4]]


@pytest.mark.parametrize("group", [32, 64, 128])
def test_quantize_int4_grouped_error_is_half_a_step(group) -> None:
    weight = torch.randn(24, 256, generator=torch.Generator().manual_seed(1)) * 3
    weight[3, :group] = 0  # a group of zeros: scale 1, exact
    packed, scales = quantize_int4_grouped(weight, group)
    assert packed.shape == (24, 128) and scales.shape == (24, 256 // group)
    assert scales.dtype == torch.float32 and scales[3, 0] == 1
    values = unpack_int4(packed)
    assert values.abs().max() <= 7
    error = (weight - dequantize_int4(packed, scales, group)).abs()
    step = scales.repeat_interleave(group, dim=1)
    assert torch.all(error <= step / 2 * (1 + 1e-5))
    # The largest |w| of each group maps to +-7 exactly.
    grouped = values.reshape(24, -1, group).abs().amax(dim=2)
    assert torch.all((grouped == 7) | (scales == 1))


# ---------------------------------------------------------------- CPU reference path


def test_without_the_interpreter_cpu_runs_the_torch_reference(no_interpret, monkeypatch) -> None:
    def no_triton(interpret: bool) -> None:
        raise AssertionError("the Triton kernels ran on the CPU")

    monkeypatch.setattr(gemm, "_kernels", no_triton)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x, weight, bias = inputs(3, 128, 48, dtype)
        q, scales = quantize_weight(weight, 8)
        y = int8_weight_only_linear(x, q, scales, bias)
        assert y.dtype == dtype
        assert_close(y, x.float() @ (q.float() * scales[:, None]).T + bias, dtype)
        packed, scales4 = quantize_int4_grouped(weight, 64)
        y4 = int4_weight_only_linear(x[None], packed, scales4, 64, bias)
        assert y4.shape == (1, 3, 48) and y4.dtype == dtype
        assert_close(y4[0], x.float() @ dequantize_int4(packed, scales4, 64).T + bias, dtype)


def test_the_interpreter_without_triton_is_a_one_line_error(monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setitem(sys.modules, "triton", None)  # import triton now fails
    gemm._kernels.cache_clear()
    try:
        x, weight, _ = inputs(1, 64, 32, torch.float32)
        with pytest.raises(MissingExtraError, match=r"Triton weight-only GEMM.*\[triton\]") as e:
            int8_weight_only_linear(x, *quantize_weight(weight, 8))
        assert "\n" not in str(e.value)
    finally:
        gemm._kernels.cache_clear()


# ------------------------------------------------------------------------------ errors


def int8_case():
    x, weight, bias = inputs(2, 64, 32, torch.float32)
    return x, *quantize_weight(weight, 8), bias


def int4_case():
    x, weight, bias = inputs(2, 128, 32, torch.float32)
    return x, *quantize_int4_grouped(weight, 64), bias


ERRORS = [
    ("q must be an int8 tensor, got torch.float32",
     lambda x, q, s, b: int8_weight_only_linear(x, q.float(), s)),
    ("q must have shape (N, K)",
     lambda x, q, s, b: int8_weight_only_linear(x, q[None], s)),
    ("x has K=63 in its last dim, q of shape (N, K) has K=64",
     lambda x, q, s, b: int8_weight_only_linear(x[:, :63], q, s)),
    ("scales must have shape (N,), got (32, 1)",
     lambda x, q, s, b: int8_weight_only_linear(x, q, s[:, None])),
    ("bias must have shape (N,) = (32,), got (31,)",
     lambda x, q, s, b: int8_weight_only_linear(x, q, s, b[:31])),
    ("x must be float16, bfloat16 or float32, got torch.int64",
     lambda x, q, s, b: int8_weight_only_linear(x.long(), q, s)),
    ("scales must be a floating tensor, got torch.int8",
     lambda x, q, s, b: int8_weight_only_linear(x, q, s.to(torch.int8))),
]  # fmt: skip

INT4_ERRORS = [
    ("packed int4 weights must be a uint8 tensor, got torch.int8",
     lambda x, p, s, b: int4_weight_only_linear(x, p.to(torch.int8), s, 64)),
    ("x has K=128 in its last dim, packed of shape (N, K // 2) has K=64",
     lambda x, p, s, b: int4_weight_only_linear(x, p[:, :32], s, 64)),
    ("group 96 must divide K=128",
     lambda x, p, s, b: int4_weight_only_linear(x, p, s, 96)),
    ("group must be a positive multiple of 32, got 48",
     lambda x, p, s, b: int4_weight_only_linear(x, p, s, 48)),
    ("scales must have shape (N, K // group) = (32, 4), got (32, 2)",
     lambda x, p, s, b: int4_weight_only_linear(x, p, s, 32)),
    ("bias must have shape (N,) = (32,), got (1, 32)",
     lambda x, p, s, b: int4_weight_only_linear(x, p, s, 64, b[None])),
    ("group 256 must divide K=128",
     lambda x, p, s, b: quantize_int4_grouped(x, 256)),
    ("pack_int4 takes values in [-8, 7], got [-9, 3]",
     lambda x, p, s, b: pack_int4(torch.tensor([[-9, 3]]))),
    ("pack_int4 takes shape (N, K) with K even, got (1, 3)",
     lambda x, p, s, b: pack_int4(torch.tensor([[1, 2, 3]]))),
]  # fmt: skip


@pytest.mark.parametrize(("message", "call"), ERRORS, ids=[m for m, _ in ERRORS])
def test_int8_errors_are_one_line(message, call) -> None:
    with pytest.raises(ValueError) as e:
        call(*int8_case())
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(("message", "call"), INT4_ERRORS, ids=[m for m, _ in INT4_ERRORS])
def test_int4_errors_are_one_line(message, call) -> None:
    with pytest.raises(ValueError) as e:
        call(*int4_case())
    assert message in str(e.value) and "\n" not in str(e.value)


def test_bf16_under_the_interpreter_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    x, q, s, _ = int8_case()
    with pytest.raises(ValueError, match="bfloat16.*interpreter") as e:
        int8_weight_only_linear(x.bfloat16(), q, s)
    assert "\n" not in str(e.value)
