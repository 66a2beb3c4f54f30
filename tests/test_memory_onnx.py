"""Peak memory (weights, activations, KV cache) and ONNX Runtime export and timing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nas._supernet import LayerShape, SubnetShape
from nas._task import Workload
from nas.hardware._memory import (
    kv_cache_bytes,
    measure_memory,
    peak_activation_bytes,
    weights_bytes,
)
from nas.supernets import G2P_SPACE, HATSuperTransformer


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)).eval()


@pytest.fixture(scope="module")
def hat_subnet():
    supernet = HATSuperTransformer(G2P_SPACE, src_vocab=33, tgt_vocab=73).eval()
    config = supernet.space.sample(np.random.default_rng(3))
    return supernet, config, supernet.extract(config).eval()


# -- weights -------------------------------------------------------------------------------


def test_weights_bytes_is_the_hand_sum() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    # Linear(3, 4): 12 + 4, Linear(4, 2): 8 + 2, BatchNorm: weight, bias, running mean and
    # var 4 each (float32), plus num_batches_tracked (one int64).
    assert weights_bytes(model) == (16 + 10 + 16) * 4 + 8
    shared = nn.Linear(5, 5)
    assert weights_bytes(nn.Sequential(shared, nn.ReLU(), shared)) == 30 * 4
    assert weights_bytes(nn.Linear(2, 2).double()) == 6 * 8


# -- activations ---------------------------------------------------------------------------


def test_activation_peak_by_hand_and_growing_with_batch() -> None:
    model = mlp()
    peaks = {}
    for batch in (1, 8, 64):
        x = torch.randn(batch, 64)
        with torch.no_grad():
            peaks[batch] = peak_activation_bytes(lambda x=x: model(x))
    # The peak is while ReLU's output and the first Linear's output are both alive:
    # 2 * batch * 256 float32.
    assert peaks == {b: 2 * b * 256 * 4 for b in (1, 8, 64)}


def test_activation_peak_agrees_with_the_profiler() -> None:
    """The tracker's figure equals the CPU allocator's, as the profiler records it."""
    from torch.profiler import ProfilerActivity, profile

    model, x = mlp(), torch.randn(32, 64)
    with torch.no_grad():
        tracked = peak_activation_bytes(lambda: model(x))
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            model(x)
    kineto = getattr(prof.profiler, "kineto_results", None)
    if kineto is None:  # pragma: no cover - private API of the profiler
        pytest.skip("this torch's profiler exposes no raw memory events")
    events = sorted((e for e in kineto.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    assert tracked == peak > 0


def test_cpu_or_cuda_only() -> None:
    with pytest.raises(ValueError, match="CPU or CUDA"):
        peak_activation_bytes(lambda: None, device="meta")


# -- KV cache ------------------------------------------------------------------------------


def decoder(heads: int, head_dim: int) -> LayerShape:
    return LayerShape("decoder", {"heads": heads, "head_dim": head_dim,
                                  "qkv_dim": heads * head_dim})


def test_kv_cache_formula_by_hand() -> None:
    shape = SubnetShape("hat", (LayerShape("encoder", {"heads": 8, "head_dim": 64}),
                                decoder(4, 64), decoder(2, 64)))
    # (4 + 2) heads * 64 dims * 7 steps * batch 2 * beam 3 * (k and v) 2 * 4 bytes
    assert kv_cache_bytes(shape, steps=7, batch=2, beam=3) == 384 * 7 * 2 * 3 * 2 * 4
    assert kv_cache_bytes(shape, steps=7, dtype_bytes=2) == 384 * 7 * 2 * 2
    assert kv_cache_bytes(SubnetShape("cnn", ()), steps=7) == 0
    with pytest.raises(ValueError, match="steps"):
        kv_cache_bytes(shape, steps=-1)


def test_kv_cache_matches_the_hat_decoder_cache(hat_subnet) -> None:
    """The formula against the keys and values HAT's decoder really caches."""
    supernet, config, model = hat_subnet
    last: dict[int, int] = {}
    for i, layer in enumerate(model.decoder):
        def spy(x, cache, _step=layer.self_attn.step, _i=i):
            y, k, v = _step(x, cache)
            last[_i] = k.nbytes + v.nbytes
            return y, k, v
        layer.self_attn.step = spy
    src = torch.randint(4, 33, (1, 8), generator=torch.Generator().manual_seed(0))
    try:
        model.greedy_decode(src, max_len=7, steps=7)
    finally:
        for layer in model.decoder:
            del layer.self_attn.step
    assert len(last) == len(model.decoder)
    assert sum(last.values()) == kv_cache_bytes(supernet.describe(config), steps=7) > 0


