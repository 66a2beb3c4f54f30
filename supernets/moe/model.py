"""A small Mixtral-style mixture-of-experts decoder LM over bytes (export family ``moe-lm``).

Architecture (Jiang et al., "Mixtral of Experts", 2024, at toy scale): learned token and
position embeddings, ``n_layers`` pre-RMSNorm blocks of causal multi-head attention and a
sparse MoE FFN, a final RMSNorm and a linear head. Each MoE FFN has a linear router
(no bias) and SwiGLU experts ``w2(silu(w1 x) * w3 x)`` (no biases). A token takes the
``top_k`` largest router logits and weights them by ``softmax`` over those ``k`` logits
(Mixtral's ``softmax(topk(logits))``).

A compressed layer may hold fewer experts than router rows: ``router_map[layer][row]`` is
the expert that router row feeds, so a merged model keeps the original router and the
routed weights of rows that land on the same expert add up (Sub-MoE binds a group's rows
to its merged expert). Pruning removes rows (a layer's router has ``len(router_map[l])``
rows). An expert with a ``rank`` stores each of its matrices as ``u @ v`` (``u``
``(out, r)``, ``v`` ``(r, in)``), exactly what a rank-``r`` merge produces.

:func:`collect_moe_stats` runs calibration tokens and returns, per layer, what expert
merging needs (routing counts, the layer's inputs and every expert's output on them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas._supernet import SUBNET_BUILDERS
from nas.supernets.matformer._dense import CausalSelfAttention

__all__ = [
    "FAMILY",
    "ExpertFFN",
    "LayerStats",
    "MoELM",
    "SparseMoE",
    "collect_moe_stats",
    "upcycle",
]

FAMILY = "moe-lm"


class FactoredLinear(nn.Module):
    """A bias-free linear map ``x @ (u @ v).T`` with a rank-``rank`` weight, or a plain
    ``weight`` when ``rank`` is None. Either way :meth:`matrix` is the ``(out, in)`` weight."""

    def __init__(self, in_features: int, out_features: int, rank: int | None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        if rank is None:
            self.weight = nn.Parameter(torch.empty(out_features, in_features))
            nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        else:
            self.u = nn.Parameter(torch.empty(out_features, rank))
            self.v = nn.Parameter(torch.empty(rank, in_features))
            nn.init.normal_(self.u, std=rank**-0.5)
            nn.init.kaiming_uniform_(self.v, a=5**0.5)

    def matrix(self) -> torch.Tensor:
        """The ``(out, in)`` weight."""
        return self.weight if self.rank is None else self.u @ self.v

    def set_matrix(self, weight: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> None:
        """Copy a dense ``(out, in)`` weight, or factors ``(u, v)`` for a factored layer."""
        with torch.no_grad():
            if self.rank is None:
                if isinstance(weight, tuple):
                    weight = weight[0] @ weight[1]
                self.weight.copy_(weight)
            else:
                if not isinstance(weight, tuple):
                    raise ValueError("a factored layer takes (u, v) factors, got one matrix")
                self.u.copy_(weight[0])
                self.v.copy_(weight[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rank is None:
            return F.linear(x, self.weight)
        return F.linear(F.linear(x, self.v), self.u)


class ExpertFFN(nn.Module):
    """One SwiGLU expert: ``w2(silu(w1 x) * w3 x)``; w1 (gate) and w3 (up) are
    ``(ffn_dim, d_model)``, w2 (down) is ``(d_model, ffn_dim)``."""

    def __init__(self, d_model: int, ffn_dim: int, rank: int | None = None) -> None:
        super().__init__()
        self.w1 = FactoredLinear(d_model, ffn_dim, rank)
        self.w3 = FactoredLinear(d_model, ffn_dim, rank)
        self.w2 = FactoredLinear(ffn_dim, d_model, rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # (N, C)


class SparseMoE(nn.Module):
    """The sparse FFN: router rows -> top-k -> experts (``router_map`` row -> expert).

    After each forward ``aux_loss`` holds the Switch/Mixtral load-balancing loss
    ``R * sum_i f_i * P_i`` over the ``R`` router rows, where ``f_i`` is row ``i``'s share
    of the top-k assignments (shares sum to 1) and ``P_i`` its mean router probability
    (softmax over all rows); it is 1 for perfectly balanced routing. (HF Mixtral's
    ``load_balancing_loss_func`` counts the ``k`` assignments of a token as ``k`` rows of
    shares, so its value is ``top_k`` times this.)
    """

    def __init__(self, d_model: int, ffn_dim: int, top_k: int, router_map: Sequence[int],
                 ranks: Sequence[int | None]) -> None:
        super().__init__()
        self.top_k = min(top_k, len(router_map))
        self.router = nn.Linear(d_model, len(router_map), bias=False)
        self.register_buffer("router_map", torch.tensor(list(router_map), dtype=torch.long),
                             persistent=False)
        self.experts = nn.ModuleList(ExpertFFN(d_model, ffn_dim, r) for r in ranks)
        self.aux_loss: torch.Tensor | None = None

    def gates(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-expert routed weights ``(N, E)`` of router logits ``(N, R)``: softmax over
        each token's top-k logits, summed over rows that map to the same expert."""
        values, rows = logits.topk(self.top_k, dim=-1)  # (N, k)
        weights = values.softmax(dim=-1)  # (N, k)
        gates = logits.new_zeros(logits.shape[0], len(self.experts))
        return gates.scatter_add(1, self.router_map[rows], weights)  # (N, E)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape  # (B, T, C)
        flat = x.reshape(-1, shape[-1])  # (N, C)
        logits = self.router(flat)  # (N, R)
        self.aux_loss = self._balance_loss(logits)
        gates = self.gates(logits)  # (N, E)
        out = torch.zeros_like(flat)
        for index, expert in enumerate(self.experts):
            tokens = gates[:, index].nonzero(as_tuple=True)[0]
            if tokens.numel():
                y = expert(flat[tokens]) * gates[tokens, index, None]
                out = out.index_add(0, tokens, y)
        return out.reshape(shape)

    def _balance_loss(self, logits: torch.Tensor) -> torch.Tensor:
        rows = logits.shape[-1]
        probs = logits.softmax(dim=-1).mean(dim=0)  # (R,) P_i
        chosen = logits.topk(self.top_k, dim=-1).indices.reshape(-1)
        share = torch.bincount(chosen, minlength=rows).to(logits.dtype) / chosen.numel()
        return rows * (share * probs).sum()


