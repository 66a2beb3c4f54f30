"""OFA's MobileNetV3 design space as data, and OFA's own subnet encoding.

Once-for-All (Cai et al., ICLR 2020, https://arxiv.org/abs/1908.09791) makes four
dimensions elastic: every MBConv block's depthwise kernel size and expand ratio, every
stage's depth (the first ``d`` blocks run) and the input resolution. The published
space is 5 stages x 4 blocks, kernels {3, 5, 7}, expand ratios {3, 4, 6}, depths
{2, 3, 4} and resolutions 128..224 in steps of 4 (:data:`MOBILENETV3_SPACE`); the
digits space (:data:`DIGITS_SPACE`) keeps the per-block choices on 4 stages at small
resolutions.

OFA encodes a subnet as ``{"ks": [...], "e": [...], "d": [...], "r": [r]}``: one kernel
size and one expand ratio per block slot (``stages * max depth`` entries, skipped blocks
included), one depth per stage and a one-element resolution list.
:meth:`OFADesignSpace.to_ofa` and :meth:`OFADesignSpace.from_ofa` convert.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from nas._space import Condition, Config, Gene, SearchSpace

OFA_KEYS = ("ks", "e", "d", "r")


@dataclass(frozen=True)
class OFADesignSpace:
    """The choices of one OFA space; :meth:`build` turns it into a :class:`SearchSpace`.

    Gene names: ``resolution``, then per stage ``s`` (from 0) ``stage{s}.depth`` and per
    block slot ``b`` (from 0) ``stage{s}.block{b}.kernel`` and ``stage{s}.block{b}.expand``.
    A block's genes are active only while its stage's depth exceeds ``b``.
    """

    name: str
    stages: int
    kernel_sizes: tuple[int, ...] = (3, 5, 7)
    expand_ratios: tuple[int, ...] = (3, 4, 6)
    depths: tuple[int, ...] = (2, 3, 4)
    resolutions: tuple[int, ...] = (12, 16, 20)

    def __post_init__(self) -> None:
        if self.stages < 1:
            raise ValueError(f"stages must be a positive integer, got {self.stages!r}")
        for field, values in (("kernel_sizes", self.kernel_sizes),
                              ("expand_ratios", self.expand_ratios),
                              ("depths", self.depths), ("resolutions", self.resolutions)):
            if not values or tuple(sorted(set(values))) != tuple(values) or min(values) < 1:
                raise ValueError(
                    f"{field} must be distinct positive integers in increasing order, "
                    f"got {values!r}"
                )
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd, got {self.kernel_sizes!r}")

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    @property
    def blocks(self) -> int:
        """Block slots of the elastic stages (the length of OFA's ``ks``/``e`` lists)."""
        return self.stages * self.max_depth

    def build(self) -> SearchSpace:
        genes = [Gene("resolution", self.resolutions)]
        for s in range(self.stages):
            depth = f"stage{s}.depth"
            genes.append(Gene(depth, self.depths))
            for b in range(self.max_depth):
                cond = Condition(depth, b + 1) if b >= min(self.depths) else None
                genes.append(Gene(f"stage{s}.block{b}.kernel", self.kernel_sizes, cond))
                genes.append(Gene(f"stage{s}.block{b}.expand", self.expand_ratios, cond))
        return SearchSpace(self.name, genes)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OFADesignSpace:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    # -- OFA's encoding --------------------------------------------------------------

    def to_ofa(self, config: Mapping[str, Any]) -> dict[str, list[int]]:
        """OFA's ``{"ks", "e", "d", "r"}`` dict of ``config``.

        Skipped blocks (beyond their stage's depth) read the largest kernel and expand
        ratio, the values OFA's supernet keeps for blocks it does not run.
        """
        if isinstance(config, Config) and config.space_name == self.name:
            values = config  # already canonical (cheap evaluations call this per subnet)
        else:
            values = self.build().config(config)
        ks: list[int] = []
        e: list[int] = []
        for s in range(self.stages):
            for b in range(self.max_depth):
                ks.append(int(values.get(f"stage{s}.block{b}.kernel", max(self.kernel_sizes))))
                e.append(int(values.get(f"stage{s}.block{b}.expand", max(self.expand_ratios))))
        depths = [int(values[f"stage{s}.depth"]) for s in range(self.stages)]
        return {"ks": ks, "e": e, "d": depths, "r": [int(values["resolution"])]}

    def from_ofa(self, arch: Mapping[str, Any]) -> Config:
        """The canonical config of OFA's ``{"ks", "e", "d", "r"}`` dict.

        Raises:
            ValueError: a missing key, a list of the wrong length or a value the space
                does not allow.
        """
        missing = [k for k in OFA_KEYS if k not in arch]
        if missing:
            raise ValueError(f"OFA arch dict must have keys {list(OFA_KEYS)}, missing {missing}")
        lengths = {"ks": self.blocks, "e": self.blocks, "d": self.stages, "r": 1}
        for key, length in lengths.items():
            value = arch[key]
            if isinstance(value, int) and key == "r":
                value = [value]
            if not isinstance(value, Sequence) or len(value) != length:
                raise ValueError(
                    f"OFA arch {key!r} must be a list of {length} integers for space "
                    f"{self.name!r}, got {arch[key]!r}"
                )
        resolution = arch["r"][0] if isinstance(arch["r"], Sequence) else arch["r"]
        values: dict[str, Any] = {"resolution": resolution}
        for s in range(self.stages):
            depth = arch["d"][s]
            values[f"stage{s}.depth"] = depth
            for b in range(self.max_depth):
                if b < min(self.depths) or (isinstance(depth, int) and b < depth):
                    i = s * self.max_depth + b
                    values[f"stage{s}.block{b}.kernel"] = arch["ks"][i]
                    values[f"stage{s}.block{b}.expand"] = arch["e"][i]
        return self.build().config(values)


DIGITS_SPACE = OFADesignSpace(name="ofa-digits", stages=4)
"""The digits space: 4 stages x up to 4 blocks, kernels {3,5,7}, expand {3,4,6},
depths {2,3,4}, resolutions {12, 16, 20} (the 8x8 digits upsampled)."""

MOBILENETV3_SPACE = OFADesignSpace(
    name="ofa-mbv3", stages=5, resolutions=tuple(range(128, 225, 4))
)
"""OFA's published MobileNetV3 space: 5 stages x 4 blocks (20 slots), r 128..224 step 4."""
