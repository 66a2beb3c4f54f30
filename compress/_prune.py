"""Global structural pruning of a :class:`BertEncoder` (NViT, Yang et al., CVPR 2023).

Each step scores every structure (Hessian-aware saliency, or weight magnitude as the
baseline), L2-normalises the scores within each NViT "layer" (one kind in one block, and
the embedding), optionally subtracts ``eta`` times the latency a structure saves, ranks
all structures globally and removes the lowest until the step's parameter budget is met,
then distils the smaller model from the dense teacher for a few optimiser steps. Steps
repeat until the target parameter count is reached; the result is a physically smaller
:class:`BertEncoder`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from nas.compress._bert import BertEncoder, Keep, shrink
from nas.compress._saliency import LossFn, magnitude, saliency
from nas.compress._structures import Structure, StructureIndex, keep_without
from nas.compress._train import train

__all__ = [
    "COUNTS",
    "CRITERIA",
    "PruneStep",
    "count_params",
    "normalise",
    "prune",
    "prune_once",
]

logger = logging.getLogger(__name__)

CRITERIA = ("hessian", "magnitude")
COUNTS = ("all", "encoder")
"""Which parameters a target counts: ``all`` of them, or the ``encoder`` blocks only
(without the embedding tables and the embedding LayerNorm)."""


@dataclass(frozen=True)
class PruneStep:
    """What one pruning step did: the parameter counts after it and the removed units."""

    step: int
    params: int
    encoder_params: int
    removed: Mapping[str, int]
    distil_loss: float | None


def _keep_params(model: BertEncoder, keep: Keep) -> tuple[int, int]:
    """``(all, encoder)`` parameter counts of ``shrink(model, keep)``, computed without
    building it."""
    cfg = model.subnet_config()
    e = len(keep.embed)
    rows = cfg["vocab_size"] + cfg["max_positions"] + cfg["type_vocab_size"]
    embeddings = rows * e + 2 * e
    encoder = 0
    for heads, qk, v, ffn in zip(keep.heads, keep.qk, keep.v, keep.ffn):
        q = len(heads) * len(qk)
        w = len(heads) * len(v)
        f = len(ffn)
        encoder += 2 * (q * e + q) + (w * e + w) + (e * w + e) + (f * e + f) + (e * f + e)
        encoder += 4 * e  # two LayerNorms
    fill = cfg.get("output_dim", model.embed_dim) if e < model.embed_dim or (
        "output_dim" in cfg) else 0
    return embeddings + encoder + fill, encoder


def count_params(model: BertEncoder, *, which: str = "all") -> int:
    """The parameters of ``model``: ``all``, or ``encoder`` (blocks only).

    Raises:
        ValueError: an unknown ``which``.
    """
    if which not in COUNTS:
        raise ValueError(f"which must be one of {list(COUNTS)}, got {which!r}")
    if which == "all":
        return sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.blocks.parameters())


def normalise(scores: Tensor, items: list[Structure]) -> Tensor:
    """Scores divided by their L2 norm within each NViT layer (one kind in one block), so
    layers whose raw scores differ in scale rank together (NViT's per-layer normalisation)."""
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


def _order(items: list[Structure], scores: Tensor, model: BertEncoder,
           min_keep: int) -> list[Structure]:
    """Structures lowest score first, skipping those whose removal would leave their layer
    with fewer than ``min_keep`` units."""
    full = Keep.full(model)
    left = {("embed", None): len(full.embed)}
    for i in range(len(model.blocks)):
        for kind, units in (("head", full.heads), ("qk", full.qk), ("v", full.v),
                            ("ffn", full.ffn)):
            left[(kind, i)] = len(units[i])
    out = []
    for i in torch.argsort(scores, stable=True).tolist():
        s = items[i]
        if left[s.layer_key] > min_keep:
            left[s.layer_key] -= 1
            out.append(s)
    return out


def prune_once(
    model: BertEncoder,
    scores: Tensor,
    *,
    target: int,
    which: str = "all",
    index: StructureIndex | None = None,
    min_keep: int = 1,
) -> BertEncoder:
    """Remove the lowest-scoring structures (scores in ``index.items`` order, already
    normalised) until ``model`` has at most ``target`` parameters of kind ``which``, or
    nothing more can go; returns the smaller model.

    Raises:
        ValueError: ``scores`` does not match the structures.
    """
    index = StructureIndex(model) if index is None else index
    if scores.shape != (len(index),):
        raise ValueError(f"scores must have shape ({len(index)},), got {tuple(scores.shape)}")
    order = _order(index.items, scores, model, min_keep)
    column = 0 if which == "all" else 1

    def size(k: int) -> int:
        return _keep_params(model, keep_without(model, order[:k]))[column]

    lo, hi = 0, len(order)  # smallest k with size(k) <= target, or all of them
    if size(hi) > target:
        lo = hi
    while lo < hi:
        mid = (lo + hi) // 2
        if size(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    return shrink(model, keep_without(model, order[:lo]))


def check_target(target_params: float, criterion: str, which: str) -> None:
    """Refuse a target fraction outside (0, 1], an unknown criterion or count."""
    if isinstance(target_params, bool) or not 0.0 < float(target_params) <= 1.0:
        raise ValueError(f"target_params must be a fraction in (0, 1], got {target_params!r}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {list(CRITERIA)}, got {criterion!r}")
    if which not in COUNTS:
        raise ValueError(f"which must be one of {list(COUNTS)}, got {which!r}")


def prune(
    model: BertEncoder,
    data: Callable[[], Any],
    *,
    target_params: float,
    which: str = "all",
    criterion: str = "hessian",
    saliency_loss: LossFn | None = None,
    distil_loss: LossFn | None = None,
    steps: int = 4,
    saliency_batches: int = 8,
    distil_steps: int = 0,
    lr: float = 1e-4,
    min_keep: int = 1,
    latency: Callable[[Structure, BertEncoder], float] | None = None,
    eta: float = 0.0,
    on_step: Callable[[PruneStep], None] | None = None,
    progress: bool = True,
) -> BertEncoder:
    """Prune ``model`` to ``target_params`` of its parameters in ``steps`` steps.

    Args:
        model: the dense encoder (left unchanged; it is the distillation teacher through
            ``distil_loss``).
        data: ``() -> batch``, a fresh training batch per call.
        target_params: the fraction (0, 1] of ``which`` parameters to keep.
        which: ``"all"`` or ``"encoder"`` (see :data:`COUNTS`).
        criterion: ``"hessian"`` (saliency of ``saliency_loss``) or ``"magnitude"``.
        saliency_loss: ``loss(model, batch)`` whose curvature ranks structures; required
            for ``"hessian"``.
        distil_loss: ``loss(student, batch)`` against the dense teacher, minimised for
            ``distil_steps`` Adam steps at ``lr`` after each pruning step.
        steps: pruning steps, the parameter count going down linearly to the target.
        saliency_batches: batches per saliency estimate.
        min_keep: units each layer keeps of each kind at least.
        latency, eta: NViT's latency-aware term: ``score - eta * latency(s, model)``, the
            (measured or modelled) latency that removing ``s`` saves, in the units that
            ``eta`` expects; off when ``eta`` is 0.
        on_step: called with a :class:`PruneStep` after each step.
        progress: show a tqdm bar over the steps.

    Returns:
        The pruned, physically smaller :class:`BertEncoder` (train mode off).

    Raises:
        ValueError: a bad fraction, criterion, count or step setting.
    """
    check_target(target_params, criterion, which)
    if criterion == "hessian" and saliency_loss is None:
        raise ValueError("criterion 'hessian' needs saliency_loss, got None")
    for name, value in (("steps", steps), ("saliency_batches", saliency_batches),
                        ("min_keep", min_keep)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if eta and latency is None:
        raise ValueError(f"eta {eta} needs latency(structure, model), got None")
    if distil_steps < 0 or (distil_steps and distil_loss is None):
        raise ValueError(f"distil_steps must be >= 0 and needs distil_loss, got {distil_steps}")
    start = count_params(model, which=which)
    goal = int(start * float(target_params))
    student = model
    for step in tqdm(range(1, steps + 1), desc=f"prune ({criterion})", disable=not progress):
        index = StructureIndex(student)
        if criterion == "hessian":
            was = student.training
            student.eval()
            batches = [data() for _ in range(saliency_batches)]
            scores = saliency(student, batches, saliency_loss, index=index)
            student.train(was)
        else:
            scores = magnitude(student, index=index)
        scores = normalise(scores, index.items)
        if eta:
            scores = scores - eta * torch.tensor(
                [latency(s, student) for s in index.items], dtype=torch.float64)
        target = start - (start - goal) * step // steps
        before = Keep.full(student)
        student = prune_once(student, scores, target=target, which=which, index=index,
                             min_keep=min_keep)
        after = Keep.full(student)
        removed = {"embed": len(before.embed) - len(after.embed)}
        for kind in ("heads", "qk", "v", "ffn"):
            removed[kind] = sum(map(len, getattr(before, kind))) - sum(
                map(len, getattr(after, kind)))
        loss = _distil(student, data, distil_loss, distil_steps, lr) if distil_steps else None
        record = PruneStep(step, count_params(student), count_params(student, which="encoder"),
                           removed, loss)
        logger.info("prune step %d: %s", step, record)
        if on_step is not None:
            on_step(record)
    return student.eval()


def _distil(student: BertEncoder, data: Callable[[], Any], loss: LossFn, n: int,
            lr: float) -> float:
    """``n`` AdamW steps on ``loss``; returns the mean loss of the last quarter."""
    student.requires_grad_(True)
    history = train(student, loss, data, steps=n, lr=lr, weight_decay=0.0)
    student.eval()
    tail = history[-max(1, n // 4):]
    return sum(tail) / len(tail)
