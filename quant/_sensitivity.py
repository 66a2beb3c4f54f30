"""Hessian-aware sensitivity of weight quantization (HAWQ's Omega).

Quantizing the weights ``W`` of a unit (one or more layers that get one bit width) to
``b`` bits moves them by ``dW = Q_b(W) - W``; near a minimum the loss grows by about
``0.5 * dW^T H dW``. HAWQ-V2 (Dong et al., NeurIPS 2020, arXiv 1911.03852) replaces the
unknown direction of ``dW`` by the average curvature of the unit,
``Omega_b = Tr(H) / n * ||Q_b(W) - W||^2`` (``n`` the unit's weight count), and
estimates ``Tr(H)`` with Hutchinson's method: ``E[v^T H v] = Tr(H)`` for Rademacher
``v``, each ``H v`` one double backward pass (PyHessian, Yao et al., 2020). HAWQ-V3
(arXiv 2011.10680) feeds these Omegas to the integer program of :mod:`._allocate`.

All three functions return plain dicts keyed by unit name (in ``units`` order), so the
results go straight into :func:`~nas.quant._allocate.allocate_bits` and into JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from nas.quant._modules import QUANTIZABLE
from nas.quant._quantizers import fake_quantize_weight

__all__ = ["LossFn", "Units", "hessian_traces", "perturbations", "sensitivity"]

LossFn = Callable[[nn.Module], Tensor]
"""``loss_fn(model) -> scalar``: the loss on fixed calibration data (the same every call;
a mean over several batches inside it gives the dataset's Hessian, as HAWQ averages)."""

Units = Mapping[str, Sequence[str]]
"""Unit name -> names (as in ``model.named_modules()``) of the layers that share its bits."""



def _unit_weights(model: nn.Module, units: Units) -> dict[str, list[nn.Parameter]]:
    """The ``.weight`` of every layer of every unit; a layer in two units is an error
    (it could not take two bit widths)."""
    owner: dict[str, str] = {}
    weights: dict[str, list[nn.Parameter]] = {}
    for unit, names in units.items():
        if isinstance(names, str):
            raise ValueError(f"unit {unit!r} must list module names, got the string {names!r}")
        if len(names) == 0:
            raise ValueError(f"unit {unit!r} lists no modules")
        weights[unit] = []
        for name in names:
            try:
                module = model.get_submodule(name)
            except AttributeError:
                raise ValueError(f"unit {unit!r}: the model has no module {name!r}") from None
            if not isinstance(module, QUANTIZABLE):
                raise ValueError(
                    f"unit {unit!r}: module {name!r} is a {type(module).__name__}, "
                    "not a Linear, Conv1d or Conv2d"
                )
            if name in owner:
                raise ValueError(f"module {name!r} is in both unit {owner[name]!r} and {unit!r}")
            owner[name] = unit
            weights[unit].append(module.weight)
    return weights


def _rademacher(like: Tensor, generator: torch.Generator) -> Tensor:
    """+-1 with equal odds, drawn on the CPU (same numbers on every device)."""
    bits = torch.randint(0, 2, like.shape, generator=generator)
    return (2 * bits - 1).to(dtype=like.dtype, device=like.device)


def hessian_traces(
    model: nn.Module,
    loss_fn: LossFn,
    units: Units,
    *,
    samples: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """Average Hessian trace per weight of each unit, ``Tr(H_uu) / n_u`` (HAWQ-V2).

    Hutchinson's estimator: ``samples`` Rademacher vectors ``v`` (one block per unit
    weight, from a generator seeded with ``seed``), each ``H v`` a backward pass of
    ``g . v`` through the gradient ``g`` of ``loss_fn(model)`` taken once with
    ``create_graph=True`` (PyHessian's single-batch scheme); the unit's estimate is the
    mean of ``v_u . (H v)_u``. One pass serves every unit, and a unit's blocks only see
    their own diagonal block ``H_uu`` in expectation (cross terms average to 0). A
    diagonal ``H_uu`` is estimated exactly by any one sample (``v_i**2 = 1``).

    The model runs in eval mode (no dropout, batch-norm statistics frozen): the curvature
    of the function that will be quantized. Gradients flow to the unit weights only;
    ``requires_grad`` flags, train/eval modes and ``.grad`` fields are as they were
    afterwards.

    Returns:
        unit name -> trace / weight count, in ``units`` order. Not clamped: away from a
        minimum a trace may be negative, and that is what the estimate says.

    Raises:
        ValueError: ``samples`` below 1, or a unit naming no module, a missing module,
            one that is not ``nn.Linear``/``Conv1d``/``Conv2d``, or one in two units.
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    weights = _unit_weights(model, units)
    flat = [w for ws in weights.values() for w in ws]
    unit_of = [u for u, ws in weights.items() for _ in ws]
    totals: dict[str, Tensor | float] = dict.fromkeys(weights, 0.0)
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        for p in params:
            p.requires_grad_(False)
        for w in flat:
            w.requires_grad_(True)
        # Fused attention kernels have no double backward: the math kernel does.
        with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
            loss = loss_fn(model)
            if loss.numel() != 1:
                raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
            if loss.requires_grad:
                grads = torch.autograd.grad(loss, flat, create_graph=True, allow_unused=True)
            else:  # the loss does not depend on any unit weight
                grads = (None,) * len(flat)
            # A weight the loss ignores, or in which it is linear, has no curvature.
            live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
            generator = torch.Generator().manual_seed(seed)
            hvp = _double_backward(grads, flat, live)
            for _ in range(samples):
                vs = [_rademacher(w, generator) for w in flat]  # drawn for all: seed-stable
                if not live:
                    continue
                try:
                    hvs = hvp(vs)
                except RuntimeError as err:
                    if "not implemented" not in str(err):
                        raise
                    hvp = _central_difference(model, loss_fn, flat, live)  # e.g. hardswish
                    hvs = hvp(vs)
                for i, hv in zip(live, hvs):
                    if hv is not None:
                        totals[unit_of[i]] += (hv.detach() * vs[i]).double().sum()
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode
    return {
        u: float(totals[u]) / samples / sum(w.numel() for w in ws) for u, ws in weights.items()
    }


def _double_backward(grads: Sequence[Tensor | None], flat: list[Tensor], live: list[int]):
    """``H v`` as the gradient of ``g . v`` (exact; needs every op's double backward)."""
    def hvp(vs: list[Tensor]) -> Sequence[Tensor | None]:
        return torch.autograd.grad([grads[i] for i in live], [flat[i] for i in live],
                                   grad_outputs=[vs[i] for i in live], retain_graph=True,
                                   allow_unused=True)
    return hvp


FINITE_STEP = 1e-3
"""Step of the central difference, relative to the weights' norm over the vector's."""


def _central_difference(model: nn.Module, loss_fn: LossFn, flat: list[Tensor],
                        live: list[int]):
    """``H v ~= (g(w + e v) - g(w - e v)) / 2e``, for models with an op that has no double
    backward (hardswish, hardsigmoid): two plain backward passes, error O(e**2)."""
    weights = [flat[i] for i in live]

    def gradient(vs: list[Tensor], step: float) -> list[Tensor]:
        with torch.no_grad():
            for w, i in zip(weights, live):
                w.add_(vs[i], alpha=step)
        try:
            grads = torch.autograd.grad(loss_fn(model), weights, allow_unused=True)
        finally:
            with torch.no_grad():
                for w, i in zip(weights, live):
                    w.sub_(vs[i], alpha=step)
        return [g if g is not None else torch.zeros_like(w) for g, w in zip(grads, weights)]

    def hvp(vs: list[Tensor]) -> list[Tensor]:
        norm_w = torch.sqrt(sum((w.detach() ** 2).sum() for w in weights))
        norm_v = torch.sqrt(sum((vs[i] ** 2).sum() for i in live))
        step = float(FINITE_STEP * norm_w / norm_v) if norm_w > 0 else FINITE_STEP
        plus, minus = gradient(vs, step), gradient(vs, -step)
        return [(a - b) / (2 * step) for a, b in zip(plus, minus)]
    return hvp


def _widths(bits: Iterable[int]) -> list[int]:
    widths = list(dict.fromkeys(bits))
    if not widths:
        raise ValueError("bits must hold at least one bit width")
    for b in widths:
        if isinstance(b, bool) or not isinstance(b, int):
            raise ValueError(f"bit widths must be integers, got {b!r}")
    return widths


def perturbations(
    model: nn.Module, units: Units, bits: Iterable[int]
) -> dict[str, dict[int, float]]:
    """``||Q_b(W) - W||^2`` summed over each unit's weights, for every ``b`` in ``bits``.

    ``Q_b`` is :func:`~nas.quant._quantizers.fake_quantize_weight` (per-channel symmetric
    min-max; 16 rounds to fp16, 32 is the identity and gives 0): the perturbation the
    deployed integer weights really have.

    Returns:
        unit name -> {bits: squared perturbation}, in ``units`` and ``bits`` order.

    Raises:
        ValueError: no bit width, a width that is not an integer or that
            ``fake_quantize_weight`` rejects (2 to 8, 16, 32), or a bad unit (see
            :func:`hessian_traces`).
    """
    widths = _widths(bits)
    weights = _unit_weights(model, units)
    out: dict[str, dict[int, float]] = {}
    with torch.no_grad():
        for unit, ws in weights.items():
            out[unit] = {
                b: sum(
                    float((fake_quantize_weight(w, b) - w).double().square().sum()) for w in ws
                )
                for b in widths
            }
    return out


def sensitivity(
    model: nn.Module,
    loss_fn: LossFn,
    units: Units,
    bits: Iterable[int],
    *,
    samples: int = 16,
    seed: int = 0,
) -> dict[str, dict[int, float]]:
    """HAWQ's ``Omega_u(b) = Tr(H_uu) / n_u * ||Q_b(W_u) - W_u||^2`` per unit and width.

    The second-order estimate of the loss increase from quantizing unit ``u`` alone to
    ``b`` bits, up to the factor 1/2 (which no ranking or allocation depends on).

    Returns:
        unit name -> {bits: Omega}, in ``units`` and ``bits`` order; the
        ``sensitivity`` argument of :func:`~nas.quant._allocate.allocate_bits`.

    Raises:
        ValueError: as :func:`hessian_traces` and :func:`perturbations`.
    """
    widths = _widths(bits)
    deltas = perturbations(model, units, widths)  # validates before the costly passes
    traces = hessian_traces(model, loss_fn, units, samples=samples, seed=seed)
    return {u: {b: traces[u] * d for b, d in by_bits.items()} for u, by_bits in deltas.items()}
