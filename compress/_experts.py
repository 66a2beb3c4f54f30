"""Expert merging and pruning of a mixture-of-experts LM (:class:`nas.supernets.moe.MoELM`).

The method is Sub-MoE (Li et al., "Sub-MoE: Efficient Mixture-of-Expert LLMs Compression
via Subspace Expert Merging", arXiv 2506.23266): group a layer's experts by the cosine
similarity of their outputs on calibration tokens (K-means), then merge each group matrix
by matrix in a shared subspace: concatenate the group's weights side by side, take one
SVD, keep the shared left singular vectors ``U`` and average the experts' right blocks
(their ``V`` parts) weighted by routing frequency; a rank ``r`` keeps the top-``r``
directions (intra-expert compression). The router is kept: every row of a group feeds
the merged expert (``router_map``).

Two identities hold and are tested: at full rank the merge *is* the frequency-weighted
average of the group's weights (``U`` is orthonormal and spans every weight's columns),
and at rank ``r`` it is that average projected on the group's shared top-``r`` left
subspace, ``U_r U_r^T sum_i f_i W_i``. So Sub-MoE at full rank equals ``freq-avg`` on the
same groups; whatever it gains comes from the grouping and, with a rank, from which
subspace it keeps (for the *average* alone, the truncated SVD of the average is the best
rank-``r`` approximation in Frobenius norm, which ``freq-avg`` with a rank applies).

Which side is shared: every matrix is taken as stored by ``nn.Linear``, ``(out, in)``,
and the group's matrices are concatenated along ``in``, so ``U`` spans the *output*
space: the experts' hidden (``ffn_dim``) space for w1 (gate) and w3 (up), the model
(``d_model``) space for w2 (down). This is our reading of the paper's Eq. (concatenated
``[W_1, ..., W_n]``, shared ``U``, per-expert ``V``) and the public reimplementation we
could read (zhy617/SMoE, which concatenates HF ``weight`` tensors along dim 1 for all
three projections); the official code (lliai/MoERazor) was not available to us.
``shared="input"`` shares the input side instead (the transposed problem).

Methods, one interface (:func:`merge_experts`), all with the same per-layer expert
counts (:func:`allocate_experts`) so that they differ only in what they keep:

- ``sub-moe``: K-means groups, subspace merge;
- ``freq-avg``: M-SMoE-style frequency-weighted averaging of Sub-MoE's groups;
- ``hc-smoe``: HC-SMoE (Chen et al., 2024): average-linkage agglomerative clustering of
  the output similarity, then frequency-weighted averaging;
- ``random``: random groups (every group non-empty), subspace merge (for figures);
- ``prune``: keep the most-routed experts, drop the others' router rows;
- ``naee``: NAEE (Lu et al., "Not All Experts are Equal", 2024): per layer, the subset of
  experts (all ``C(E, g)``) whose pruned layer best reconstructs the layer's output on
  the calibration inputs (squared error).

Per-layer counts from a global target: ``allocation="uniform"`` (the default) spreads
the target as evenly as possible; ``allocation="redundancy"`` is adaptive: each layer
starts with all its experts and, while the total is above the target, the layer whose
next merge costs least gives up one expert; the cost of ``g`` groups is the K-means
inertia of the layer's normalised expert outputs (``sum`` over experts of ``2 - 2 cos``
to their centroid), so redundant layers (similar experts) shrink first. The adaptive
rule is ours (the paper's was not available to us beyond its abstract), and on
``moe-pydoc`` it lost to the uniform spread in 56 of 60 method x size x seed cases
(``benchmarks/results/moe_merge.json``), so it is not the default.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from nas.supernets.moe.model import LayerStats, MoELM, collect_moe_stats

__all__ = [
    "MERGE_METHODS",
    "LayerPlan",
    "agglomerative_groups",
    "allocate_experts",
    "apply_plan",
    "kmeans_groups",
    "list_merge_methods",
    "merge_experts",
    "naee_choice",
    "output_similarity",
    "plan_experts",
    "prune_experts",
    "subspace_merge",
]

Merge = Literal["subspace", "average"]
Side = Literal["output", "input"]
ALLOCATIONS = ("redundancy", "uniform")
KMEANS_RESTARTS = 10


@dataclass(frozen=True)
class LayerPlan:
    """How one layer is compressed.

    Attributes:
        groups: new expert ``j`` is made from the old experts ``groups[j]``.
        rows: the old router rows kept, in order (all for merging, the kept experts' rows
            for pruning); each feeds the group that holds its old expert.
        merge: ``"subspace"`` (Sub-MoE) or ``"average"`` (frequency-weighted average; a
            singleton group is the expert itself).
    """

    groups: tuple[tuple[int, ...], ...]
    rows: tuple[int, ...]
    merge: Merge


@dataclass(frozen=True)
class _Layer:
    """One layer's calibration view for the planners."""

    index: int
    stats: LayerStats
    old_map: tuple[int, ...]
    top_k: int
    counts: torch.Tensor  # (E,) assignments per expert
    similarity: torch.Tensor  # (E, E) mean cosine similarity of outputs
    coords: np.ndarray  # (E, E) points whose distances are the output features'


