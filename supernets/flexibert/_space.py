"""FlexiBERT's heterogeneous design spaces (Tuli et al., JAIR 2022, Table 1).

Every encoder layer chooses its own hidden size, operation, number of heads and
feed-forward stack (1 or 3 dense layers, each of its own width). Operations:

- ``sa-sdp`` / ``sa-wma``: self-attention with scaled dot-product or weighted
  multiplicative scores;
- ``lt-dft`` / ``lt-dct``: a parameter-free linear transform (real part of the 2-D DFT,
  as FNet, or the 2-D DCT) over sequence and head dimensions;
- ``dsc-5`` / ``dsc-9``: ConvBERT's span-based dynamic separable convolution, kernel 5 or 9.

Genes: ``layers``; per layer ``layer.{i}.hidden``, ``.op``, ``.heads``, ``.ffn_stacks``
and ``.ffn.{j}.dim``; layers beyond the shortest depth and stacks beyond the first are
conditional genes. The paper's test space (:data:`PAPER_TEST_SPACE`) enumerates to
3,317,817,600 models: (2*6*2*(2 + 2**3)) ** 2 + (2*6*2*(2 + 2**3)) ** 4.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from nas._space import Condition, Config, Gene, SearchSpace

__all__ = [
    "MINILM_SPEC",
    "OPS",
    "PAPER_TEST_SPEC",
    "PAPER_TEST_SPACE",
    "TINY_SPEC",
    "FlexiBERTSpec",
    "LayerChoice",
    "layer_choices",
]

OPS: tuple[str, ...] = ("sa-sdp", "sa-wma", "lt-dft", "lt-dct", "dsc-5", "dsc-9")
"""The operations of the paper's test space, as ``<type>-<parameter>``."""


@dataclass(frozen=True)
class FlexiBERTSpec:
    """The choices of a FlexiBERT space; :meth:`space` builds the :class:`SearchSpace`.

    Raises:
        ValueError: empty or invalid choices (a hidden size not divisible by a head
            count, an unknown operation, stacks below 1).
    """

    name: str
    layers: tuple[int, ...]
    hidden: tuple[int, ...]
    heads: tuple[int, ...]
    ops: tuple[str, ...]
    ffn_stacks: tuple[int, ...]
    ffn_dims: tuple[int, ...]

    def __post_init__(self) -> None:
        for field_name in ("layers", "hidden", "heads", "ffn_stacks", "ffn_dims"):
            values = getattr(self, field_name)
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                                 for v in values):
                raise ValueError(f"{field_name} must be positive integers, got {values!r}")
        unknown = [op for op in self.ops if op not in OPS]
        if not self.ops or unknown:
            raise ValueError(f"ops must be among {list(OPS)}, got {list(self.ops)!r}")
        bad = [(h, n) for h in self.hidden for n in self.heads if h % n]
        if bad:
            raise ValueError(f"every hidden size must divide by every head count, got {bad}")

    @property
    def max_layers(self) -> int:
        return max(self.layers)

    def space(self) -> SearchSpace:
        genes = [Gene("layers", self.layers)]
        shortest = min(self.layers)
        for i in range(self.max_layers):
            when = None if i < shortest else Condition("layers", i + 1)
            genes += [
                Gene(f"layer.{i}.hidden", self.hidden, when),
                Gene(f"layer.{i}.op", self.ops, when),
                Gene(f"layer.{i}.heads", self.heads, when),
                Gene(f"layer.{i}.ffn_stacks", self.ffn_stacks, when),
            ]
            for j in range(max(self.ffn_stacks)):
                stack_when = when if j < min(self.ffn_stacks) else Condition(
                    f"layer.{i}.ffn_stacks", j + 1
                )
                genes.append(Gene(f"layer.{i}.ffn.{j}.dim", self.ffn_dims, stack_when))
        return SearchSpace(self.name, genes)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlexiBERTSpec:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class LayerChoice:
    """One encoder layer of a subnet."""

    hidden: int
    op: str
    heads: int
    ffn: tuple[int, ...]


def layer_choices(config: Config) -> list[LayerChoice]:
    """The layers of ``config``, in order."""
    out = []
    for i in range(int(config["layers"])):
        stacks = int(config[f"layer.{i}.ffn_stacks"])
        out.append(LayerChoice(
            hidden=int(config[f"layer.{i}.hidden"]),
            op=str(config[f"layer.{i}.op"]),
            heads=int(config[f"layer.{i}.heads"]),
            ffn=tuple(int(config[f"layer.{i}.ffn.{j}.dim"]) for j in range(stacks)),
        ))
    return out


PAPER_TEST_SPEC = FlexiBERTSpec(
    name="flexibert-test",
    layers=(2, 4),
    hidden=(128, 256),
    heads=(2, 4),
    ops=OPS,
    ffn_stacks=(1, 3),
    ffn_dims=(512, 1024),
)
"""The paper's test design space (``design_space_test.yaml`` of jha-lab/txf_design-space)."""

PAPER_TEST_SPACE = PAPER_TEST_SPEC.space()

TINY_SPEC = FlexiBERTSpec(
    name="flexibert-tiny",
    layers=(2, 4),
    hidden=(64, 128),
    heads=(2, 4),
    ops=OPS,
    ffn_stacks=(1, 3),
    ffn_dims=(128, 256),
)
"""The test space's structure at half the hidden and a quarter of the feed-forward
widths: the same 3,317,817,600 models, small enough to ship trained (``flexibert``)."""

MINILM_SPEC = FlexiBERTSpec(
    name="flexibert-minilm",
    layers=(2, 4, 6),
    hidden=(192, 288, 384),
    heads=(6, 12),
    ops=OPS,
    ffn_stacks=(1,),
    ffn_dims=(768, 1536),
)
"""A space around all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads, FFN 1536, sa-sdp),
whose weights initialise the supernet (``flexibert-minilm``)."""
