"""SortedNet supernets: a sorted MLP and a sorted transformer encoder.

Valipour et al., "SortedNet, a Place for Every Network and Every Network in its Place"
(2023, https://arxiv.org/abs/2309.00255). A *sorted* architecture orders its units so
that every sub-model keeps a prefix of each dimension: the first ``k`` units of every
hidden layer (the first heads and FFN units of every transformer layer) and the first
``L`` layers. Sub-models are therefore nested: a smaller one is a prefix of every
larger one, and one set of weights serves the whole list.

The search space is that sorted list, not per-layer choices: one ``width`` fraction
shared by every layer and one ``depth``. The paper's sub-models along width and depth are
exactly the grid of these two genes (no conditional per-layer genes are needed, since
nothing is chosen per layer). Extraction copies the weight prefixes into the dense
classes of :mod:`nas.supernets.sortednet._dense`, whose parameter names are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas._space import Condition, Config, Gene, SearchSpace
from nas._supernet import LayerShape, QuantUnit, SubnetShape, Supernet
from nas.supernets.sortednet._dense import (
    MLP_FAMILY,
    TRANSFORMER_FAMILY,
    DenseSortedMLP,
    DenseSortedTransformer,
    attention,
    check_positive,
    check_transformer_args,
)

__all__ = ["SortedMLP", "SortedTransformer", "sorted_space", "units"]

DEFAULT_WIDTHS = (0.25, 0.5, 0.75, 1.0)


def units(fraction: float, full: int, *, what: str) -> int:
    """The number of units a width ``fraction`` keeps of ``full``; it must be whole.

    Raises:
        ValueError: ``fraction * full`` is not a positive integer.
    """
    kept = Fraction(fraction).limit_denominator(1 << 16) * full
    if kept.denominator != 1 or kept < 1:
        raise ValueError(
            f"width fraction {fraction!r} of {full} {what} is {float(kept):g}; every width "
            f"fraction must keep a whole, positive number of {what}"
        )
    return int(kept)


def sorted_space(name: str, widths: Sequence[float], max_depth: int) -> SearchSpace:
    """The sorted list of sub-models: one shared ``width`` fraction and one ``depth``.

    Raises:
        ValueError: a width outside (0, 1], a list without 1.0, or ``max_depth < 1``.
    """
    check_positive(max_depth=max_depth)
    widths = tuple(float(w) for w in widths)
    if not widths or any(not 0 < w <= 1 for w in widths) or 1.0 not in widths:
        raise ValueError(
            f"widths must be fractions in (0, 1] that include 1.0, got {list(widths)}"
        )
    return SearchSpace(
        name,
        [Gene("width", tuple(sorted(widths))), Gene("depth", tuple(range(1, max_depth + 1)))],
    )


class SortedMLP(Supernet):
    """A sorted MLP: ``max_depth`` hidden ReLU layers of ``hidden_dim`` units, one head.

    Sub-model ``(width=w, depth=d)`` runs the first ``d`` hidden layers on their first
    ``w * hidden_dim`` units and feeds the shared classifier with the first units only.

    Args:
        in_features: input size (64 digit pixels).
        hidden_dim: units of every hidden layer of the largest sub-model.
        max_depth: hidden layers of the largest sub-model.
        num_classes: outputs.
        widths: the sorted width fractions (shared by all layers); must include 1.0.
    """

    family = MLP_FAMILY

    def __init__(
        self,
        *,
        in_features: int = 64,
        hidden_dim: int = 256,
        max_depth: int = 3,
        num_classes: int = 10,
        widths: Sequence[float] = DEFAULT_WIDTHS,
    ) -> None:
        super().__init__()
        check_positive(in_features=in_features, hidden_dim=hidden_dim, num_classes=num_classes)
        self.space = sorted_space("sortednet-mlp", widths, max_depth)
        for fraction in self.space.gene("width").choices:
            units(fraction, hidden_dim, what="hidden units")
        self.in_features, self.hidden_dim = in_features, hidden_dim
        self.max_depth, self.num_classes = max_depth, num_classes
        self.hidden = nn.ModuleList(
            nn.Linear(in_features if i == 0 else hidden_dim, hidden_dim) for i in range(max_depth)
        )
        self.head = nn.Linear(hidden_dim, num_classes)
        self.activate(self.space.largest())

    @classmethod
    def from_architecture(cls, architecture: dict[str, Any]) -> SortedMLP:
        """Rebuild (untrained) from what :meth:`architecture` returned."""
        return cls(**architecture)

    def _architecture(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "hidden_dim": self.hidden_dim,
                "max_depth": self.max_depth, "num_classes": self.num_classes,
                "widths": list(self.space.gene("width").choices)}

    def _dims(self, config: Config) -> tuple[int, int]:
        return units(config["width"], self.hidden_dim, what="hidden units"), int(config["depth"])

    def _activate(self, config: Config) -> None:
        self._width, self._depth = self._dims(config)

    def forward(self, x: Tensor) -> Tensor:
        k = self._width
        for layer in self.hidden[: self._depth]:  # (B, k)
            x = F.relu(F.linear(x, layer.weight[:k, : x.shape[-1]], layer.bias[:k]))
        return F.linear(x, self.head.weight[:, :k], self.head.bias)  # (B, num_classes)

    def _extract(self, config: Config) -> DenseSortedMLP:
        k, depth = self._dims(config)
        dense = DenseSortedMLP(in_features=self.in_features, width=k, depth=depth,
                               num_classes=self.num_classes)
        with torch.no_grad():
            for src, dst in zip(self.hidden, dense.hidden, strict=False):
                dst.weight.copy_(src.weight[:k, : dst.in_features])
                dst.bias.copy_(src.bias[:k])
            dense.head.weight.copy_(self.head.weight[:, :k])
            dense.head.bias.copy_(self.head.bias)
        return dense.eval()

    def quant_units(self) -> tuple[QuantUnit, ...]:
        """Each hidden layer (inactive beyond the depth)."""
        return tuple(QuantUnit(f"hidden.{i}", _deeper_than(i)) for i in range(self.max_depth))

    def _quant_modules(self, config: Config) -> dict[str, tuple[str, ...]]:
        return {f"hidden.{i}": (f"hidden.{i}",) for i in range(int(config["depth"]))}

    def _describe(self, config: Config) -> SubnetShape:
        k, depth = self._dims(config)
        layers = [LayerShape("linear", {"in_features": self.in_features if i == 0 else k,
                                        "out_features": k}) for i in range(depth)]
        layers.append(LayerShape("head", {"in_features": k, "out_features": self.num_classes}))
        return SubnetShape(self.family, tuple(layers),
                           {"in_features": self.in_features, "num_classes": self.num_classes})


class SortedTransformer(Supernet):
    """A sorted pre-LN transformer encoder (classifier or LM).

    Sub-model ``(width=w, depth=L)`` runs the first ``L`` layers, each with its first
    ``w * heads`` attention heads and first ``w * ffn_dim`` FFN units; embeddings, layer
    norms and the head are shared in full (the model width ``embed_dim`` is not elastic).
    The constructor arguments are those of
    :class:`~nas.supernets.sortednet._dense.DenseSortedTransformer` at full size, with
    ``max_depth`` layers, plus the sorted ``widths``.
    """

    family = TRANSFORMER_FAMILY

    def __init__(
        self,
        *,
        embed_dim: int = 64,
        heads: int = 4,
        head_dim: int = 16,
        ffn_dim: int = 128,
        max_depth: int = 4,
        max_len: int = 64,
        num_classes: int = 10,
        vocab_size: int | None = None,
        input_dim: int | None = None,
        head: str = "classify",
        causal: bool = False,
        widths: Sequence[float] = DEFAULT_WIDTHS,
    ) -> None:
        super().__init__()
        check_transformer_args(embed_dim=embed_dim, heads=heads, head_dim=head_dim,
                               ffn_dim=ffn_dim, depth=max_depth, max_len=max_len,
                               num_classes=num_classes, vocab_size=vocab_size,
                               input_dim=input_dim, head=head)
        self.space = sorted_space("sortednet-transformer", widths, max_depth)
        for fraction in self.space.gene("width").choices:
            units(fraction, heads, what="heads")
            units(fraction, ffn_dim, what="FFN units")
        self._arch = {"embed_dim": embed_dim, "heads": heads, "head_dim": head_dim,
                      "ffn_dim": ffn_dim, "max_depth": max_depth, "max_len": max_len,
                      "num_classes": num_classes, "vocab_size": vocab_size,
                      "input_dim": input_dim, "head": head, "causal": causal}
        # The full-size dense model supplies the parameters (same names, full sizes).
        full = DenseSortedTransformer(embed_dim=embed_dim, heads=heads, head_dim=head_dim,
                                      ffn_dim=ffn_dim, depth=max_depth, max_len=max_len,
                                      num_classes=num_classes, vocab_size=vocab_size,
                                      input_dim=input_dim, head=head, causal=causal)
        self.embed, self.pos, self.layers = full.embed, full.pos, full.layers
        self.ln_f, self.head = full.ln_f, full.head
        self.activate(self.space.largest())

    @classmethod
    def from_architecture(cls, architecture: dict[str, Any]) -> SortedTransformer:
        """Rebuild (untrained) from what :meth:`architecture` returned."""
        return cls(**architecture)

    def _architecture(self) -> dict[str, Any]:
        return self._arch | {"widths": list(self.space.gene("width").choices)}

    def _dims(self, config: Config) -> tuple[int, int, int]:
        """Heads, FFN units and layers of ``config``."""
        fraction = config["width"]
        return (units(fraction, self._arch["heads"], what="heads"),
                units(fraction, self._arch["ffn_dim"], what="FFN units"), int(config["depth"]))

    def _activate(self, config: Config) -> None:
        self._heads, self._ffn, self._depth = self._dims(config)

    def forward(self, x: Tensor) -> Tensor:
        inner, f = self._heads * self._arch["head_dim"], self._ffn
        h = self.embed(x)  # (B, T, C)
        h = h + self.pos[: h.shape[1]]
        for layer in self.layers[: self._depth]:
            a = layer.ln1(h)
            q = F.linear(a, layer.q.weight[:inner], layer.q.bias[:inner])  # (B, T, inner)
            k = F.linear(a, layer.k.weight[:inner], layer.k.bias[:inner])
            v = F.linear(a, layer.v.weight[:inner], layer.v.bias[:inner])
            context = attention(q, k, v, heads=self._heads, head_dim=self._arch["head_dim"],
                                causal=self._arch["causal"])
            h = h + F.linear(context, layer.out.weight[:, :inner], layer.out.bias)
            m = F.gelu(F.linear(layer.ln2(h), layer.fc1.weight[:f], layer.fc1.bias[:f]))
            h = h + F.linear(m, layer.fc2.weight[:, :f], layer.fc2.bias)  # (B, T, C)
        h = self.ln_f(h)
        if self._arch["head"] == "classify":
            h = h.mean(1)  # (B, C)
        return self.head(h)

    def _extract(self, config: Config) -> DenseSortedTransformer:
        heads, f, depth = self._dims(config)
        inner = heads * self._arch["head_dim"]
        kwargs = {k: v for k, v in self._arch.items() if k != "max_depth"}
        dense = DenseSortedTransformer(**kwargs | {"heads": heads, "ffn_dim": f, "depth": depth})
        sliced = {}
        for name, tensor in self.state_dict().items():
            if name not in dense.state_dict():
                continue  # a layer beyond ``depth``
            if name.endswith(("q.weight", "q.bias", "k.weight", "k.bias", "v.weight", "v.bias")):
                tensor = tensor[:inner]
            elif name.endswith("out.weight"):
                tensor = tensor[:, :inner]
            elif name.endswith(("fc1.weight", "fc1.bias")):
                tensor = tensor[:f]
            elif name.endswith("fc2.weight"):
                tensor = tensor[:, :f]
            sliced[name] = tensor.clone()
        dense.load_state_dict(sliced)
        return dense.eval()

    def quant_units(self) -> tuple[QuantUnit, ...]:
        """Per layer its attention and its FFN (inactive beyond the depth)."""
        return tuple(QuantUnit(f"layer.{i}.{part}", _deeper_than(i))
                     for i in range(self._arch["max_depth"]) for part in ("attn", "ffn"))

    def _quant_modules(self, config: Config) -> dict[str, tuple[str, ...]]:
        return {
            f"layer.{i}.{part}": tuple(f"layers.{i}.{m}" for m in modules)
            for i in range(int(config["depth"]))
            for part, modules in (("attn", ("q", "k", "v", "out")), ("ffn", ("fc1", "fc2")))
        }

    def _describe(self, config: Config) -> SubnetShape:
        heads, f, depth = self._dims(config)
        dims = {"embed_dim": self._arch["embed_dim"], "heads": heads,
                "head_dim": self._arch["head_dim"], "ffn_dim": f}
        return SubnetShape(
            self.family,
            tuple(LayerShape("encoder", dict(dims)) for _ in range(depth)),
            {"embed_dim": self._arch["embed_dim"], "max_len": self._arch["max_len"],
             "num_classes": self._arch["num_classes"]},
        )


def _deeper_than(layer: int) -> Condition | None:
    """Layer ``layer`` (from 0) runs when ``depth`` is at least ``layer + 1``."""
    return Condition("depth", layer + 1) if layer else None
