"""The Mixtral-style MoE LM: routing, the load-balancing loss, factored experts, the config
and the calibration hook (tiny models, seconds)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from nas.supernets.moe import MoELM, collect_moe_stats
from nas.supernets.moe.model import FactoredLinear, upcycle
from nas.supernets.tasks._lm import PydocLMTask

TINY = {"d_model": 16, "n_heads": 2, "context": 8, "n_layers": 2, "ffn_dim": 24}


def tiny(**overrides: object) -> MoELM:
    torch.manual_seed(0)
    return MoELM(**{**TINY, **overrides}).eval()


def tokens(n: int = 4, t: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (n, t), generator=torch.Generator().manual_seed(1))


def naive_moe(moe: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Token by token: softmax over the top-k router logits, each row's weight to the
    expert ``router_map`` names (weights of rows on one expert add up)."""
    out = torch.zeros_like(x)
    for n, token in enumerate(x):
        logits = moe.router(token)
        values, rows = logits.topk(moe.top_k)
        for weight, row in zip(values.softmax(-1), rows.tolist()):
            expert = moe.experts[int(moe.router_map[row])]
            out[n] += weight * expert(token[None])[0]
    return out


def test_forward_shapes_and_aux_loss() -> None:
    model = tiny()
    logits = model(tokens())
    assert logits.shape == (4, 8, 256)
    assert model.aux_loss.ndim == 0 and model.aux_loss.item() > 0
    model.aux_loss.backward()
    assert model.blocks[0].moe.router.weight.grad.abs().sum() > 0


def test_a_trainer_adds_the_aux_loss_to_the_task_loss() -> None:
    model = tiny().train()
    task = PydocLMTask(context=8)
    batch = task.train_batches(batch_size=4, generator=torch.Generator().manual_seed(0))()
    loss = task.loss(model, batch) + 0.01 * model.aux_loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(moe.router.weight.grad.abs().sum() > 0 for moe in model.moe_layers)


def test_aux_loss_is_one_for_uniform_routing() -> None:
    model = tiny()
    for moe in model.moe_layers:
        torch.nn.init.zeros_(moe.router.weight)
    model(tokens())
    assert model.aux_loss.item() == pytest.approx(1.0, abs=1e-6)


def test_aux_loss_formula() -> None:
    model = tiny()
    x = torch.randn(40, 16)
    moe = model.moe_layers[0]
    moe(x[None])
    logits = moe.router(x)
    chosen = logits.topk(2).indices.reshape(-1)
    share = torch.bincount(chosen, minlength=8).float() / chosen.numel()
    expected = 8 * (share * logits.softmax(-1).mean(0)).sum()
    assert moe.aux_loss.item() == pytest.approx(expected.item(), abs=1e-6)


def test_aux_loss_before_forward_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="forward"):
        _ = tiny().aux_loss


def test_routing_matches_naive_mixtral_routing() -> None:
    model = tiny()
    x = torch.randn(30, 16)
    moe = model.moe_layers[0]
    assert torch.allclose(moe(x[None])[0], naive_moe(moe, x), atol=1e-5)


def test_rows_on_one_expert_add_their_weights() -> None:
    model = tiny(experts_per_layer=[3, 8],
                 router_map=[[0, 0, 1, 1, 2, 2, 0, 1], list(range(8))])
    x = torch.randn(30, 16)
    moe = model.moe_layers[0]
    assert len(moe.experts) == 3 and moe.router.weight.shape == (8, 16)
    assert torch.allclose(moe(x[None])[0], naive_moe(moe, x), atol=1e-5)
    gates = moe.gates(moe.router(x))
    assert torch.allclose(gates.sum(-1), torch.ones(30), atol=1e-6)


