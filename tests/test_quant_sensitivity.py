"""HAWQ sensitivity and bit allocation: Hutchinson traces against Hessians known in
closed form, the sensitivity's ranking against measured loss increases on a trained MLP,
and the integer program against brute force."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

from nas.quant._allocate import allocate_bits
from nas.quant._quantizers import fake_quantize_weight, quantized_bytes
from nas.quant._sensitivity import hessian_traces, perturbations, sensitivity


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: one thread is fastest, and immune to a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------- traces


class Quadratic(nn.Module):
    """Layers whose loss is ``0.5 * sum(a * w**2)`` per weight: a diagonal Hessian
    ``diag(a)``, so its trace is known and Rademacher probes give it exactly."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(5, 4)
        self.fc2 = nn.Linear(4, 3)
        self.conv = nn.Conv2d(2, 3, 3)
        self.curvature = {
            "fc1": torch.rand(4, 5) + 0.5,
            "fc2": 4 * torch.rand(4, 3).T + 1,
            "conv": torch.rand(3, 2, 3, 3) * 0.1,
        }

    def loss(self) -> torch.Tensor:
        total = torch.zeros(())
        for name, a in self.curvature.items():
            w = getattr(self, name).weight
            total = total + 0.5 * (a * w**2).sum() + w.sum()  # the linear term: no curvature
        return total


def test_trace_is_exact_for_a_diagonal_hessian() -> None:
    model = Quadratic()
    units = {"first": ["fc1"], "rest": ["fc2", "conv"]}
    a = model.curvature
    exact = {
        "first": float(a["fc1"].mean()),
        "rest": float((a["fc2"].sum() + a["conv"].sum()) / (a["fc2"].numel() + a["conv"].numel())),
    }
    for samples, seed in [(1, 0), (3, 7)]:
        got = hessian_traces(model, lambda m: m.loss(), units, samples=samples, seed=seed)
        assert list(got) == ["first", "rest"]
        for unit in units:
            assert got[unit] == pytest.approx(exact[unit], rel=1e-5)


def test_trace_of_linear_regression_is_close_with_enough_samples() -> None:
    """``0.5 * ||X W^T - Y||^2 / n`` has Hessian ``I kron X^T X / n`` in ``W`` (the bias
    is not part of the unit), so the average trace is ``tr(X^T X) / (n * d_in)``."""
    g = torch.Generator().manual_seed(0)
    n, d_in, d_out = 64, 8, 5
    x = torch.randn(n, d_in, generator=g) * torch.linspace(0.5, 2.0, d_in)
    x[:, 1] += 0.5 * x[:, 0]  # correlated columns: off-diagonal curvature to average out
    y = torch.randn(n, d_out, generator=g)
    model = nn.Sequential(nn.Linear(d_in, d_out))

    def loss_fn(m: nn.Module) -> torch.Tensor:
        return 0.5 * (m(x) - y).square().sum() / n

    exact = float((x.T @ x).trace() / (n * d_in))
    got = hessian_traces(model, loss_fn, {"fc": ["0"]}, samples=256)["fc"]
    assert got == pytest.approx(exact, rel=0.03)
    # Seeded: the same seed repeats the estimate, another seed gives another one.
    assert hessian_traces(model, loss_fn, {"fc": ["0"]}, samples=4, seed=1) == (
        hessian_traces(model, loss_fn, {"fc": ["0"]}, samples=4, seed=1)
    )
    assert hessian_traces(model, loss_fn, {"fc": ["0"]}, samples=4, seed=2) != (
        hessian_traces(model, loss_fn, {"fc": ["0"]}, samples=4, seed=1)
    )


