"""The prunable structures of a :class:`DenseTransformer`, each a group of parameter slices.

Kinds (as NViT, Yang et al., CVPR 2023, "Global Vision Transformer Pruning with
Hessian-Aware Saliency"):

- ``head`` (block, head): the head's query, key and value rows and its columns of the
  attention output projection;
- ``qk`` (block, unit): query and key row ``unit`` of *every* head of the block, so the
  block keeps one query/key width for all heads (a dense multi-head attention; NViT also
  keeps one QK and one V width per block);
- ``v`` (block, unit): value row ``unit`` of every head and the matching output columns;
- ``ffn`` (block, unit): the intermediate row and the output column of one hidden unit;
- ``embed`` (unit): one embedding dim, shared by every block: its column in the
  embedding tables, every block's input columns (query, key, value, FFN in), output rows
  and biases (attention output, FFN out), every LayerNorm's gamma and beta and the head's
  input column.

A *layer* in NViT's sense (the set within which units are grouped, and within which
:func:`~nas.compress._prune.prune` normalises scores) is one kind in one block, plus the
embedding as a layer of its own: :attr:`Structure.layer_key`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import Tensor

from nas.compress._transformer import DenseTransformer, Keep, outer_norms

__all__ = ["KINDS", "ParamSlice", "Structure", "StructureIndex", "keep_without", "structures"]

KINDS = ("head", "qk", "v", "ffn", "embed")


@dataclass(frozen=True)
class ParamSlice:
    """Whole rows (``dim=0``) or columns (``dim=1``) ``indices`` of parameter ``param``
    (1-D parameters: entries, ``dim=0``)."""

    param: str
    dim: int
    indices: tuple[int, ...]


@dataclass(frozen=True)
class Structure:
    """One prunable structure: ``kind``, its ``block`` (``None`` for ``embed``), the unit
    ``index`` within that block and kind, and the parameter slices it owns."""

    kind: str
    block: int | None
    index: int
    slices: tuple[ParamSlice, ...]

    @property
    def layer_key(self) -> tuple[str, int | None]:
        """The layer a structure belongs to: one kind in one block (``None``: embed)."""
        return (self.kind, self.block)


def _block_structures(model: DenseTransformer, i: int) -> list[Structure]:
    b = model.blocks[i]
    p = f"blocks.{i}."
    h, dq, dv, f = b.heads, b.qk_dim, b.v_dim, b.ffn_in.out_features
    out: list[Structure] = []
    for head in range(h):
        qk = tuple(range(head * dq, (head + 1) * dq))
        v = tuple(range(head * dv, (head + 1) * dv))
        out.append(Structure("head", i, head, (
            *(ParamSlice(p + f"{n}.{part}", 0, qk) for n in ("query", "key")
              for part in ("weight", "bias")),
            ParamSlice(p + "value.weight", 0, v), ParamSlice(p + "value.bias", 0, v),
            ParamSlice(p + "attn_out.weight", 1, v),
        )))
    for unit in range(dq):
        rows = tuple(head * dq + unit for head in range(h))
        out.append(Structure("qk", i, unit, tuple(
            ParamSlice(p + f"{n}.{part}", 0, rows) for n in ("query", "key")
            for part in ("weight", "bias"))))
    for unit in range(dv):
        rows = tuple(head * dv + unit for head in range(h))
        out.append(Structure("v", i, unit, (
            ParamSlice(p + "value.weight", 0, rows), ParamSlice(p + "value.bias", 0, rows),
            ParamSlice(p + "attn_out.weight", 1, rows))))
    for unit in range(f):
        out.append(Structure("ffn", i, unit, (
            ParamSlice(p + "ffn_in.weight", 0, (unit,)), ParamSlice(p + "ffn_in.bias", 0, (unit,)),
            ParamSlice(p + "ffn_out.weight", 1, (unit,)))))
    return out


def _embed_structure(model: DenseTransformer, unit: int) -> Structure:
    u = (unit,)
    tables = ["word", "position"] + (["token_type"] if model.token_type is not None else [])
    slices = [ParamSlice(f"{n}.weight", 1, u) for n in tables]
    slices += [ParamSlice(f"{n}.{part}", 0, u) for n in outer_norms(model)
               for part in ("weight", "bias")]
    if model.head is not None:
        slices.append(ParamSlice("head.weight", 1, u))
    for i in range(len(model.blocks)):
        p = f"blocks.{i}."
        slices += [ParamSlice(p + f"{n}.weight", 1, u)
                   for n in ("query", "key", "value", "ffn_in")]
        slices += [ParamSlice(p + f"{n}.{part}", 0, u) for n in ("attn_out", "ffn_out")
                   for part in ("weight", "bias")]
        slices += [ParamSlice(p + f"{n}.{part}", 0, u) for n in ("attn_norm", "ffn_norm")
                   for part in ("weight", "bias")]
    return Structure("embed", None, unit, tuple(slices))


def structures(model: DenseTransformer) -> list[Structure]:
    """Every prunable structure of ``model``, block by block, the embedding dims last."""
    if not isinstance(model, DenseTransformer):
        raise TypeError(f"model must be a DenseTransformer, got {type(model).__name__}")
    out = [s for i in range(len(model.blocks)) for s in _block_structures(model, i)]
    return out + [_embed_structure(model, unit) for unit in range(model.embed_dim)]


class StructureIndex:
    """Sums an elementwise quantity (``w * grad``, ``w ** 2``) over each structure, for
    all structures at once: per (parameter, dim) an index of which reduced row or column
    goes to which structure, applied with ``index_add_``.

    Args:
        model: the encoder whose parameter names the structures use.
        items: the structures (default: all of ``model``'s).
    """

    def __init__(self, model: DenseTransformer, items: list[Structure] | None = None) -> None:
        self.items = structures(model) if items is None else list(items)
        params = dict(model.named_parameters())
        pairs: dict[tuple[str, int], tuple[list[int], list[int]]] = defaultdict(
            lambda: ([], []))
        for sid, s in enumerate(self.items):
            for sl in s.slices:
                if sl.param not in params:
                    raise ValueError(f"structure {s.kind}{s.index} names unknown {sl.param!r}")
                ids, pos = pairs[(sl.param, sl.dim)]
                ids.extend([sid] * len(sl.indices))
                pos.extend(sl.indices)
        self._index = {key: (torch.tensor(ids), torch.tensor(pos))
                       for key, (ids, pos) in pairs.items()}
        self.sizes = self.total({name: torch.ones_like(p) for name, p in params.items()})
        """Number of weights in each structure ``(S,)``."""

    def __len__(self) -> int:
        return len(self.items)

    def total(self, values: dict[str, Tensor]) -> Tensor:
        """``(S,)``: per structure, the sum of ``values[param]`` over its slices."""
        out = torch.zeros(len(self.items), dtype=torch.float64)
        for (name, dim), (ids, pos) in self._index.items():
            value = values[name]
            if value.dim() == 2:
                value = value.sum(1 - dim)
            out.index_add_(0, ids, value.to(torch.float64)[pos])
        return out


def keep_without(model: DenseTransformer, removed: list[Structure]) -> Keep:
    """The :class:`Keep` of ``model`` once the ``removed`` structures are gone."""
    full = Keep.full(model)
    drop: dict[tuple[str, int | None], set[int]] = defaultdict(set)
    for s in removed:
        drop[s.layer_key].add(s.index)

    def kept(kind: str, block: int | None, units: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(u for u in units if u not in drop[(kind, block)])

    return Keep(
        embed=kept("embed", None, full.embed),
        heads=tuple(kept("head", i, u) for i, u in enumerate(full.heads)),
        qk=tuple(kept("qk", i, u) for i, u in enumerate(full.qk)),
        v=tuple(kept("v", i, u) for i, u in enumerate(full.v)),
        ffn=tuple(kept("ffn", i, u) for i, u in enumerate(full.ffn)),
    )