def test_factored_expert_is_u_times_v() -> None:
    layer = FactoredLinear(16, 24, rank=4)
    x = torch.randn(5, 16)
    assert layer.matrix().shape == (24, 16)
    assert torch.linalg.matrix_rank(layer.matrix()) == 4
    assert torch.allclose(layer(x), F.linear(x, layer.u @ layer.v), atol=1e-6)


def test_subnet_config_is_json_and_rebuilds() -> None:
    model = tiny(experts_per_layer=[2, 8], router_map=[[0, 1, 1, 0], list(range(8))],
                 expert_ranks=[[4, None], [None] * 8])
    config = json.loads(json.dumps(model.subnet_config()))
    rebuilt = MoELM(**config)
    rebuilt.load_state_dict(model.state_dict())
    x = tokens()
    assert torch.allclose(rebuilt.eval()(x), model(x), atol=1e-6)
    assert rebuilt.moe_layers[0].router.weight.shape == (4, 16)


@pytest.mark.parametrize(("overrides", "match"), [
    ({"d_model": 15}, "multiple of n_heads"),
    ({"n_experts": 0}, "n_experts must be a positive integer"),
    ({"experts_per_layer": [8]}, "one entry per layer"),
    ({"experts_per_layer": [3, 8], "router_map": [[0, 1, 1, 0], list(range(8))]},
     r"router_map\[0\] must map rows onto every expert"),
    ({"expert_ranks": [[None] * 8, [17] + [None] * 7]}, r"expert_ranks\[1\].*1..16"),
])
def test_bad_configs(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny(**overrides)


def test_collect_stats_counts_every_token_and_caps_the_rest() -> None:
    model = tiny()
    stats = collect_moe_stats(model, tokens(6), max_tokens=20, batch_size=4)
    assert len(stats) == 2
    for layer in stats:
        assert int(layer.counts.sum()) == 6 * 8 * 2  # tokens x top-k
        assert layer.inputs.shape == (20, 16) and layer.logits.shape == (20, 8)
        assert layer.outputs.shape == (8, 20, 16)
    first = model.moe_layers[0]
    assert torch.allclose(stats[0].outputs[3], first.experts[3](stats[0].inputs), atol=1e-6)
    assert torch.equal(stats[0].expert_counts([0, 0, 1, 1, 2, 2, 3, 3]),
                       stats[0].counts.view(4, 2).sum(1))


def test_collect_stats_rejects_bad_tokens() -> None:
    with pytest.raises(ValueError, match="tokens must be"):
        collect_moe_stats(tiny(), torch.randn(2, 8))
    with pytest.raises(ValueError, match="max_tokens"):
        collect_moe_stats(tiny(), tokens(), max_tokens=0)


def test_upcycling_copies_the_dense_ffn_into_every_expert_and_keeps_the_output() -> None:
    torch.manual_seed(0)
    dense = MoELM(d_model=16, n_heads=2, context=8, n_layers=2, ffn_dim=12, n_experts=1,
                  top_k=1).eval()
    sparse = upcycle(dense, n_experts=4, top_k=2).eval()
    assert sparse.experts_per_layer == [4, 4] and sparse.top_k == 2
    for old, new in zip(dense.moe_layers, sparse.moe_layers):
        assert new.router.weight.shape == (4, 16)
        for expert in new.experts:
            for name in ("w1", "w2", "w3"):
                assert torch.equal(getattr(expert, name).weight,
                                   getattr(old.experts[0], name).weight)
    tokens = torch.randint(0, 256, (3, 8))
    torch.testing.assert_close(sparse(tokens), dense(tokens), atol=1e-5, rtol=0)
    routers = [moe.router.weight for moe in sparse.moe_layers]
    assert not torch.equal(routers[0], routers[1])  # fresh, not copies


def test_upcycling_needs_a_dense_model() -> None:
    with pytest.raises(ValueError, match="n_experts=1"):
        upcycle(MoELM(d_model=16, n_heads=2, n_layers=1, ffn_dim=8, n_experts=2, top_k=1),
                n_experts=4, top_k=2)
