"""The supernet contract: activate a subnet by weight slicing, extract it dense.

Every weight-sharing family (HAT, OFA, SortedNet, ...) subclasses :class:`Supernet`;
so can a user's own model. The search engine only ever talks to this interface.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from nas._registry import Registry
from nas._space import Condition, Config, SearchSpace


@dataclass(frozen=True)
class LayerShape:
    """One layer of a subnet as hardware models and counters see it.

    ``kind`` names the layer type within its family ("encoder", "decoder", ...);
    ``dims`` holds its sizes (``embed_dim``, ``ffn_dim``, ``heads``, ...).
    """

    kind: str
    dims: Mapping[str, int]


@dataclass(frozen=True)
class SubnetShape:
    """What :meth:`Supernet.describe` returns: the per-layer shapes of one subnet.

    ``dims`` holds whole-model sizes (vocabulary sizes, embedding dims, ...).
    """

    family: str
    layers: tuple[LayerShape, ...]
    dims: Mapping[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> int:
        return sum(1 for layer in self.layers if layer.kind == kind)


@dataclass(frozen=True)
class QuantUnit:
    """One unit a quantization policy gives a bit width: a block's attention or FFN, an
    MBConv block. ``active_if`` is the condition of the layer the unit belongs to (a unit
    of a layer the depth removes is inactive, as the layer's genes are)."""

    name: str
    active_if: Condition | None = None


class Supernet(nn.Module, abc.ABC):
    """A weight-sharing supernet over a :class:`SearchSpace`.

    Subclasses set ``family`` and ``space`` and implement the protected hooks; the
    public methods validate the config first. Not thread safe: ``activate`` changes
    the module's state for the next forward passes.

    Attributes:
        family: registry name of the family (``"hat"``); exported subnets record it.
        space: the search space of this supernet instance.
        task_name: the built-in task the shipped weights were trained on, if any.
        checkpoint_hash: sha256 of the weights file loaded, or "untrained".
    """

    family: str = ""
    space: SearchSpace
    task_name: str | None = None
    checkpoint_hash: str = "untrained"

    def __init__(self) -> None:
        super().__init__()
        self._active: Config | None = None

    @property
    def active_config(self) -> Config:
        if self._active is None:
            raise RuntimeError("no subnet is active; call activate(config) first")
        return self._active

    def activate(self, config: Config | Mapping[str, Any]) -> Config:
        """Make the next forward passes run the subnet ``config`` by weight slicing.

        Returns the canonical config. Raises ``ValueError`` for an invalid config.
        """
        canonical = self.space.config(config)
        self._activate(canonical)
        self._active = canonical
        return canonical

    def extract(self, config: Config | Mapping[str, Any]) -> nn.Module:
        """A dense standalone model with copied weights, equal in output to the
        activated subnet, that runs without any supernet code."""
        return self._extract(self.space.config(config))

    def describe(self, config: Config | Mapping[str, Any]) -> SubnetShape:
        """The per-layer shapes of ``config`` (for latency models and counters)."""
        return self._describe(self.space.config(config))

    @property
    def recalibrates_batchnorm(self) -> bool:
        """Whether activated and extracted subnets already carry BatchNorm statistics of
        their own (OFA recalibrates on activation); exporters then keep them, so an
        exported model scores what the search recorded. False by default."""
        return False

    def quant_units(self) -> tuple[QuantUnit, ...]:
        """The units a quantization policy may give bit widths, in a fixed order (empty:
        the family has nothing to quantize). Layers outside every unit (embeddings,
        norms, stems and heads) stay in float, as HAQ and HAWQ keep them."""
        return ()

    def quant_modules(self, config: Config | Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
        """Active unit -> name prefixes in the dense model ``extract(config)`` returns:
        every ``nn.Linear``/``nn.Conv1d``/``nn.Conv2d`` at or under a prefix belongs to
        the unit (prefixes depend on the config where extraction renumbers blocks)."""
        return self._quant_modules(self.space.config(config))

    def _quant_modules(self, config: Config) -> dict[str, tuple[str, ...]]:
        return {}

    def architecture(self) -> dict[str, Any]:
        """The constructor arguments (JSON-able) that rebuild this supernet untrained."""
        return self._architecture()

    @abc.abstractmethod
    def _activate(self, config: Config) -> None: ...

    @abc.abstractmethod
    def _extract(self, config: Config) -> nn.Module: ...

    @abc.abstractmethod
    def _describe(self, config: Config) -> SubnetShape: ...

    @abc.abstractmethod
    def _architecture(self) -> dict[str, Any]: ...


SUPERNETS: Registry[Supernet] = Registry("supernet", plugins=("nas.supernets",))
"""Shipped supernets: ``name -> () -> Supernet`` with trained weights loaded."""

SUPERNET_FAMILIES: Registry[Supernet] = Registry("supernet family", plugins=("nas.supernets",))
"""Untrained supernets by family: ``family -> (architecture: dict) -> Supernet``, used to
rebuild a checkpoint's supernet from its JSON. Families register their
``from_architecture``."""

SUBNET_BUILDERS: Registry[nn.Module] = Registry(
    "subnet family", plugins=("nas.supernets", "nas.compress")
)
"""Dense subnet classes by family: ``family -> (**subnet_config) -> nn.Module``, used to
rebuild an exported subnet from its ``config.json`` alone (compressed models too: the
``bert`` family of :mod:`nas.compress`)."""


@dataclass(frozen=True)
class SpaceModel:
    """A published search space without weights, for searches whose accuracy comes from a
    predictor (``nas search --space``): what hardware targets and encoders read of a
    supernet (``space``; ``design``, the family's description of the space, e.g. an
    :class:`~nas.supernets.OFADesignSpace` with ``to_ofa``), and nothing to run."""

    space: SearchSpace
    design: Any = None
    checkpoint_hash: str = "none"
    task_name: str | None = None


SPACES: Registry[SpaceModel] = Registry("space", plugins=("nas.supernets",))
"""Published search spaces without weights: ``name -> () -> SpaceModel``."""


def get_space(name: str) -> SpaceModel:
    """The published space ``name`` (``nas search --space``).

    Raises:
        UnknownNameError: no space of that name (the message lists the known ones).
    """
    return SPACES.create(name)


def get_supernet(name: str) -> Supernet:
    """The shipped supernet ``name`` with its trained weights, in eval mode.

    Raises:
        UnknownNameError: no supernet of that name (the message lists the known ones).
    """
    return SUPERNETS.create(name)


def list_supernets() -> list[str]:
    """The names of the shipped supernets (``nas.get_supernet(name)`` loads one)."""
    return SUPERNETS.names()