def test_trace_matches_the_exact_hessian_of_a_conv_net() -> None:
    """Two units whose Hessian has off-diagonal and cross-unit blocks (tanh between a
    Conv2d and a Linear): the shared Hutchinson passes still estimate each block's trace."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8, 3))
    x, y = torch.randn(16, 2, 4, 4), torch.randn(16, 3)

    def loss_fn(m: nn.Module) -> torch.Tensor:
        return F.mse_loss(m(x), y)

    names = ["0.weight", "3.weight"]
    params = dict(model.named_parameters())

    def as_function(conv_w: torch.Tensor, fc_w: torch.Tensor) -> torch.Tensor:
        given = {**params, names[0]: conv_w, names[1]: fc_w}
        return F.mse_loss(torch.func.functional_call(model, given, (x,)), y)

    blocks = torch.autograd.functional.hessian(as_function, tuple(params[n] for n in names))
    exact = {
        "conv": float(blocks[0][0].reshape(36, 36).trace() / 36),
        "fc": float(blocks[1][1].reshape(24, 24).trace() / 24),
    }
    got = hessian_traces(model, loss_fn, {"conv": ["0"], "fc": ["3"]}, samples=1000)
    for unit in exact:
        assert got[unit] == pytest.approx(exact[unit], rel=0.1)


def test_traces_leave_flags_modes_and_grads_as_they_were() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Tanh(), nn.Linear(8, 2))
    model.train()
    model[3].eval()  # a mixed tree of modes comes back mixed
    model[0].weight.requires_grad_(False)  # a frozen unit still has a curvature
    x, y = torch.randn(32, 4), torch.randn(32, 2)
    seen = []

    def loss_fn(m: nn.Module) -> torch.Tensor:
        seen.append((m.training, m[1].training))
        return F.mse_loss(m(x), y)

    first = hessian_traces(model, loss_fn, {"a": ["0"], "b": ["3"]}, samples=2)
    second = hessian_traces(model, loss_fn, {"a": ["0"], "b": ["3"]}, samples=2)
    assert first == second  # eval mode: no dropout noise
    assert first["a"] > 0 and first["b"] > 0
    assert set(seen) == {(False, False)}
    assert [m.training for m in model] == [True, True, True, False]
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True]
    assert all(p.grad is None for p in model.parameters())


def test_a_weight_the_loss_ignores_has_zero_trace() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    x = torch.randn(4, 3)
    got = hessian_traces(model, lambda m: m[0](x).square().sum(), {"a": ["0"], "b": ["1"]})
    assert got["b"] == 0.0 and got["a"] > 0


@pytest.mark.parametrize(
    ("units", "samples", "match"),
    [
        ({"u": ["nope"]}, 1, "no module 'nope'"),
        ({"u": ["1"]}, 1, "ReLU, not a Linear"),
        ({"u": ["0"], "v": ["0"]}, 1, "in both unit"),
        ({"u": "0"}, 1, "must list module names"),
        ({"u": []}, 1, "lists no modules"),
        ({"u": ["0"]}, 0, "samples must be at least 1"),
    ],
)
def test_bad_units_are_refused(units, samples, match) -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with pytest.raises(ValueError, match=match):
        hessian_traces(model, lambda m: m(torch.ones(1, 2)).sum(), units, samples=samples)


# ----------------------------------------------------------------------- perturbations


def test_perturbations_are_the_squared_quantization_error() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Conv1d(5, 4, 3))
    got = perturbations(model, {"lin": ["0"], "both": ["1"]}, [2, 4, 8, 16, 32])
    w = model[0].weight.detach()
    assert got["lin"][4] == pytest.approx(float((fake_quantize_weight(w, 4) - w).square().sum()))
    for unit in got:
        assert list(got[unit]) == [2, 4, 8, 16, 32]
        assert got[unit][2] > got[unit][4] > got[unit][8] > got[unit][16] > got[unit][32] == 0.0
    with torch.no_grad():
        model[0].weight.mul_(3)  # symmetric min-max: the grid scales with the weights
    assert perturbations(model, {"lin": ["0"]}, [4])["lin"][4] == pytest.approx(
        9 * got["lin"][4], rel=1e-4
    )
    with pytest.raises(ValueError, match="2 to 8 bits"):
        perturbations(model, {"lin": ["0"]}, [1])
    with pytest.raises(ValueError, match="at least one bit width"):
        perturbations(model, {"lin": ["0"]}, [])


# ------------------------------------------------------------------------- sensitivity


def test_sensitivity_ranks_curvature_and_weight_range() -> None:
    """Same weights, 4x the curvature: 4x the sensitivity; same curvature, 3x the
    weights: 9x (the quantization error scales with the range)."""
    torch.manual_seed(0)
    model = nn.ModuleDict({n: nn.Linear(6, 4) for n in ("flat", "curved", "wide")})
    with torch.no_grad():
        model["curved"].weight.copy_(model["flat"].weight)
        model["wide"].weight.copy_(3 * model["flat"].weight)
    scale = {"flat": 1.0, "curved": 4.0, "wide": 1.0}

    def loss_fn(m: nn.Module) -> torch.Tensor:
        return sum(0.5 * scale[n] * m[n].weight.square().sum() for n in scale)

    units = {n: [n] for n in scale}
    got = sensitivity(model, loss_fn, units, [2, 4, 8, 32], samples=1)
    for b in (2, 4, 8):
        assert got["curved"][b] == pytest.approx(4 * got["flat"][b], rel=1e-5)
        assert got["wide"][b] == pytest.approx(9 * got["flat"][b], rel=1e-3)
        assert got["wide"][b] > got["curved"][b] > got["flat"][b] > 0
    assert {got[n][32] for n in units} == {0.0}


@pytest.fixture(scope="module")
def mlp() -> tuple[nn.Sequential, torch.Tensor]:
    """Six Linear layers of uneven widths fitted to a smooth synthetic target (seeded),
    and the inputs; tests must leave its weights as they found them."""
    torch.manual_seed(0)
    widths = [8, 48, 12, 64, 16, 32, 3]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers += [nn.Linear(a, b)] + ([nn.Tanh()] if i < len(widths) - 2 else [])
    model = nn.Sequential(*layers)
    x = torch.randn(256, widths[0])
    y = torch.sin(x @ torch.randn(widths[0], widths[-1]))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()
    return model, x


def test_sensitivity_ranks_units_like_the_measured_loss_increase(mlp) -> None:
    """Quantize each of six layers alone to 4 bits and measure the loss increase; HAWQ's
    Omega should order the layers the same way. The loss is the distance to the float
    model's own outputs: its minimum is exactly the trained weights (gradient 0, the
    point HAWQ's second-order expansion assumes), so the first-order term does not blur
    the comparison as an unconverged task loss would."""
    model, x = mlp
    with torch.no_grad():
        target = model(x)

    def loss_fn(m: nn.Module) -> torch.Tensor:
        return F.mse_loss(m(x), target)

    names = [n for n, m in model.named_children() if isinstance(m, nn.Linear)]
    omega = sensitivity(model, loss_fn, {n: [n] for n in names}, [4], samples=64)
    measured = []
    with torch.no_grad():
        for n in names:
            w = model.get_submodule(n).weight
            kept = w.clone()
            w.copy_(fake_quantize_weight(w, 4))
            measured.append(float(loss_fn(model)))
            w.copy_(kept)
    rho = spearmanr([omega[n][4] for n in names], measured).statistic
    assert len(names) == 6 and rho >= 0.7


def test_sensitivity_and_sizes_drive_the_allocation(mlp) -> None:
    """End to end: Omegas and byte costs of the trained MLP, a size budget halfway
    between all-4-bit and all-8-bit: a mixed policy within the budget."""
    model, x = mlp
    with torch.no_grad():
        target = model(x)
    names = [n for n, m in model.named_children() if isinstance(m, nn.Linear)]
    bits = [4, 8]
    omega = sensitivity(model, lambda m: F.mse_loss(m(x), target), {n: [n] for n in names},
                        bits, samples=8)
    cost = {}
    for n in names:
        w = model.get_submodule(n).weight
        cost[n] = {b: quantized_bytes(w.numel(), w.shape[0], b) for b in bits}
    low, high = (sum(cost[n][b] for n in names) for b in bits)
    policy = allocate_bits(omega, cost, (low + high) / 2)
    assert set(policy.values()) == {4, 8}
    assert sum(cost[n][policy[n]] for n in names) <= (low + high) / 2


# --------------------------------------------------------------------------- allocation


def brute_force(sens, cost, budget):
    """The least total sensitivity over every policy within the budget, and its policy."""
    units = list(sens)
    best = None
    for choice in itertools.product(*(sorted(sens[u]) for u in units)):
        if sum(cost[u][b] for u, b in zip(units, choice)) <= budget:
            total = sum(sens[u][b] for u, b in zip(units, choice))
            if best is None or total < best[0]:
                best = (total, dict(zip(units, choice)))
    return best


def random_instance(seed: int, units: int = 4, widths=(2, 4, 8)):
    """Sensitivities falling and costs rising with the bits, as quantization has them."""
    rng = random.Random(seed)
    sens, cost = {}, {}
    for i in range(units):
        curvature, size = 10 ** rng.uniform(-3, 1), rng.uniform(1, 100)
        sens[f"u{i}"] = {b: curvature * 4.0 ** -b * rng.uniform(0.5, 2) for b in widths}
        cost[f"u{i}"] = {b: size * b / 8 + rng.uniform(0, 1) for b in widths}
    return sens, cost


@pytest.mark.parametrize("seed", range(6))
def test_allocation_matches_brute_force(seed: int) -> None:
    sens, cost = random_instance(seed)
    low = sum(min(c.values()) for c in cost.values())
    high = sum(max(c.values()) for c in cost.values())
    rng = random.Random(100 + seed)
    for budget in [low + rng.random() * (high - low) for _ in range(5)]:
        total, expected = brute_force(sens, cost, budget)
        policy = allocate_bits(sens, cost, budget)
        assert sum(cost[u][b] for u, b in policy.items()) <= budget
        assert sum(sens[u][b] for u, b in policy.items()) == pytest.approx(total, rel=1e-12)
        assert policy == expected


def test_budget_is_inclusive_and_the_cheapest_policy_is_feasible() -> None:
    sens, cost = random_instance(0)
    cheapest = sum(min(c.values()) for c in cost.values())
    assert allocate_bits(sens, cost, cheapest) == {u: 2 for u in sens}
    exact = {"u0": 8, "u1": 4, "u2": 2, "u3": 8}
    spent = sum(cost[u][b] for u, b in exact.items())
    policy = allocate_bits(sens, cost, spent)
    assert sum(cost[u][b] for u, b in policy.items()) <= spent
    assert brute_force(sens, cost, spent)[1] == policy


def test_an_infeasible_budget_names_the_cheapest_cost() -> None:
    sens, cost = random_instance(1)
    cheapest = sum(min(c.values()) for c in cost.values())
    with pytest.raises(ValueError, match=f"smallest achievable cost {re_float(cheapest)}"):
        allocate_bits(sens, cost, cheapest * 0.999)


def re_float(value: float) -> str:
    return str(value).replace(".", r"\.")


def test_a_loose_budget_gives_every_unit_its_highest_width() -> None:
    sens, cost = random_instance(2)
    assert allocate_bits(sens, cost, 1e9) == {u: 8 for u in sens}


def test_ties_go_to_more_bits() -> None:
    """A unit the loss does not feel (Omega 0 at every width) takes the widest width the
    budget leaves after the others' best policy; so do exact ties between widths."""
    sens = {"felt": {4: 1.0, 8: 0.1}, "unfelt": {4: 0.0, 8: 0.0, 16: 0.0}}
    cost = {"felt": {4: 4.0, 8: 8.0}, "unfelt": {4: 4.0, 8: 8.0, 16: 16.0}}
    assert allocate_bits(sens, cost, 24.0) == {"felt": 8, "unfelt": 16}
    assert allocate_bits(sens, cost, 23.0) == {"felt": 8, "unfelt": 8}
    assert allocate_bits(sens, cost, 12.0) == {"felt": 8, "unfelt": 4}
    assert allocate_bits(sens, cost, 8.0) == {"felt": 4, "unfelt": 4}
    same = {"a": {4: 0.5, 8: 0.5}}
    assert allocate_bits(same, {"a": {4: 1.0, 8: 2.0}}, 5.0) == {"a": 8}


