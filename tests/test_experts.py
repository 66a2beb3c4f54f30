"""Expert merging and pruning (Sub-MoE and baselines) on tiny MoE LMs (seconds)."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas.compress._experts import (
    allocate_experts,
    apply_plan,
    list_merge_methods,
    merge_experts,
    naee_choice,
    output_similarity,
    plan_experts,
    prune_experts,
    subspace_merge,
)
from nas.supernets._export import save_subnet
from nas.supernets.moe import MoELM, collect_moe_stats
from nas.supernets.tasks._lm import PydocLMTask

TINY = {"d_model": 16, "n_heads": 2, "context": 16, "n_layers": 2, "ffn_dim": 24}
METHODS = ["freq-avg", "hc-smoe", "naee", "prune", "random", "sub-moe"]


def tiny() -> MoELM:
    torch.manual_seed(0)
    return MoELM(**TINY).eval()


@pytest.fixture(scope="module")
def calib() -> torch.Tensor:
    inputs, _ = PydocLMTask(context=16).windows("validation", limit=12)
    return inputs


@pytest.fixture(scope="module")
def planted() -> MoELM:
    """Layer 0: expert 1 is expert 0 plus tiny noise, expert 3 is expert 2 plus noise."""
    model = tiny()
    experts = model.moe_layers[0].experts
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for source, copy in ((0, 1), (2, 3)):
            for name in ("w1", "w2", "w3"):
                weight = getattr(experts[source], name).weight
                noise = 1e-4 * torch.randn(weight.shape, generator=generator)
                getattr(experts[copy], name).weight.copy_(weight + noise)
    return model


def test_methods_are_listed() -> None:
    assert list_merge_methods() == METHODS


@pytest.mark.parametrize("method", METHODS)
def test_as_many_groups_as_experts_leaves_logits_unchanged(
        method: str, calib: torch.Tensor) -> None:
    model = tiny()
    merged = merge_experts(model, calib, experts=16, method=method)
    assert merged.experts_per_layer == [8, 8]
    assert torch.allclose(merged(calib), model(calib), atol=1e-5)


@pytest.mark.parametrize("shared", ["output", "input"])
@pytest.mark.parametrize("shape", [(24, 16), (16, 24)])
def test_full_rank_merge_is_the_frequency_weighted_average(shape: tuple, shared: str) -> None:
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(shape, generator=generator) for _ in range(3)]
    counts = torch.tensor([5.0, 1.0, 2.0])
    u, v = subspace_merge(weights, counts, shared=shared)
    f = counts / counts.sum()
    average = sum(fi * w for fi, w in zip(f, weights))
    assert torch.allclose(u @ v, average, atol=1e-5)


@pytest.mark.parametrize("shared", ["output", "input"])
@pytest.mark.parametrize("shape", [(24, 16), (16, 24)])
def test_rank_r_merge_is_the_average_projected_on_the_shared_subspace(
        shape: tuple, shared: str) -> None:
    generator = torch.Generator().manual_seed(1)
    weights = [torch.randn(shape, generator=generator) for _ in range(3)]
    counts = torch.tensor([1.0, 3.0, 4.0])
    u, v = subspace_merge(weights, counts, rank=5, shared=shared)
    assert u.shape == (shape[0], 5) and v.shape == (5, shape[1])
    f = counts / counts.sum()
    average = sum(fi * w for fi, w in zip(f, weights))
    if shared == "output":  # U_r of [W_1 ... W_n]: the output side
        basis = torch.linalg.svd(torch.cat(weights, dim=1)).U[:, :5]
        expected = basis @ basis.T @ average
    else:  # U_r of [W_1^T ... W_n^T]: the input side
        basis = torch.linalg.svd(torch.cat([w.T for w in weights], dim=1)).U[:, :5]
        expected = average @ basis @ basis.T
    assert torch.allclose(u @ v, expected, atol=1e-5)


def test_sub_moe_at_full_rank_equals_freq_avg_on_the_same_groups(calib: torch.Tensor) -> None:
    model = tiny()
    sub = merge_experts(model, calib, experts=10, method="sub-moe")
    avg = merge_experts(model, calib, experts=10, method="freq-avg")
    assert sub.router_map == avg.router_map
    assert torch.allclose(sub(calib), avg(calib), atol=1e-5)


def test_rank_merge_stores_factors(calib: torch.Tensor) -> None:
    merged = merge_experts(tiny(), calib, experts=12, method="sub-moe", rank=6)
    assert merged.expert_ranks == [[6] * e for e in merged.experts_per_layer]
    expert = merged.moe_layers[0].experts[0]
    assert expert.w1.u.shape == (24, 6) and expert.w2.v.shape == (6, 24)


@pytest.mark.parametrize("method", ["sub-moe", "hc-smoe"])
def test_planted_duplicates_are_grouped(method: str, planted: MoELM,
                                        calib: torch.Tensor) -> None:
    merged = merge_experts(planted, calib, experts=14, method=method, allocation="redundancy")
    assert merged.experts_per_layer == [6, 8]  # the two cheap merges are in layer 0
    rows = merged.router_map[0]
    assert rows[0] == rows[1] and rows[2] == rows[3]
    assert len({rows[0], rows[2], *rows[4:]}) == 6
    stats = collect_moe_stats(planted, calib)
    plans = plan_experts(planted, stats, experts=14, method=method,
                         allocation="redundancy")
    assert plans[0].groups == ((0, 1), (2, 3), (4,), (5,), (6,), (7,))


def test_grouping_is_deterministic_given_the_seed(calib: torch.Tensor) -> None:
    model = tiny()
    for method in ("sub-moe", "random"):
        first = merge_experts(model, calib, experts=9, method=method, seed=4)
        again = merge_experts(model, calib, experts=9, method=method, seed=4)
        assert first.router_map == again.router_map
        assert torch.equal(first(calib), again(calib))


def test_prune_keeps_the_most_routed_experts(calib: torch.Tensor) -> None:
    model = tiny()
    stats = collect_moe_stats(model, calib)
    plans = plan_experts(model, stats, experts=8, method="prune", allocation="uniform")
    for plan, layer in zip(plans, stats):
        kept = [g[0] for g in plan.groups]
        ranked = sorted(range(8), key=lambda e: (-int(layer.counts[e]), e))[:4]
        assert kept == sorted(ranked) and plan.rows == tuple(kept)


def test_naee_choice_is_the_argmin_over_all_subsets(calib: torch.Tensor) -> None:
    model = tiny()
    stats = collect_moe_stats(model, calib)
    plans = plan_experts(model, stats, experts=11, method="naee")
    keep = len(plans[0].groups)
    chosen = tuple(g[0] for g in plans[0].groups)
    x = stats[0].inputs[None]  # (1, N, C): layer 0's calibration inputs
    with torch.no_grad():
        full = model.moe_layers[0](x)
        errors = {}
        for subset in itertools.combinations(range(8), keep):
            pruned = prune_experts(model, [subset, range(8)])
            errors[subset] = float((pruned.moe_layers[0](x) - full).square().sum())
    best = min(errors.values())
    assert errors[chosen] <= best + 1e-6 * max(1.0, best)
    picked, scored = naee_choice(stats[0], model.router_map[0], 2, keep)
    assert picked == chosen and len(scored) == len(errors)


def test_allocation_uniform_and_redundancy(planted: MoELM, calib: torch.Tensor) -> None:
    stats = collect_moe_stats(planted, calib)
    sims = [output_similarity(s) for s in stats]
    assert sum(allocate_experts(sims, 11, allocation="uniform")) == 11
    assert sorted(allocate_experts(sims, 11, allocation="uniform")) == [5, 6]
    assert allocate_experts(sims, 14, allocation="redundancy") == [6, 8]
    assert allocate_experts(sims, 14) == [7, 7]  # the default spreads the target evenly
    assert allocate_experts(sims, 2) == [1, 1]


def test_merged_model_round_trips_through_export(tmp_path: Path, calib: torch.Tensor) -> None:
    """save_subnet, then load_subnet in a fresh process: same router_map, same logits."""
    merged = merge_experts(tiny(), calib, experts=11, method="sub-moe", rank=6)
    again = merge_experts(merged, calib, experts=8, method="hc-smoe")  # merge a merged model
    torch.save(calib, tmp_path / "calib.pt")
    for name, model in (("merged", merged), ("again", again)):
        save_subnet(model, tmp_path / name, family="moe-lm")
        torch.save(model(calib).detach(), tmp_path / f"{name}.pt")
    script = (
        "import sys, torch\n"
        "import nas.supernets.moe\n"
        "from nas.supernets._export import load_subnet\n"
        "d = sys.argv[1]\n"
        "for name in ('merged', 'again'):\n"
        "    model = load_subnet(f'{d}/{name}')\n"
        "    out, ref = model(torch.load(f'{d}/calib.pt')), torch.load(f'{d}/{name}.pt')\n"
        "    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()\n"
        "    print(model.subnet_config()['router_map'])\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [str(merged.router_map), str(again.router_map)]
    assert again.expert_ranks == [[None] * e for e in again.experts_per_layer]


def test_bad_inputs_are_one_line_errors(calib: torch.Tensor) -> None:
    model = tiny()
    cases = [
        (dict(experts=17), r"experts=17 is more than the model has: 16 experts"),
        (dict(experts=1), "fewer than one per layer"),
        (dict(experts=8, rank=17), r"rank=17 is above the rank .* \(at most 16\)"),
        (dict(experts=8, method="merge"), r"method must be one of \['freq-avg', 'hc-smoe', "
                                          r"'naee', 'prune', 'random', 'sub-moe'\]"),
        (dict(experts=8, allocation="greedy"), "allocation must be one of"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match) as info:
            merge_experts(model, calib, **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="must be a MoELM with MoE experts, got Linear"):
        merge_experts(torch.nn.Linear(2, 2), calib, experts=2)
    with pytest.raises(ValueError, match="rank=25 is above"):
        subspace_merge([torch.randn(24, 30)], [1.0], rank=25)
    with pytest.raises(ValueError, match="frequencies are needed"):
        stats = collect_moe_stats(model, calib)
        apply_plan(model, plan_experts(model, stats, experts=8))
