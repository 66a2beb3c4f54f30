"""The dense heterogeneous DenseTransformer: MiniLM conversion, export, physical shrinking."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
import torch
from torch import nn

from nas.compress._convert import bert_from_minilm
from nas.compress._prune import count_params
from nas.compress._structures import keep_without, structures
from nas.compress._transformer import DenseTransformer, Keep, param_count, shrink, shrunk_config
from nas.supernets._export import load_subnet, save_subnet
from tests.markers import needs_minilm

VARIANTS = {
    "bert": {},
    "bert-head": {"out_dim": 7, "type_vocab_size": 0},
    "gpt": {"pre_norm": True, "causal": True, "embed_norm": False, "out_dim": 50,
            "type_vocab_size": 0},
}
"""Post-LN encoder (MiniLM), post-LN with a head (FlexiBERT), pre-LN causal LM (MatFormer)."""


def tiny(seed: int = 0, **overrides) -> DenseTransformer:
    torch.manual_seed(seed)
    kwargs = dict(
        vocab_size=50, max_positions=16, type_vocab_size=2, embed_dim=24,
        layers=[{"heads": 3, "qk_dim": 4, "v_dim": 5, "ffn_dim": 32},
                {"heads": 2, "qk_dim": 6, "v_dim": 3, "ffn_dim": 16}],
    )
    kwargs.update(overrides)
    return DenseTransformer(**kwargs).eval()


def some(items, n: int, seed: int) -> list:
    """``n`` random structures, leaving every layer at least one unit of each kind."""
    rng = random.Random(seed)
    left: dict = {}
    for s in items:
        left[s.layer_key] = left.get(s.layer_key, 0) + 1
    out = []
    for s in rng.sample(items, len(items)):
        if len(out) < n and left[s.layer_key] > 1:
            left[s.layer_key] -= 1
            out.append(s)
    return out


def inputs(vocab: int = 50, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (3, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    return ids, mask


@needs_minilm
def test_bert_from_minilm_matches_minilm_on_pydoc() -> None:
    from nas.supernets.tasks._minilm import load_minilm
    from nas.supernets.tasks._pydoc_text import paragraphs

    minilm, tokenizer = load_minilm()
    bert = bert_from_minilm(minilm).eval()
    ids, mask = tokenizer(list(paragraphs("validation")[:12]), max_length=128)
    assert (mask == 0).any()  # padding is exercised
    with torch.inference_mode():
        diff = (minilm(ids, mask) - bert(ids, mask)).abs().max()
    assert diff <= 1e-5
    assert count_params(bert) == sum(p.numel() for p in minilm.parameters())
    assert bert.subnet_config()["layers"][0] == {
        "heads": 12, "qk_dim": 32, "v_dim": 32, "ffn_dim": 1536,
        "temperature": pytest.approx(32 ** 0.5)}


def test_export_round_trip_of_a_pruned_model(tmp_path) -> None:
    model = tiny()
    items = structures(model)
    removed = some([s for s in items if s.kind != "embed"], 25, seed=0)
    removed += [s for s in items if s.kind == "embed"][:5]
    small = shrink(model, keep_without(model, removed))
    assert small.embed_dim == 19 and small.subnet_config()["output_dim"] == 24
    ids, mask = inputs()
    for m in (model, small):
        folder = save_subnet(m, tmp_path / str(m.embed_dim), family="transformer")
        loaded = load_subnet(folder)
        assert isinstance(loaded, DenseTransformer)
        with torch.inference_mode():
            assert torch.equal(loaded(ids, mask), m(ids, mask))
    # a fresh process that only imports nas finds the "transformer" family through the registry
    torch.save({"ids": ids, "mask": mask}, tmp_path / "inputs.pt")
    with torch.inference_mode():
        torch.save(small(ids, mask), tmp_path / "expected.pt")
    script = (
        "import sys, torch, nas\n"
        "model = nas.load_subnet(sys.argv[1])\n"
        "x = torch.load(sys.argv[2])\n"
        "with torch.inference_mode():\n"
        "    assert torch.equal(model(x['ids'], x['mask']), torch.load(sys.argv[3]))\n"
        "print(type(model).__name__)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "19"), str(tmp_path / "inputs.pt"),
         str(tmp_path / "expected.pt")], capture_output=True, text=True,
    )
    assert run.returncode == 0 and run.stdout.strip() == "DenseTransformer", run.stderr


def _zeroed(model: DenseTransformer, removed) -> DenseTransformer:
    copy = DenseTransformer(**model.subnet_config()).eval()
    copy.load_state_dict(model.state_dict())
    params = dict(copy.named_parameters())
    with torch.no_grad():
        for s in removed:
            for sl in s.slices:
                params[sl.param].index_fill_(sl.dim, torch.tensor(sl.indices), 0.0)
    return copy


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", ["head", "qk", "v", "ffn"])
def test_shrinking_equals_zeroing_the_structures(kind: str, variant: str) -> None:
    model = tiny(seed=2, **VARIANTS[variant])
    items = [s for s in structures(model) if s.kind == kind]
    removed = items[::2]
    small = shrink(model, keep_without(model, removed))
    ids, mask = inputs()
    with torch.inference_mode():
        expected = _zeroed(model, removed)(ids, mask)
        got = small(ids, mask)
    assert count_params(small) < count_params(model)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_embedding_pruning_keeps_width_and_layer_norms_consistent() -> None:
    model = tiny(seed=3)
    keep = Keep.full(model)
    kept = tuple(i for i in keep.embed if i % 3)
    small = shrink(model, Keep(kept, keep.heads, keep.qk, keep.v, keep.ffn))
    e = torch.tensor(kept)
    assert torch.equal(small.blocks[1].attn_norm.weight, model.blocks[1].attn_norm.weight[e])
    assert torch.equal(small.embed_norm.bias, model.embed_norm.bias[e])
    ids, mask = inputs()
    with torch.inference_mode():
        out = small(ids, mask)
    assert out.shape == (3, 10, 24)
    dropped = torch.tensor([i for i in range(24) if i not in kept])
    fill = model.blocks[-1].ffn_norm.bias[dropped]
    assert torch.equal(out[..., dropped], fill.expand(3, 10, -1))
    # pruning again maps through the first output index
    again = shrink(small, Keep(tuple(range(1, len(kept))), *(
        getattr(Keep.full(small), k) for k in ("heads", "qk", "v", "ffn"))))
    assert again.subnet_config()["output_index"] == list(kept[1:])
    with torch.inference_mode():
        assert torch.equal(again(ids, mask)[..., dropped], out[..., dropped])


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_count_without_building(variant: str) -> None:
    model = tiny(seed=4, **VARIANTS[variant])
    items = structures(model)
    for n in (0, 10, 40):
        keep = keep_without(model, some(items, n, seed=n))
        small = shrink(model, keep)
        config = shrunk_config(model, keep)
        assert config == small.subnet_config()
        assert param_count(config) == count_params(small)
        assert param_count(config, which="encoder") == count_params(small, which="encoder")


def test_causal_model_ignores_later_tokens() -> None:
    model = tiny(seed=5, **VARIANTS["gpt"])
    ids, _ = inputs()
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 50
    with torch.inference_mode():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_embedding_pruning_with_a_head_slices_the_head() -> None:
    model = tiny(seed=6, **VARIANTS["gpt"])
    keep = Keep.full(model)
    kept = tuple(range(0, 24, 2))
    small = shrink(model, Keep(kept, keep.heads, keep.qk, keep.v, keep.ffn))
    assert "output_index" not in small.subnet_config()
    assert torch.equal(small.head.weight, model.head.weight[:, list(kept)])
    assert torch.equal(small.final_norm.weight, model.final_norm.weight[list(kept)])
    ids, _ = inputs()
    with torch.inference_mode():
        assert small(ids).shape == (3, 10, 50)


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="embed_dim"):
        tiny(embed_dim=0)
    with pytest.raises(ValueError, match="lacks"):
        tiny(layers=[{"heads": 2}])
    with pytest.raises(ValueError, match="at least one block"):
        tiny(layers=[])
    with pytest.raises(ValueError, match="together"):
        tiny(output_dim=30)
    with pytest.raises(ValueError, match="at most 16 tokens"):
        tiny()(torch.zeros(1, 17, dtype=torch.long), torch.ones(1, 17))
    model = tiny()
    full = Keep.full(model)
    with pytest.raises(ValueError, match="keep.heads"):
        shrink(model, Keep(full.embed, ((), (0, 1)), full.qk, full.v, full.ffn))
    assert isinstance(model, nn.Module)
