"""Global structural pruning of a :class:`DenseTransformer` (NViT, Yang et al., CVPR 2023).

Each step scores every structure (Hessian-aware saliency, or weight magnitude as the
baseline), L2-normalises the scores within each NViT "layer" (one kind in one block, and
the embedding; our choice, see :func:`prune`), optionally subtracts ``eta`` times the
latency a structure saves (NViT's latency-aware term), ranks all structures (or NViT's
groups of them) globally and removes the lowest until the step's budget is met, then
distils the smaller model from the dense teacher for a few optimiser steps. Steps repeat
until the target cost (parameters, MACs or modelled latency, :mod:`nas.compress._cost`)
is reached; the result is a physically smaller :class:`DenseTransformer`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from nas._progress import progress_bar
from nas.compress import _seq2seq_structures as seq2seq
from nas.compress._cost import PARAMS, Cost
from nas.compress._saliency import LossFn, magnitude, saliency
from nas.compress._seq2seq import DenseSeq2Seq
from nas.compress._structures import Structure, StructureIndex, keep_without, structures
from nas.compress._train import train
from nas.compress._transformer import DenseTransformer, Keep, shrink, shrunk_config

__all__ = [
    "CRITERIA",
    "PruneStep",
    "check_reachable",
    "check_criterion",
    "check_target",
    "count_params",
    "normalise",
    "prune",
    "prune_once",
    "savings",
    "smallest_config",
]

logger = logging.getLogger(__name__)

CRITERIA = ("hessian", "magnitude")


@dataclass(frozen=True)
class PruneStep:
    """What one pruning step did: the cost and parameter counts after it and the
    removed units."""

    step: int
    cost: float
    params: int
    encoder_params: int
    removed: Mapping[str, int]
    distil_loss: float | None


def count_params(model: nn.Module, *, which: str = "all") -> int:
    """The parameters of ``model``: ``all``, or ``encoder`` (the blocks only).

    Raises:
        ValueError: an unknown ``which``.
    """
    if which not in ("all", "encoder"):
        raise ValueError(f"which must be one of ['all', 'encoder'], got {which!r}")
    parts = model if which == "all" else model.blocks
    return sum(p.numel() for p in parts.parameters())


def _layer_sizes(model: DenseTransformer) -> dict[tuple[str, int | None], int]:
    """Units in each NViT layer (one kind in one block, and the embedding)."""
    full = Keep.full(model)
    sizes: dict[tuple[str, int | None], int] = {("embed", None): len(full.embed)}
    for i in range(len(model.blocks)):
        for kind, units in (("head", full.heads), ("qk", full.qk), ("v", full.v),
                            ("ffn", full.ffn)):
            sizes[(kind, i)] = len(units[i])
    return sizes




def _resized(model: DenseTransformer, sizes: Mapping[tuple[str, int | None], int]
             ) -> dict[str, Any]:
    """``model``'s config with each layer holding ``sizes[layer]`` units (which units
    does not matter to a cost)."""
    keep = Keep.full(model)
    return shrunk_config(model, Keep(
        embed=keep.embed[: sizes.get(("embed", None), len(keep.embed))],
        heads=tuple(u[: sizes.get(("head", i), len(u))] for i, u in enumerate(keep.heads)),
        qk=tuple(u[: sizes.get(("qk", i), len(u))] for i, u in enumerate(keep.qk)),
        v=tuple(u[: sizes.get(("v", i), len(u))] for i, u in enumerate(keep.v)),
        ffn=tuple(u[: sizes.get(("ffn", i), len(u))] for i, u in enumerate(keep.ffn)),
    ))


@dataclass(frozen=True)
class Layout:
    """How pruning reads and shrinks one IR class: its structures, the units per NViT
    layer, a config resized per layer, and the model without some structures."""

    structures: Callable[[Any], list[Structure]]
    layer_sizes: Callable[[Any], dict[tuple[str, int | None], int]]
    resized: Callable[[Any, Mapping[tuple[str, int | None], int]], dict[str, Any]]
    config_without: Callable[[Any, list[Structure]], dict[str, Any]]
    without: Callable[[Any, list[Structure]], Any]


LAYOUTS: Mapping[type, Layout] = {
    DenseTransformer: Layout(
        structures, _layer_sizes, _resized,
        lambda m, removed: shrunk_config(m, keep_without(m, removed)),
        lambda m, removed: shrink(m, keep_without(m, removed))),
    DenseSeq2Seq: Layout(
        seq2seq.structures, seq2seq.layer_sizes, seq2seq.resized,
        lambda m, removed: seq2seq.shrunk_config(m, seq2seq.keep_without(m, removed)),
        lambda m, removed: seq2seq.shrink(m, seq2seq.keep_without(m, removed))),
}
"""The IR classes pruning takes: the encoder or decoder-only transformer, and the
encoder-decoder one."""


def layout_of(model: Any) -> Layout:
    """The :class:`Layout` of ``model``'s class.

    Raises:
        TypeError: a model that is no IR class.
    """
    try:
        return LAYOUTS[type(model)]
    except KeyError:
        raise TypeError(f"model must be one of {[c.__name__ for c in LAYOUTS]}, got "
                        f"{type(model).__name__}") from None


def smallest_config(model: DenseTransformer | DenseSeq2Seq, min_keep: int = 1
                    ) -> dict[str, Any]:
    """The config pruning would reach by removing everything it may: ``min_keep`` units
    of every kind in every block and of the embedding."""
    layout = layout_of(model)
    return layout.resized(model, {key: min(n, min_keep)
                                  for key, n in layout.layer_sizes(model).items()})


def savings(model: DenseTransformer, items: list[Structure], cost: Cost) -> Tensor:
    """``(S,)``: what removing each structure alone saves, ``cost(model) - cost(model
    without it)`` (NViT's latency-aware term when ``cost`` is a latency model). Every unit
    of a layer saves the same, so the cost is evaluated once per layer."""
    layout = layout_of(model)
    base = float(cost.of_config(model.subnet_config()))
    saved = {key: base - float(cost.of_config(layout.resized(model, {key: n - 1})))
             for key, n in layout.layer_sizes(model).items() if n > 1}
    return torch.tensor([saved.get(s.layer_key, 0.0) for s in items], dtype=torch.float64)


def normalise(scores: Tensor, items: list[Structure]) -> Tensor:
    """Scores divided by their L2 norm within each NViT layer (one kind in one block), so
    layers whose raw scores differ in scale rank together."""
    out = scores.clone().to(torch.float64)
    groups: dict[tuple[str, int | None], list[int]] = {}
    for i, s in enumerate(items):
        groups.setdefault(s.layer_key, []).append(i)
    for members in groups.values():
        idx = torch.tensor(members)
        norm = out[idx].norm()
        if norm > 0:
            out[idx] = out[idx] / norm
    return out


NVIT_GROUPS: Mapping[str, int] = {"embed": 16, "head": 2, "qk": 8, "v": 8, "ffn": 16,
                                  "enc_embed": 16, "dec_embed": 16, "xhead": 2, "xqk": 8,
                                  "xv": 8}
"""Units per pruning group by kind, as NViT's code hard-codes them: every width stays a
multiple of the group size (from a source whose widths are), which SIMD and tensor-core
kernels run faster than odd widths. Cross-attention and the encoder-decoder's two
embedding widths take the sizes of their self-attention and embedding counterparts."""
UNITS: Mapping[str, int] = dict.fromkeys(NVIT_GROUPS, 1)
"""One unit per group: the finest granularity."""


def _groups(items: list[Structure], scores: Tensor, min_keep: int,
            sizes: Mapping[str, int]) -> list[tuple[float, list[Structure]]]:
    """Per layer, the units lowest score first in runs of ``sizes[kind]`` (NViT's groups),
    only as many as leave ``min_keep`` units; each run scored by the sum of its members'
    scores, made non-decreasing along the layer so a layer's groups go in order."""
    members: dict[tuple[str, int | None], list[int]] = {}
    for i in torch.argsort(scores, stable=True).tolist():
        members.setdefault(items[i].layer_key, []).append(i)
    out = []
    for key, ranked in members.items():
        removable = ranked[: max(0, len(ranked) - min_keep)]
        size = sizes[key[0]]
        floor = float("-inf")
        for start in range(0, len(removable), size):
            run = removable[start:start + size]
            floor = max(floor, float(scores[run].sum()))
            out.append((floor, [items[i] for i in run]))
    return out


def _order(items: list[Structure], scores: Tensor, min_keep: int, sizes: Mapping[str, int]
           ) -> tuple[list[Structure], list[int]]:
    """Structures in the order they go (groups lowest score first) and the cut points
    between groups: a step removes ``order[:cuts[k]]`` for some ``k``."""
    ranked = sorted(_groups(items, scores, min_keep, sizes), key=lambda g: g[0])
    order: list[Structure] = []
    cuts = [0]
    for _, group in ranked:
        order.extend(group)
        cuts.append(len(order))
    return order, cuts


def prune_once(
    model: DenseTransformer,
    scores: Tensor,
    *,
    target: float,
    cost: Cost = PARAMS,
    index: StructureIndex | None = None,
    min_keep: int = 1,
    group_sizes: Mapping[str, int] = UNITS,
) -> DenseTransformer:
    """Remove the lowest-scoring groups of structures (scores in ``index.items`` order,
    already normalised; groups of :data:`UNITS` or :data:`NVIT_GROUPS`) until ``cost`` is
    at most ``target``, or nothing more can go; returns the smaller model.

    Raises:
        ValueError: ``scores`` does not match the structures.
    """
    layout = layout_of(model)
    index = StructureIndex(model, layout.structures(model)) if index is None else index
    if scores.shape != (len(index),):
        raise ValueError(f"scores must have shape ({len(index)},), got {tuple(scores.shape)}")
    order, cuts = _order(index.items, scores, min_keep, group_sizes)

    def size(k: int) -> float:
        return float(cost.of_config(layout.config_without(model, order[:cuts[k]])))

    lo, hi = 0, len(cuts) - 1  # fewest groups k with size(k) <= target, or all of them
    if size(hi) > target:
        lo = hi
    while lo < hi:
        mid = (lo + hi) // 2
        if size(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    return layout.without(model, order[:cuts[lo]])


def check_target(target: float) -> None:
    """Refuse a target fraction outside (0, 1]."""
    if isinstance(target, bool) or not 0.0 < float(target) <= 1.0:
        raise ValueError(f"target must be a fraction in (0, 1] of the model's cost, got "
                         f"{target!r}")


def check_criterion(criterion: str) -> None:
    """Refuse an unknown criterion."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {list(CRITERIA)}, got {criterion!r}")


def check_reachable(model: DenseTransformer | DenseSeq2Seq, goal: float, cost: Cost,
                    min_keep: int) -> None:
    """Refuse a goal below the smallest model pruning can reach (an impossible budget)."""
    floor = float(cost.of_config(smallest_config(model, min_keep)))
    if goal < floor:
        fewer = ("start from a subnet with fewer layers" if isinstance(model, DenseSeq2Seq)
                 else "subclone to fewer blocks")
        raise ValueError(
            f"target {cost.format(goal)} is below the smallest model pruning can reach, "
            f"{cost.format(floor)} ({min_keep} unit(s) of every kind in every block); "
            f"ask for at least that, or {fewer}")


def prune(
    model: DenseTransformer,
    data: Callable[[], Any],
    *,
    target: float,
    cost: Cost = PARAMS,
    criterion: str = "hessian",
    saliency_loss: LossFn | None = None,
    distil_loss: LossFn | None = None,
    steps: int = 4,
    saliency_batches: int = 8,
    saliency_data: Callable[[], Any] | None = None,
    distil_steps: int = 0,
    lr: float = 1e-4,
    min_keep: int = 1,
    latency: Cost | None = None,
    eta: float = 0.0,
    on_step: Callable[[PruneStep], None] | None = None,
    progress: bool = True,
    per_layer_l2: bool = True,
    group_sizes: Mapping[str, int] = UNITS,
) -> DenseTransformer:
    """Prune ``model`` until ``cost`` is at most ``target`` times its own, in ``steps``
    steps.

    Args:
        model: the dense model (left unchanged; it is the distillation teacher through
            ``distil_loss``).
        data: ``() -> batch``, a fresh training batch per call.
        target: the fraction (0, 1] of ``cost(model)`` to reach.
        cost: what the target measures (:data:`~nas.compress._cost.PARAMS`,
            ``ENCODER_PARAMS``, ``macs_cost(tokens)``, ``latency_cost(latency_model)``).
        criterion: ``"hessian"`` (saliency of ``saliency_loss``) or ``"magnitude"``.
        saliency_loss: ``loss(model, batch)`` whose curvature ranks structures; required
            for ``"hessian"``.
        distil_loss: ``loss(student, batch)`` against the dense teacher, minimised for
            ``distil_steps`` AdamW steps at ``lr`` after each pruning step.
        steps: pruning steps, the cost going down linearly to the target.
        saliency_batches: batches per saliency estimate.
        saliency_data: ``() -> batch`` for the saliency (default ``data``). Small
            batches estimate the Fisher better: each batch's gradient is one sample of
            it, and a large batch's gradient averages towards the full gradient, which is
            near zero at a trained model (on the MatFormer LM, head-saliency Spearman
            0.73-0.75 with 1,024 windows in batches of 4, 0.29-0.44 in batches of 64).
        min_keep: units each layer keeps of each kind at least.
        latency: the cost of NViT's latency-aware term, ``score - eta * saved``, where
            ``saved`` is what removing the structure saves by ``latency``
            (:func:`savings`, ms for a latency model).
        eta: the weight of that term; off when ``eta`` is 0.
        on_step: called with a :class:`PruneStep` after each step.
        progress: show a tqdm bar over the steps.
        per_layer_l2: divide scores by their L2 norm within each layer (one kind in one
            block) before ranking them globally. NViT's code does not; it divides each
            kind by a constant tuned to DeiT-B (heads and embedding 1/144 of the squared
            score, query/key and value 1/4, MLP 1). Those constants do not carry over to
            other shapes, and on the MatFormer LM (one shot, parameters) the per-layer
            norm kept a lower loss than raw scores: 2.077 vs 2.093 nats at 60%, 2.294 vs
            2.360 at 40%.
        group_sizes: units removed together per kind, :data:`UNITS` (the default) or
            NViT's :data:`NVIT_GROUPS`. On the MatFormer LM (one shot) NViT's groups gave
            2.148 vs 2.077 nats at 60% of the parameters (a group of two heads took 3 of
            layer 0's 4) and 2.284 at 320 k vs 2.294 at 342 k parameters at 40%.

    Returns:
        The pruned, physically smaller :class:`DenseTransformer` (in eval mode).

    Raises:
        ValueError: a bad fraction, criterion or step setting, or a target below the
            smallest reachable model.
    """
    check_target(target)
    check_criterion(criterion)
    if criterion == "hessian" and saliency_loss is None:
        raise ValueError("criterion 'hessian' needs saliency_loss, got None")
    for name, value in (("steps", steps), ("saliency_batches", saliency_batches),
                        ("min_keep", min_keep)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if eta < 0 or (eta and latency is None):
        raise ValueError(f"eta must be >= 0 and needs a latency cost, got eta={eta}, "
                         f"latency={latency}")
    if distil_steps < 0 or (distil_steps and distil_loss is None):
        raise ValueError(f"distil_steps must be >= 0 and needs distil_loss, got {distil_steps}")
    start = cost(model)
    goal = start * float(target)
    check_reachable(model, goal, cost, min_keep)
    student = model
    for step in progress_bar(range(1, steps + 1), desc=f"prune ({criterion})",
                             disable=not progress):
        layout = layout_of(student)
        index = StructureIndex(student, layout.structures(student))
        if criterion == "hessian":
            was = student.training
            student.eval()
            draw = data if saliency_data is None else saliency_data
            batches = [draw() for _ in range(saliency_batches)]
            scores = saliency(student, batches, saliency_loss, index=index)
            student.train(was)
        else:
            scores = magnitude(student, index=index)
        if per_layer_l2:
            scores = normalise(scores, index.items)
        if eta:
            scores = scores - eta * savings(student, index.items, latency)
        before = layout.layer_sizes(student)
        student = prune_once(student, scores, target=start - (start - goal) * step / steps,
                             cost=cost, index=index, min_keep=min_keep,
                             group_sizes=group_sizes)
        removed = _removed(before, layout.layer_sizes(student))
        loss = _distil(student, data, distil_loss, distil_steps, lr) if distil_steps else None
        record = PruneStep(step, cost(student), count_params(student),
                           count_params(student, which="encoder"), removed, loss)
        logger.info("prune step %d: %s", step, record)
        if on_step is not None:
            on_step(record)
    return student.eval()


def _removed(before: Mapping[tuple[str, int | None], int],
             after: Mapping[tuple[str, int | None], int]) -> dict[str, int]:
    """Units removed per kind (``heads`` for the kind ``head``)."""
    out: dict[str, int] = {}
    for (kind, block), n in before.items():
        name = {"head": "heads", "xhead": "xheads"}.get(kind, kind)
        out[name] = out.get(name, 0) + n - after[(kind, block)]
    return out


def _distil(student: DenseTransformer, data: Callable[[], Any], loss: LossFn, n: int,
            lr: float) -> float:
    """``n`` AdamW steps on ``loss``; returns the mean loss of the last quarter."""
    student.requires_grad_(True)
    history = train(student, loss, data, steps=n, lr=lr, weight_decay=0.0)
    student.eval()
    tail = history[-max(1, n // 4):]
    return sum(tail) / len(tail)