class MoEBlock(nn.Module):
    """Pre-RMSNorm block: ``x + attn(norm(x))`` then ``x + moe(norm(x))``."""

    def __init__(self, d_model: int, n_heads: int, context: int, moe: SparseMoE) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, context, bias=False)
        self.norm2 = nn.RMSNorm(d_model)
        self.moe = moe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.moe(self.norm2(x))


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


@SUBNET_BUILDERS.register(FAMILY, description="Mixtral-style MoE decoder LM (top-k SwiGLU "
                                              "experts, mergeable)")
class MoELM(nn.Module):
    """A byte-level Mixtral-style MoE decoder LM: ``model(tokens)`` -> logits.

    Args:
        vocab_size: token ids are ``0 .. vocab_size - 1`` (256 for bytes).
        d_model: embedding width.
        n_heads: attention heads (divide ``d_model``).
        context: the longest input (learned positions).
        n_layers: decoder blocks, each with a sparse MoE FFN.
        ffn_dim: every expert's hidden size.
        n_experts: experts (and router rows) per layer of the uncompressed model.
        top_k: router rows a token takes (at most a layer's rows).
        experts_per_layer: experts per layer after compression (default ``n_experts`` each).
        router_map: per layer, router row -> expert index (default the identity over
            ``n_experts`` rows); its length is the layer's router rows.
        expert_ranks: per layer, per expert, the rank of its factored matrices or None
            (dense; the default).

    Raises:
        ValueError: a non-positive size, ``d_model`` not a multiple of ``n_heads``, or a
            ``router_map``/``experts_per_layer``/``expert_ranks`` inconsistent with the
            layers (an expert no row feeds, an index out of range, a rank above
            ``min(d_model, ffn_dim)``).
    """

    def __init__(
        self, *, vocab_size: int = 256, d_model: int = 64, n_heads: int = 4,
        context: int = 64, n_layers: int = 2, ffn_dim: int = 128, n_experts: int = 8,
        top_k: int = 2, experts_per_layer: Sequence[int] | None = None,
        router_map: Sequence[Sequence[int]] | None = None,
        expert_ranks: Sequence[Sequence[int | None]] | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("d_model", d_model),
                            ("n_heads", n_heads), ("context", context),
                            ("n_layers", n_layers), ("ffn_dim", ffn_dim),
                            ("n_experts", n_experts), ("top_k", top_k)):
            _positive(name, value)
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        counts = [n_experts] * n_layers if experts_per_layer is None else [
            _positive("experts_per_layer[]", e) for e in experts_per_layer]
        maps = ([list(range(n_experts)) for _ in range(n_layers)] if router_map is None
                else [[int(e) for e in row] for row in router_map])
        ranks = ([[None] * e for e in counts] if expert_ranks is None
                 else [list(r) for r in expert_ranks])
        self._check_layers(n_layers, counts, maps, ranks, min(d_model, ffn_dim))
        self.vocab_size, self.d_model, self.n_heads, self.context = (
            vocab_size, d_model, n_heads, context)
        self.n_layers, self.ffn_dim, self.n_experts, self.top_k = (
            n_layers, ffn_dim, n_experts, top_k)
        self.experts_per_layer, self.router_map, self.expert_ranks = counts, maps, ranks
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(
            MoEBlock(d_model, n_heads, context, SparseMoE(d_model, ffn_dim, top_k, m, r))
            for m, r in zip(maps, ranks))
        self.norm = nn.RMSNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    @staticmethod
    def _check_layers(n_layers: int, counts: list[int], maps: list[list[int]],
                      ranks: list[list[Any]], max_rank: int) -> None:
        for name, value in (("experts_per_layer", counts), ("router_map", maps),
                            ("expert_ranks", ranks)):
            if len(value) != n_layers:
                raise ValueError(f"{name} must have one entry per layer ({n_layers}), "
                                 f"got {len(value)}")
        for layer, (count, rows, rank) in enumerate(zip(counts, maps, ranks)):
            if not rows or sorted(set(rows)) != list(range(count)):
                raise ValueError(f"router_map[{layer}] must map rows onto every expert "
                                 f"0..{count - 1} of the layer, got {rows}")
            if len(rank) != count:
                raise ValueError(f"expert_ranks[{layer}] must have {count} entries, "
                                 f"got {len(rank)}")
            for r in rank:
                if r is not None and (isinstance(r, bool) or not isinstance(r, int)
                                      or not 1 <= r <= max_rank):
                    raise ValueError(f"expert_ranks[{layer}] entries must be None or an "
                                     f"integer in 1..{max_rank}, got {r!r}")

    @property
    def moe_layers(self) -> list[SparseMoE]:
        """The blocks' sparse FFNs, first to last."""
        return [block.moe for block in self.blocks]

    @property
    def aux_loss(self) -> torch.Tensor:
        """The load-balancing loss of the last forward, averaged over the layers (add
        ``coef * model.aux_loss`` to the task loss; Mixtral used 0.02 with its own scale).

        Raises:
            RuntimeError: no forward has run yet.
        """
        losses = [moe.aux_loss for moe in self.moe_layers]
        if any(loss is None for loss in losses):
            raise RuntimeError("aux_loss is set by a forward pass; run the model first")
        return torch.stack(losses).mean()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``(B, T, vocab)`` of byte ids ``idx`` ``(B, T)``, T <= context."""
        t = idx.shape[1]
        if t > self.context:
            raise ValueError(f"input length must be at most context={self.context}, got {t}")
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(t, device=idx.device))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))  # (B, T, V)

    def subnet_config(self) -> dict[str, Any]:
        """The JSON-able constructor arguments: ``MoELM(**subnet_config())``."""
        return {
            "vocab_size": self.vocab_size,
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "context": self.context,
            "n_layers": self.n_layers,
            "ffn_dim": self.ffn_dim,
            "n_experts": self.n_experts,
            "top_k": self.top_k,
            "experts_per_layer": list(self.experts_per_layer),
            "router_map": [list(rows) for rows in self.router_map],
            "expert_ranks": [list(ranks) for ranks in self.expert_ranks],
        }


def upcycle(dense: MoELM, *, n_experts: int, top_k: int) -> MoELM:
    """Sparse upcycling (Komatsuzaki et al., 2023): an MoE whose every expert is a copy of
    ``dense``'s single FFN, with everything else copied and fresh routers (drawn from the
    caller's RNG). Before any training its output is ``dense``'s: the top-k weights of
    identical experts sum to 1.

    Raises:
        ValueError: ``dense`` is not an uncompressed one-expert :class:`MoELM`, or bad
            ``n_experts``/``top_k``.
    """
    if not isinstance(dense, MoELM) or dense.n_experts != 1 or any(
            rank is not None for ranks in dense.expert_ranks for rank in ranks):
        raise ValueError("upcycle needs a dense MoELM (n_experts=1, no ranks), got "
                         f"{type(dense).__name__}")
    config = dense.subnet_config()
    config.update(n_experts=n_experts, top_k=top_k, experts_per_layer=None, router_map=None,
                  expert_ranks=None)
    sparse = MoELM(**config)
    state = {k: v for k, v in dense.state_dict().items() if ".moe." not in k}
    for index, moe in enumerate(dense.moe_layers):
        for name, value in moe.experts[0].state_dict().items():
            for expert in range(n_experts):
                state[f"blocks.{index}.moe.experts.{expert}.{name}"] = value
    missing, unexpected = sparse.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith(".moe.router.weight") for k in missing):
        raise AssertionError(f"upcycle state mismatch: {missing}, {unexpected}")
    return sparse.train(dense.training)


@dataclass(frozen=True)
class LayerStats:
    """What calibration saw at one MoE layer.

    Attributes:
        counts: ``(R,)`` top-k assignments per router row over all calibration tokens.
        inputs: ``(N, C)`` the layer's inputs (after its RMSNorm), the first ``N`` tokens.
        logits: ``(N, R)`` the router's logits on ``inputs``.
        outputs: ``(E, N, C)`` every expert's output on ``inputs`` (whether routed there
            or not, so that experts are compared on the same tokens).
    """

    counts: torch.Tensor
    inputs: torch.Tensor
    logits: torch.Tensor
    outputs: torch.Tensor

    def expert_counts(self, router_map: Sequence[int]) -> torch.Tensor:
        """``(E,)`` assignments per expert: the counts of the rows that feed it."""
        index = torch.as_tensor(list(router_map), dtype=torch.long)
        return torch.zeros(int(index.max()) + 1, dtype=self.counts.dtype).index_add(
            0, index, self.counts)


@torch.no_grad()
def collect_moe_stats(
    model: MoELM, tokens: torch.Tensor, *, max_tokens: int = 2048, batch_size: int = 16,
) -> list[LayerStats]:
    """Run ``tokens`` ``(N, T)`` through ``model`` and gather each MoE layer's statistics.

    Routing counts cover every token; inputs, logits and expert outputs keep the first
    ``max_tokens`` tokens of each layer, so memory is bounded by
    ``max_tokens * (n_experts + 1) * d_model`` floats per layer.

    Raises:
        ValueError: ``tokens`` is not a non-empty 2-D integer tensor, or ``max_tokens`` or
            ``batch_size`` is not a positive integer.
    """
    _positive("max_tokens", max_tokens)
    _positive("batch_size", batch_size)
    if (not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or not tokens.numel()
            or tokens.dtype.is_floating_point):
        raise ValueError("tokens must be a non-empty (N, T) integer tensor, got "
                         f"{getattr(tokens, 'shape', type(tokens).__name__)}")
    layers = model.moe_layers
    counts = [torch.zeros(len(moe.router_map), dtype=torch.long) for moe in layers]
    kept: list[list[torch.Tensor]] = [[] for _ in layers]

    def hook(index: int):
        def record(module: SparseMoE, args: tuple[torch.Tensor, ...]) -> None:
            flat = args[0].reshape(-1, args[0].shape[-1])  # (N, C)
            rows = module.router(flat).topk(module.top_k, dim=-1).indices.reshape(-1)
            counts[index] += torch.bincount(rows.cpu(), minlength=len(counts[index]))
            have = sum(len(x) for x in kept[index])
            if have < max_tokens:
                kept[index].append(flat[:max_tokens - have].float().cpu())
        return record

    handles = [moe.register_forward_pre_hook(hook(i)) for i, moe in enumerate(layers)]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        for start in range(0, len(tokens), batch_size):
            model(tokens[start:start + batch_size].to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    stats = []
    for moe, count, chunks in zip(layers, counts, kept):
        inputs = torch.cat(chunks)  # (N, C)
        on_device = inputs.to(device, moe.router.weight.dtype)
        outputs = torch.stack([e(on_device).float().cpu() for e in moe.experts])  # (E, N, C)
        logits = moe.router(on_device).float().cpu()  # (N, R)
        stats.append(LayerStats(count, inputs, logits, outputs))
    return stats