def test_no_units() -> None:
    assert allocate_bits({}, {}, 0.0) == {}
    with pytest.raises(ValueError, match="smallest achievable cost 0"):
        allocate_bits({}, {}, -1.0)


@pytest.mark.parametrize(
    ("sens", "cost", "budget", "match"),
    [
        ({"a": {4: 1.0}}, {"b": {4: 1.0}}, 5.0, "same units"),
        ({"a": {4: 1.0, 8: 0.5}}, {"a": {4: 1.0}}, 5.0, "widths"),
        ({"a": {}}, {"a": {}}, 5.0, "no bit width"),
        ({"a": {4.0: 1.0}}, {"a": {4.0: 1.0}}, 5.0, "must be integers"),
        ({"a": {4: math.nan}}, {"a": {4: 1.0}}, 5.0, "must be finite"),
        ({"a": {4: 1.0}}, {"a": {4: math.inf}}, 5.0, "must be finite"),
        ({"a": {4: "x"}}, {"a": {4: 1.0}}, 5.0, "must be a number"),
        ({"a": {4: 1.0}}, {"a": {4: 1.0}}, math.inf, "budget must be finite"),
    ],
)
def test_bad_allocation_inputs_are_refused(sens, cost, budget, match) -> None:
    with pytest.raises(ValueError, match=match):
        allocate_bits(sens, cost, budget)