Planner = Callable[[_Layer, int, int], LayerPlan]


@dataclass(frozen=True)
class _Method:
    planner: Planner
    description: str


MERGE_METHODS: dict[str, _Method] = {}
"""Method name -> planner; filled by ``@_register`` below."""


def _register(name: str, description: str) -> Callable[[Planner], Planner]:
    def decorator(planner: Planner) -> Planner:
        MERGE_METHODS[name] = _Method(planner, description)
        return planner
    return decorator


def list_merge_methods() -> list[str]:
    """The method names :func:`merge_experts` takes."""
    return sorted(MERGE_METHODS)


# ---------------------------------------------------------------------------- merging

def subspace_merge(
    weights: Sequence[torch.Tensor], frequencies: Sequence[float] | torch.Tensor, *,
    rank: int | None = None, shared: Side = "output",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-MoE's merge of one matrix of a group: factors ``(u, v)``, merged ``= u @ v``.

    ``W = [W_1 ... W_n]`` (side by side along ``in``) ``= U S [V_1^T ... V_n^T]``; the
    merge is ``U_r S_r (sum_i f_i V_i^T)_r`` with ``f`` normalised to sum 1, i.e.
    ``U_r U_r^T sum_i f_i W_i`` (``u = U_r``, ``v = S_r sum_i f_i V_{i,r}^T``).

    Args:
        weights: the group's matrices, each ``(out, in)`` as ``nn.Linear`` stores them.
        frequencies: their routing frequencies (non-negative; all zero means uniform).
        rank: directions kept (None: all, ``min(out, n * in)``).
        shared: ``"output"`` shares the output-side basis (concatenate along ``in``);
            ``"input"`` the input side (the same on the transposes).

    Raises:
        ValueError: no weights, mismatched shapes or frequencies, or a rank outside
            ``1..min(out, in)``.
    """
    if shared not in ("output", "input"):
        raise ValueError(f"shared must be 'output' or 'input', got {shared!r}")
    if not weights:
        raise ValueError("subspace_merge needs at least one weight matrix")
    if shared == "input":
        u, v = subspace_merge([w.T for w in weights], frequencies, rank=rank)
        return v.T, u.T
    shape = tuple(weights[0].shape)
    if any(tuple(w.shape) != shape for w in weights) or len(shape) != 2:
        raise ValueError(f"weights must be matrices of one shape, got "
                         f"{[tuple(w.shape) for w in weights]}")
    _check_rank(rank, shape)
    f = _normalised(frequencies, len(weights))
    dtype = weights[0].dtype
    stacked = torch.cat([w.detach().double() for w in weights], dim=1)  # (out, n*in)
    u, s, vh = torch.linalg.svd(stacked, full_matrices=False)  # U (out, m), Vh (m, n*in)
    keep = len(s) if rank is None else rank
    blocks = vh[:keep].split(shape[1], dim=1)  # n x (keep, in)
    merged_v = sum(fi * block for fi, block in zip(f.tolist(), blocks))  # (keep, in)
    return u[:, :keep].to(dtype), (s[:keep, None] * merged_v).to(dtype)


def _average(weights: Sequence[torch.Tensor], frequencies: torch.Tensor,
             rank: int | None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Frequency-weighted average; with a rank, its own truncated SVD as ``(u, v)``."""
    f = _normalised(frequencies, len(weights))
    average = sum(fi * w.detach().double() for fi, w in zip(f.tolist(), weights))
    if rank is None:
        return average.to(weights[0].dtype)
    u, s, vh = torch.linalg.svd(average, full_matrices=False)
    dtype = weights[0].dtype
    return u[:, :rank].to(dtype), (s[:rank, None] * vh[:rank]).to(dtype)


def _normalised(frequencies: Sequence[float] | torch.Tensor, n: int) -> torch.Tensor:
    f = torch.as_tensor(frequencies, dtype=torch.float64).reshape(-1)
    if len(f) != n or bool((f < 0).any()) or not bool(torch.isfinite(f).all()):
        raise ValueError(f"frequencies must be {n} non-negative numbers, got {f.tolist()}")
    total = float(f.sum())
    return f / total if total > 0 else torch.full((n,), 1.0 / n, dtype=torch.float64)


def _check_rank(rank: int | None, shape: tuple[int, ...]) -> None:
    if rank is None:
        return
    limit = min(shape)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a positive integer or None, got {rank!r}")
    if rank > limit:
        raise ValueError(f"rank={rank} is above the rank of the expert matrices "
                         f"{shape[0]}x{shape[1]} (at most {limit})")


# ------------------------------------------------------------------------- similarity

def output_similarity(stats: LayerStats) -> torch.Tensor:
    """``(E, E)`` mean over calibration tokens of the cosine similarity of two experts'
    outputs on the same token (Sub-MoE's functional similarity)."""
    unit = torch.nn.functional.normalize(stats.outputs.double(), dim=-1)  # (E, N, C)
    return torch.einsum("anc,bnc->ab", unit, unit) / unit.shape[1]


def _coordinates(similarity: torch.Tensor) -> np.ndarray:
    """Points whose squared distances are ``2 - 2 sim`` (an exact embedding of the
    normalised output features via the Gram matrix), for K-means on ``E`` points."""
    values, vectors = torch.linalg.eigh(similarity.double())
    return (vectors * values.clamp(min=0).sqrt()).numpy()


def kmeans_groups(similarity: torch.Tensor, groups: int, *, seed: int = 0
                  ) -> tuple[tuple[tuple[int, ...], ...], float]:
    """K-means (k-means++ init, :data:`KMEANS_RESTARTS` restarts, seeded) of the experts
    on their normalised output features; returns the groups (sorted by first member)
    and the inertia (sum over experts of ``2 - 2 cos`` to the centroid)."""
    from sklearn.cluster import KMeans  # imported here: a slow import few callers need

    n = similarity.shape[0]
    if groups >= n:
        return tuple((i,) for i in range(n)), 0.0
    coords = _coordinates(similarity)
    fitted = KMeans(n_clusters=groups, n_init=KMEANS_RESTARTS, random_state=seed).fit(coords)
    members = _labels_to_groups(fitted.labels_.tolist())
    if len(members) < groups:  # coincident points: split the largest groups
        members = _split_to(members, groups)
    return members, float(fitted.inertia_)


def agglomerative_groups(similarity: torch.Tensor, groups: int
                         ) -> tuple[tuple[int, ...], ...]:
    """Average-linkage agglomerative clustering (HC-SMoE): merge the two clusters with
    the largest mean pairwise similarity until ``groups`` remain (ties: lowest ids)."""
    clusters = [[i] for i in range(similarity.shape[0])]
    sim = similarity.double()
    while len(clusters) > groups:
        best, pair = -np.inf, (0, 1)
        for a, b in itertools.combinations(range(len(clusters)), 2):
            score = float(sim[clusters[a]][:, clusters[b]].mean())
            if score > best + 1e-12:
                best, pair = score, (a, b)
        a, b = pair
        clusters[a] = sorted(clusters[a] + clusters[b])
        del clusters[b]
    return tuple(sorted(tuple(c) for c in clusters))


def _labels_to_groups(labels: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    found: dict[int, list[int]] = {}
    for expert, label in enumerate(labels):
        found.setdefault(label, []).append(expert)
    return tuple(sorted(tuple(g) for g in found.values()))


def _split_to(members: tuple[tuple[int, ...], ...], groups: int
              ) -> tuple[tuple[int, ...], ...]:
    parts = [list(g) for g in members]
    while len(parts) < groups:
        largest = max(range(len(parts)), key=lambda i: (len(parts[i]), -i))
        parts.append([parts[largest].pop()])
    return tuple(sorted(tuple(p) for p in parts))


# ------------------------------------------------------------------------- allocation

def allocate_experts(layers: Sequence[torch.Tensor], total: int, *,
                     allocation: str = "uniform", seed: int = 0) -> list[int]:
    """Experts per layer summing to ``total``, from each layer's ``(E, E)`` output
    similarity (module docstring: greedy on the K-means inertia, or uniform).

    Raises:
        ValueError: ``total`` outside ``len(layers) .. sum of E``, or an unknown
            ``allocation``.
    """
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {list(ALLOCATIONS)}, got {allocation!r}")
    sizes = [int(s.shape[0]) for s in layers]
    _check_total(total, sizes)
    counts = list(sizes)
    if allocation == "uniform":
        redundancy = [float((s.sum() - s.diagonal().sum()) / max(1, len(s) * (len(s) - 1)))
                      for s in layers]
        while sum(counts) > total:
            layer = max(range(len(counts)), key=lambda i: (counts[i], redundancy[i], -i))
            counts[layer] -= 1
        return counts
    inertia = [[kmeans_groups(s, g, seed=seed)[1] for g in range(1, len(s) + 1)]
               for s in layers]  # inertia[l][g - 1]
    while sum(counts) > total:
        open_layers = [i for i in range(len(counts)) if counts[i] > 1]
        layer = min(open_layers, key=lambda i: (
            inertia[i][counts[i] - 2] - inertia[i][counts[i] - 1], i))
        counts[layer] -= 1
    return counts


def _check_total(total: int, sizes: Sequence[int]) -> None:
    if isinstance(total, bool) or not isinstance(total, int):
        raise ValueError(f"experts must be an integer, got {total!r}")
    if total > sum(sizes):
        raise ValueError(f"experts={total} is more than the model has: {sum(sizes)} experts "
                         f"over {len(sizes)} layers")
    if total < len(sizes):
        raise ValueError(f"experts={total} is fewer than one per layer ({len(sizes)} layers)")


# -------------------------------------------------------------------------- planners

@_register("sub-moe", "Sub-MoE: K-means on output similarity, shared-subspace merge")
def _plan_sub_moe(layer: _Layer, groups: int, seed: int) -> LayerPlan:
    members, _ = kmeans_groups(layer.similarity, groups, seed=seed)
    return LayerPlan(members, tuple(range(len(layer.old_map))), "subspace")


@_register("freq-avg", "M-SMoE-style frequency-weighted average of Sub-MoE's groups")
def _plan_freq_avg(layer: _Layer, groups: int, seed: int) -> LayerPlan:
    members, _ = kmeans_groups(layer.similarity, groups, seed=seed)
    return LayerPlan(members, tuple(range(len(layer.old_map))), "average")


@_register("hc-smoe", "HC-SMoE: average-linkage clustering, frequency-weighted average")
def _plan_hc_smoe(layer: _Layer, groups: int, seed: int) -> LayerPlan:
    members = agglomerative_groups(layer.similarity, groups)
    return LayerPlan(members, tuple(range(len(layer.old_map))), "average")


@_register("random", "random groups (seeded), shared-subspace merge")
def _plan_random(layer: _Layer, groups: int, seed: int) -> LayerPlan:
    n = len(layer.counts)
    generator = torch.Generator().manual_seed(seed * 1009 + layer.index)
    order = torch.randperm(n, generator=generator).tolist()
    labels = [0] * n
    for slot, expert in enumerate(order):
        labels[expert] = slot if slot < groups else int(
            torch.randint(groups, (1,), generator=generator))
    return LayerPlan(_labels_to_groups(labels), tuple(range(len(layer.old_map))), "subspace")


@_register("prune", "keep the most-routed experts, drop the others' router rows")
def _plan_prune(layer: _Layer, groups: int, seed: int) -> LayerPlan:
    ranked = sorted(range(len(layer.counts)), key=lambda e: (-int(layer.counts[e]), e))
    return _keep_plan(sorted(ranked[:groups]), layer.old_map)


@_register("naee", "NAEE: per layer, the expert subset that best reconstructs the output")
def _plan_naee(layer: _Layer, groups: int, seed: int) -> LayerPlan:
    keep, _ = naee_choice(layer.stats, layer.old_map, layer.top_k, groups)
    return _keep_plan(list(keep), layer.old_map)


def _keep_plan(keep: Sequence[int], old_map: Sequence[int]) -> LayerPlan:
    rows = tuple(r for r, e in enumerate(old_map) if e in set(keep))
    return LayerPlan(tuple((e,) for e in sorted(keep)), rows, "average")


def naee_choice(stats: LayerStats, old_map: Sequence[int], top_k: int, keep: int
                ) -> tuple[tuple[int, ...], dict[tuple[int, ...], float]]:
    """The ``keep``-subset of experts whose pruned layer (other experts' router rows
    dropped, top-k over the rest) has the least squared error to the full layer's output
    on the calibration inputs; returns it and every subset's error."""
    full = _layer_output(stats, old_map, top_k, range(len(old_map)))
    errors = {}
    for subset in itertools.combinations(range(stats.outputs.shape[0]), keep):
        rows = [r for r, e in enumerate(old_map) if e in subset]
        errors[subset] = float((_layer_output(stats, old_map, top_k, rows) - full)
                               .square().sum())
    return min(errors, key=lambda s: (errors[s], s)), errors


def _layer_output(stats: LayerStats, old_map: Sequence[int], top_k: int,
                  rows: Sequence[int]) -> torch.Tensor:
    rows = list(rows)
    logits = stats.logits[:, rows]  # (N, R')
    values, chosen = logits.topk(min(top_k, len(rows)), dim=-1)
    experts = torch.as_tensor([old_map[r] for r in rows])[chosen]  # (N, k)
    gates = torch.zeros(logits.shape[0], stats.outputs.shape[0]).scatter_add(
        1, experts, values.softmax(dim=-1))  # (N, E)
    return torch.einsum("ne,enc->nc", gates, stats.outputs)  # (N, C)


# --------------------------------------------------------------------------- building

def apply_plan(model: MoELM, plans: Sequence[LayerPlan], *,
               frequencies: Sequence[torch.Tensor] | None = None, rank: int | None = None,
               shared: Side = "output") -> MoELM:
    """A new model with each layer's experts grouped and merged as ``plans`` say.

    Args:
        model: the model to compress (unchanged).
        plans: one :class:`LayerPlan` per layer.
        frequencies: per layer, ``(E,)`` routing counts of the old experts (weights of a
            merge; needed only where a group has several experts).
        rank: every new expert's matrices stored at this rank (None: dense).
        shared: which side Sub-MoE's merge shares (:func:`subspace_merge`).

    Raises:
        ValueError: a plan that does not fit the model, or a rank outside
            ``1..min(d_model, ffn_dim)``.
    """
    _check_model(model)
    _check_rank(rank, (model.d_model, model.ffn_dim))
    if len(plans) != model.n_layers:
        raise ValueError(f"plans must have one entry per layer ({model.n_layers}), "
                         f"got {len(plans)}")
    config = model.subnet_config()
    maps = []
    for index, plan in enumerate(plans):
        old_map = model.router_map[index]
        experts = sorted(e for g in plan.groups for e in g)
        group_of = {e: j for j, g in enumerate(plan.groups) for e in g}
        if len(set(experts)) != len(experts) or not set(experts) <= set(old_map):
            raise ValueError(f"plans[{index}] groups must be disjoint old experts, "
                             f"got {plan.groups}")
        if any(old_map[r] not in group_of for r in plan.rows):
            raise ValueError(f"plans[{index}] keeps a router row whose expert is in no group")
        maps.append([group_of[old_map[r]] for r in plan.rows])
    config.update(experts_per_layer=[len(p.groups) for p in plans], router_map=maps,
                  expert_ranks=[[rank] * len(p.groups) for p in plans])
    new = MoELM(**config).to(next(model.parameters()).device)
    shared_state = {k: v for k, v in model.state_dict().items() if ".moe." not in k}
    missing, unexpected = new.load_state_dict(shared_state, strict=False)
    assert not unexpected and all(".moe." in k for k in missing), (missing, unexpected)
    for index, (plan, old, moe) in enumerate(zip(plans, model.moe_layers, new.moe_layers)):
        with torch.no_grad():
            moe.router.weight.copy_(old.router.weight[list(plan.rows)])
        for group, expert in zip(plan.groups, moe.experts):
            if len(group) > 1 and frequencies is None:
                raise ValueError("frequencies are needed to merge groups of several experts")
            f = (torch.ones(1) if len(group) == 1
                 else torch.as_tensor(frequencies[index])[list(group)])
            for name in ("w1", "w3", "w2"):
                mats = [getattr(old.experts[e], name).matrix().detach() for e in group]
                merged = (subspace_merge(mats, f, rank=rank, shared=shared)
                          if plan.merge == "subspace" else _average(mats, f, rank))
                getattr(expert, name).set_matrix(merged)
    return new.train(model.training)


def prune_experts(model: MoELM, keep: Sequence[Sequence[int]]) -> MoELM:
    """A new model keeping, per layer, the experts ``keep[layer]`` and the router rows
    that feed them (the others are no longer top-k candidates).

    Raises:
        ValueError: a layer with nothing kept or an expert the layer does not have.
    """
    _check_model(model)
    plans = []
    for index, experts in enumerate(keep):
        experts = sorted(set(int(e) for e in experts))
        if not experts or not set(experts) <= set(model.router_map[index]):
            raise ValueError(f"keep[{index}] must name some of the layer's "
                             f"{model.experts_per_layer[index]} experts, got {experts}")
        plans.append(_keep_plan(experts, model.router_map[index]))
    return apply_plan(model, plans)


def _check_model(model: object) -> None:
    if not isinstance(model, MoELM) or not model.moe_layers:
        raise ValueError(f"model must be a MoELM with MoE experts, got "
                         f"{type(model).__name__}")


def plan_experts(model: MoELM, stats: Sequence[LayerStats], *, experts: int,
                 method: str = "sub-moe", seed: int = 0, allocation: str = "uniform"
                 ) -> list[LayerPlan]:
    """Each layer's plan for ``method`` at ``experts`` experts in total.

    Raises:
        ValueError: an unknown method or allocation, or ``experts`` outside
            ``n_layers .. the model's experts``.
    """
    _check_model(model)
    if method not in MERGE_METHODS:
        raise ValueError(f"method must be one of {list_merge_methods()}, got {method!r}")
    _check_total(experts, model.experts_per_layer)
    if len(stats) != model.n_layers:
        raise ValueError(f"stats must have one entry per layer ({model.n_layers}), "
                         f"got {len(stats)}")
    layers = []
    for index, (moe, old_map, layer_stats) in enumerate(
            zip(model.moe_layers, model.router_map, stats)):
        similarity = output_similarity(layer_stats)
        layers.append(_Layer(index, layer_stats, tuple(old_map), moe.top_k,
                             layer_stats.expert_counts(old_map), similarity,
                             _coordinates(similarity)))
    counts = allocate_experts([layer.similarity for layer in layers], experts,
                              allocation=allocation, seed=seed)
    planner = MERGE_METHODS[method].planner
    return [planner(layer, g, seed) for layer, g in zip(layers, counts)]


def merge_experts(
    model: MoELM, calib_tokens: torch.Tensor, *, experts: int, method: str = "sub-moe",
    rank: int | None = None, seed: int = 0, allocation: str = "uniform",
    shared: Side = "output", max_tokens: int = 2048,
) -> MoELM:
    """Compress ``model`` to ``experts`` experts in total with ``method``.

    Args:
        model: the MoE LM (unchanged).
        calib_tokens: ``(N, T)`` calibration byte ids.
        experts: experts kept over all layers (at least one per layer).
        method: one of :func:`list_merge_methods` (module docstring).
        rank: store every new expert's matrices at this rank (Sub-MoE's intra-expert
            compression; other methods truncate their own SVD).
        seed: K-means and random grouping seed (results are deterministic given it).
        allocation: ``"redundancy"`` or ``"uniform"`` per-layer counts.
        shared: the side Sub-MoE's merge shares (``"output"``, the paper's reading).
        max_tokens: calibration tokens kept per layer for similarities and NAEE.

    Returns:
        A new :class:`MoELM` (export with ``save_subnet(..., family="moe-lm")``).

    Raises:
        ValueError: a model without experts, an unknown method or allocation, more
            experts than the model has or fewer than its layers, a rank above the
            experts' matrix rank, or bad calibration tokens.
    """
    _check_model(model)
    if method not in MERGE_METHODS:
        raise ValueError(f"method must be one of {list_merge_methods()}, got {method!r}")
    _check_total(experts, model.experts_per_layer)
    _check_rank(rank, (model.d_model, model.ffn_dim))
    stats = collect_moe_stats(model, calib_tokens, max_tokens=max_tokens)
    plans = plan_experts(model, stats, experts=experts, method=method, seed=seed,
                         allocation=allocation)
    frequencies = [s.expert_counts(m) for s, m in zip(stats, model.router_map)]
    return apply_plan(model, plans, frequencies=frequencies, rank=rank, shared=shared)