def test_measure_memory_of_a_hat_subnet(hat_subnet) -> None:
    supernet, config, model = hat_subnet
    src = torch.randint(4, 33, (1, 8), generator=torch.Generator().manual_seed(0))
    report = measure_memory(model, lambda: model.greedy_decode(src, max_len=7, steps=7),
                            shape=supernet.describe(config),
                            workload=Workload(src_len=8.0, tgt_len=7.2))
    assert report.weights_bytes == weights_bytes(model) > 0
    assert report.kv_cache_bytes == kv_cache_bytes(supernet.describe(config), steps=7)
    # The cache lives among the activations during decoding.
    assert report.peak_activation_bytes >= report.kv_cache_bytes > 0
    assert report.peak_bytes == report.weights_bytes + report.peak_activation_bytes
    assert report.device == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_activation_peak_grows_with_batch() -> None:  # pragma: no cover - no GPU in CI
    model = mlp().cuda()
    peaks = []
    for batch in (1, 64):
        x = torch.randn(batch, 64, device="cuda")
        with torch.no_grad():
            peaks.append(peak_activation_bytes(lambda x=x: model(x), device="cuda"))
    assert 0 < peaks[0] < peaks[1]


# -- ONNX ----------------------------------------------------------------------------------


def test_onnx_export_matches_torch_and_times(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from nas.hardware._onnx import export_onnx, measure_onnx, onnx_session, run_onnx

    model, x = mlp(), torch.randn(4, 64)
    path = export_onnx(model, (x,), tmp_path / "mlp.onnx")
    (out,) = run_onnx(onnx_session(path), (x,))
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)
    m = measure_onnx(path, (x,), threads=1, warmup=2, min_repeats=6, max_repeats=30,
                     rel_ci=0.2)
    assert 0 < m.ci_low_ms <= m.median_ms <= m.ci_high_ms and m.n_runs >= 6
    assert m.environment["runtime"].startswith("onnxruntime ")
    assert m.environment["providers"] == "CPUExecutionProvider"
    with pytest.raises(ValueError, match="takes 1 input"):
        measure_onnx(path, (x, x))


class EncoderLayerWithoutMask(nn.Module):
    """A HAT encoder layer on an unpadded sentence: one tensor in, one out."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x, None)


def test_onnx_export_of_a_hat_encoder_layer_and_the_whole_subnet(hat_subnet,
                                                                   tmp_path: Path) -> None:
    """A HAT layer and the whole dense subnet (teacher forced) export, run in ONNX
    Runtime and agree with torch."""
    pytest.importorskip("onnxruntime")
    from nas.hardware._onnx import export_onnx, onnx_session, run_onnx

    _, _, model = hat_subnet
    layer = EncoderLayerWithoutMask(model.encoder[0])
    x = torch.randn(1, 8, model.encoder[0].fc1.in_features)  # (B, S, E)
    path = export_onnx(layer, (x,), tmp_path / "layer.onnx")
    (out,) = run_onnx(onnx_session(path), (x,))
    with torch.no_grad():
        np.testing.assert_allclose(out, layer(x).numpy(), atol=1e-5, rtol=0)
    src = torch.randint(4, 33, (1, 8))
    path = export_onnx(model, (src, src[:, :5]), tmp_path / "hat.onnx")
    (logits,) = run_onnx(onnx_session(path), (src, src[:, :5]))
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(src, src[:, :5]).numpy(), atol=1e-4, rtol=0)


class BooleanCumsum(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x > 0, dim=1)


def test_a_graph_onnx_rejects_is_a_one_line_error(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from nas.hardware._onnx import export_onnx

    with pytest.raises(ValueError, match="BooleanCumsum exports to an invalid ONNX graph"):
        export_onnx(BooleanCumsum(), (torch.randn(1, 4),), tmp_path / "bad.onnx")
