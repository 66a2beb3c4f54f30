"""Our supernets' subnets as DenseTransformers: the conversion computes what the source does."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas import get_supernet
from nas.compress._convert import to_transformer, transformer_from_flexibert
from nas.compress._transformer import DenseTransformer
from nas.supernets.flexibert._dense import FlexiBERTSubnet
from nas.supernets.matformer._dense import MatFormerLM


def byte_ids(batch: int = 3, length: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("ffn_dims", [[64, 64], [8, 32, 16]])
def test_matformer_subnet_converts_exactly(ffn_dims) -> None:
    torch.manual_seed(0)
    source = MatFormerLM(vocab_size=256, d_model=32, n_heads=4, context=24,
                         ffn_dims=ffn_dims).eval()
    converted = to_transformer(source)
    assert isinstance(converted, DenseTransformer)
    config = converted.subnet_config()
    assert (config["pre_norm"], config["causal"], config["embed_norm"]) == (True, True, False)
    assert [s["ffn_dim"] for s in config["layers"]] == ffn_dims
    ids = byte_ids()
    with torch.no_grad():
        torch.testing.assert_close(converted(ids), source(ids), rtol=0, atol=1e-5)
    assert DenseTransformer(**config).subnet_config() == config  # rebuilds from JSON alone


def test_shipped_matformer_extremes_convert_exactly() -> None:
    supernet = get_supernet("matformer")
    ids = byte_ids(length=64)
    for config in (supernet.space.smallest(), supernet.space.largest()):
        source = supernet.extract(config).eval()
        with torch.no_grad():
            gap = (to_transformer(source)(ids) - source(ids)).abs().max()
        assert gap < 1e-5


def flexibert(op: str = "sa-sdp", ffn: list[int] | None = None) -> FlexiBERTSubnet:
    torch.manual_seed(1)
    layers = [{"hidden": 16, "op": "sa-sdp", "heads": 2, "ffn": [24]},
              {"hidden": 16, "op": op, "heads": 4, "ffn": ffn or [40]}]
    return FlexiBERTSubnet(vocab_size=30, max_positions=12, out_dim=10, layers=layers).eval()


def test_all_attention_flexibert_subnet_converts_exactly() -> None:
    source = flexibert()
    converted = to_transformer(source)
    assert [s["heads"] for s in converted.subnet_config()["layers"]] == [2, 4]
    ids = torch.randint(0, 30, (2, 12), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    with torch.no_grad():
        torch.testing.assert_close(converted(ids, mask), source(ids, mask), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("op", "ffn", "fragment"), [
    ("dsc-5", None, "layer 1 is dsc-5"),
    ("sa-wma", None, "layer 1 is sa-wma"),
    ("sa-sdp", [24, 24, 24], "FFN [24, 24, 24]"),
])
def test_flexibert_subnets_without_bert_shape_are_refused(op, ffn, fragment) -> None:
    with pytest.raises(ValueError, match="every layer sa-sdp") as error:
        transformer_from_flexibert(flexibert(op, ffn))
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_unknown_models_are_refused_naming_what_converts() -> None:
    with pytest.raises(ValueError, match="cannot compress a Linear.*MatFormerLM, FlexiBERTSubnet"):
        to_transformer(nn.Linear(2, 2))


@pytest.mark.parametrize("variant", ["lm", "encoder"])
def test_compressed_models_export_to_onnx_and_match_torch(tmp_path, variant) -> None:
    """A pruned model (embedding width, heads, query/key and FFN units gone, so the
    encoder restores its width through ``out_fill``) runs in ONNX Runtime as in torch."""
    pytest.importorskip("onnxruntime")
    from nas.compress._structures import keep_without, structures
    from nas.compress._transformer import shrink
    from nas.hardware._onnx import export_onnx, onnx_session, run_onnx

    if variant == "lm":
        torch.manual_seed(0)
        model = to_transformer(MatFormerLM(vocab_size=256, d_model=32, n_heads=4, context=24,
                                           ffn_dims=[64, 32]).eval())
        inputs = (byte_ids(batch=1),)
    else:
        model = to_transformer(flexibert())
        model = DenseTransformer(**{**model.subnet_config(), "out_dim": None}).eval()
        ids = torch.randint(0, 30, (1, 12), generator=torch.Generator().manual_seed(4))
        inputs = (ids, torch.ones_like(ids))
    items = structures(model)
    gone = [s for s in items if s.kind in ("embed", "ffn", "qk") and s.index % 3 == 1]
    gone += [s for s in items if s.kind == "head" and (s.block, s.index) == (1, 0)]
    small = shrink(model, keep_without(model, gone)).eval()
    assert small.embed_dim < model.embed_dim
    path = export_onnx(small, inputs, tmp_path / "small.onnx")
    (got,) = run_onnx(onnx_session(path), inputs)
    with torch.no_grad():
        expected = small(*inputs).numpy()
    assert got.shape == expected.shape
    assert abs(got - expected).max() < 1e-4
