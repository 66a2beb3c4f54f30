"""Weight-only policies for the ``cuda`` target: fp16 layers, subnets that are not
calibrated, and the GPU kernel modules (nas.quant._gpu) against the fake quantization,
on Triton's CPU interpreter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nas
import nas.quant._triton_gemm as gemm
from nas import get_hardware
from nas.quant import QuantizedLayer, joint_space, quantize_layers, size_bytes
from nas.quant._evaluator import QuantizedEvaluator
from nas.quant._gpu import GPU_BITS, HalfLinear, TritonLinear, gpu_kernels
from nas.quant._quantizers import ActivationQuant
from tests.cli_helpers import nas as run
from tests.cli_helpers import one_line_error

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def test_a_sixteen_bit_layer_stores_fp16_weights_and_no_scale():
    torch.manual_seed(0)
    linear = nn.Linear(16, 8)
    layer = QuantizedLayer(linear, 16)
    state = layer.state_dict()
    assert set(state) == {"weight_fp16", "bias"} and state["weight_fp16"].dtype == torch.float16
    assert size_bytes(nn.Sequential(linear), {"0": 16}) == sum(
        t.numel() * t.element_size() for t in state.values())
    x = torch.randn(3, 16)
    expected = nn.functional.linear(x, linear.weight.half().float(), linear.bias)
    assert torch.equal(layer(x), expected)


def test_the_cuda_target_offers_weight_only_widths():
    target = get_hardware("cuda")
    assert target.quant_bits == GPU_BITS == (16, 8, 4)
    assert target.quant_activations is False


def test_weight_only_subnets_are_not_calibrated(monkeypatch):
    """A target with weight-only kernels scores subnets whose layers round weights only,
    and never asks the task for calibration data."""
    supernet = nas.get_supernet("matformer")
    task = nas.get_task(supernet.task_name)
    space = joint_space(supernet.space, supernet.quant_units(), GPU_BITS)
    evaluator = QuantizedEvaluator(supernet, task, get_hardware("cuda"), mode="mixed",
                                   space=space, eval_limit=20)

    def no_calibration(*args, **kwargs):
        raise AssertionError("a weight-only subnet was calibrated")

    monkeypatch.setattr(evaluator, "batches", no_calibration)
    units = [u.name for u in supernet.quant_units()]
    config = space.config({**supernet.space.largest(),
                           **{f"bits.{u}": GPU_BITS[i % 3] for i, u in enumerate(units)}})
    subnet = evaluator.quantized(config)
    assert subnet.ranges == {} and set(subnet.bits.values()) == set(GPU_BITS)
    layers = [m for m in subnet.fake_quantized().modules() if isinstance(m, QuantizedLayer)]
    assert layers and not any(m.static for m in layers)
    assert "static=False" in evaluator.fingerprint


@pytest.fixture
def interpret(monkeypatch):
    """Triton's CPU interpreter, and no fall-back to the torch reference."""
    pytest.importorskip("triton", reason="the Triton kernels need the 'triton' extra")
    monkeypatch.setenv("TRITON_INTERPRET", "1")

    def no_reference(*args, **kwargs):
        raise AssertionError("the torch reference ran instead of the Triton kernel")

    monkeypatch.setattr(gemm, "_reference_int8", no_reference)
    monkeypatch.setattr(gemm, "_reference_int4", no_reference)


def test_gpu_kernels_compute_what_the_fake_quantization_scored(interpret):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 32), nn.ReLU(),
                          nn.Linear(32, 40), nn.ReLU(), nn.Linear(40, 8))
    quantize_layers(model, {"0": 4, "2": 8, "4": 16, "6": 4}, None)  # K=40: not a kernel's
    x = torch.randn(5, 64)
    with torch.no_grad():
        expected = model(x)
        kernels = gpu_kernels(model)
        actual = kernels(x)
    kinds = [type(m).__name__ for m in kernels]
    assert kinds == ["TritonLinear", "ReLU", "TritonLinear", "ReLU", "HalfLinear", "ReLU",
                     "QuantizedLayer"]
    assert isinstance(kernels[0], TritonLinear) and isinstance(kernels[4], HalfLinear)
    # fp16 products round to fp16: a few units in the last place of the largest output
    assert (actual - expected).abs().max() <= 4e-3 * expected.abs().max()


def test_gpu_kernels_refuse_what_they_cannot_run():
    grids = (ActivationQuant(0.1, 128), ActivationQuant(0.1, 128))
    static = quantize_layers(nn.Sequential(nn.Linear(32, 8)), {"0": 8}, {"0": grids})
    with pytest.raises(ValueError, match="weight-only: this model quantizes activations"):
        gpu_kernels(static)
    six = quantize_layers(nn.Sequential(nn.Linear(32, 8)), {"0": 6}, None)
    with pytest.raises(ValueError, match=r"run 16, 8, 4-bit weights, not 6$"):
        gpu_kernels(six)


@no_cuda
def test_a_quantized_search_on_cuda_without_a_gpu_is_one_line(tmp_path):
    result = run("search", "--supernet", "matformer", "--hw", "cuda", "--budget", "50ms",
                 "--quantize", "mixed", "--storage", f"sqlite:///{tmp_path / 's.db'}")
    one_line_error(result, "no CUDA device on this machine")
