"""NAS-Bench-201's CIFAR network in torch: a one-shot supernet and the dense network.

Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture
Search", ICLR 2020 (https://arxiv.org/abs/2001.00326); the layout follows the
benchmark's ``TinyNetwork``/``InferCell``:

- stem: 3x3 conv 3 -> C, BN;
- three stages of ``N`` cells at C, 2C, 4C channels (C = 16, N = 5 for the benchmark),
  joined by a ResNet basic block with stride 2 (ReLU-Conv3x3-BN twice; shortcut
  2x2 average pool then 1x1 conv);
- a cell has four nodes; node ``j`` is the sum over ``i < j`` of ``op_{j,i}(node i)``
  and node 3 is the output. Operations: ``none`` (zeros), ``skip_connect``
  (identity), ``nor_conv_1x1`` and ``nor_conv_3x3`` (ReLU-Conv-BN) and
  ``avg_pool_3x3`` (stride 1, padding 1, padding not counted);
- head: BN, ReLU, global average pool, linear classifier.

:class:`NB201SuperNetwork` holds every candidate operation on every edge and runs the
ops of the activated cell (the benchmark's one-shot / ENAS weight sharing: one cell
architecture at all 15 cell positions, each position with its own weights).
:meth:`extract` copies the chosen ops into :class:`NB201Network`, which holds only
them. ``none`` edges stay in both as modules that multiply by zero, as in the
benchmark: a cell is never pruned, so a degenerate cell outputs zeros and its network
still runs stem, reductions and head.

Two departures from the benchmark's code: the forward pass returns the logits only
(``TinyNetwork`` returns the pooled features too), and the supernet's BN layers are
affine like the dense network's (the benchmark's one-shot models use non-affine BN),
so that extraction copies weights one to one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from nas._space import Config
from nas._supernet import SUBNET_BUILDERS, LayerShape, SubnetShape, Supernet
from nas.supernets.nb201 import EDGES, NB201_SPACE, OPERATIONS, gene_name

__all__ = ["NB201Network", "NB201SuperNetwork", "nb201_layout"]

IMAGE_SIZE = 32
"""CIFAR images are 32x32; stage ``s`` runs at ``32 / 2**s``."""


# -- operations (the benchmark's ``cell_operations.py``) -------------------------------


class ReLUConvBN(nn.Sequential):
    """ReLU, bias-free conv, BN: the benchmark's ``nor_conv`` operations."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    """The ``none`` operation: zeros shaped like the input (kept, not pruned)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mul(0.0)


def make_op(name: str, channels: int) -> nn.Module:
    """One cell operation at ``channels`` in and out, stride 1."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}, got {name!r}")


class ResNetBasicBlock(nn.Module):
    """The reduction between stages: two ReLU-Conv3x3-BN (the first with stride 2)
    plus a 2x2 average pool and 1x1 conv shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, kernel_size=1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, c_in, H, W) -> (B, c_out, H/2, W/2)
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def _edge_key(to: int, frm: int) -> str:
    """The module name of an edge, ``"2<-1"`` (the benchmark's ``node_str``)."""
    return f"{to}<-{frm}"


def run_cell(x: Tensor, edge_op: Mapping[str, nn.Module]) -> Tensor:
    """Node ``j`` = sum over ``i < j`` of ``edge_op["j<-i"](node i)``; returns node 3.

    Shared by both networks, so the supernet and the extracted network add the same
    tensors in the same order and agree bit for bit.
    """
    nodes = [x]
    for to in (1, 2, 3):
        nodes.append(sum(edge_op[_edge_key(to, frm)](nodes[frm]) for frm in range(to)))
    return nodes[3]


# -- the network skeleton ----------------------------------------------------------------


def nb201_layout(channels: int, cells_per_stage: int) -> list[tuple[str, int]]:
    """The body as ``(kind, out channels)``: ``cell`` or ``reduction``, in order."""
    layout: list[tuple[str, int]] = []
    for stage in range(3):
        if stage:
            layout.append(("reduction", channels * 2**stage))
        layout.extend([("cell", channels * 2**stage)] * cells_per_stage)
    return layout


def _check_sizes(channels: int, cells_per_stage: int, num_classes: int) -> None:
    for name, value in (("channels", channels), ("cells_per_stage", cells_per_stage),
                        ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


class _Skeleton(nn.Module):
    """Stem, body and head shared by both networks; ``make_cell(channels)`` builds
    each cell position."""

    def __init__(self, channels: int, cells_per_stage: int, num_classes: int,
                 make_cell: Callable[[int], nn.Module]) -> None:
        super().__init__()
        _check_sizes(channels, cells_per_stage, num_classes)
        self.channels, self.cells_per_stage = channels, cells_per_stage
        self.num_classes = num_classes
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        body: list[nn.Module] = []
        c_prev = channels
        for kind, c_out in nb201_layout(channels, cells_per_stage):
            body.append(ResNetBasicBlock(c_prev, c_out) if kind == "reduction"
                        else make_cell(c_out))
            c_prev = c_out
        self.cells = nn.ModuleList(body)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def _head(self, x: Tensor) -> Tensor:  # (B, 4C, 8, 8) -> (B, classes)
        return self.classifier(self.global_pooling(self.lastact(x)).flatten(1))


# -- the dense network --------------------------------------------------------------------


class InferCell(nn.Module):
    """A cell holding one operation per edge."""

    def __init__(self, ops: Mapping[str, str], channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleDict(
            {_edge_key(j, i): make_op(ops[gene_name(j, i)], channels) for j, i in EDGES}
        )

    def forward(self, x: Tensor) -> Tensor:
        return run_cell(x, self.edges)


@SUBNET_BUILDERS.register("nb201", description="NAS-Bench-201 CIFAR network (dense cell)")
class NB201Network(_Skeleton):
    """NAS-Bench-201's network for one cell, rebuilt from its JSON config alone.

    ``model(images)`` maps ``(B, 3, 32, 32)`` images to ``(B, num_classes)`` logits.

    Args:
        config: the cell, gene ``edge.j<-i`` -> operation (:data:`NB201_SPACE`).
        channels: channels of the first stage (16 in the benchmark).
        cells_per_stage: cells per stage (5 in the benchmark).
        num_classes: classifier outputs (10 for CIFAR-10).

    Raises:
        ValueError: an invalid cell or size.
    """

    def __init__(self, *, config: Mapping[str, Any], channels: int = 16,
                 cells_per_stage: int = 5, num_classes: int = 10) -> None:
        cell = NB201_SPACE.config(config).to_dict()
        super().__init__(channels, cells_per_stage, num_classes,
                         lambda c: InferCell(cell, c))
        self.config = cell

    def subnet_config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this network (``config.json``)."""
        return {"config": dict(self.config), "channels": self.channels,
                "cells_per_stage": self.cells_per_stage, "num_classes": self.num_classes}

    def forward(self, images: Tensor) -> Tensor:  # (B, 3, 32, 32) -> (B, classes)
        x = self.stem(images)
        for cell in self.cells:
            x = cell(x)
        return self._head(x)


# -- the supernet ---------------------------------------------------------------------


class SearchCell(nn.Module):
    """A cell holding every operation on every edge; ``forward`` runs the chosen ones."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleDict({
            _edge_key(j, i): nn.ModuleDict({op: make_op(op, channels) for op in OPERATIONS})
            for j, i in EDGES
        })

    def forward(self, x: Tensor, ops: Mapping[str, str]) -> Tensor:
        chosen = {key: choices[ops[key]] for key, choices in self.edges.items()}
        return run_cell(x, chosen)


class NB201SuperNetwork(Supernet):
    """The weight-sharing one-shot supernet over :data:`NB201_SPACE`.

    Every cell position holds all five operations on each of its six edges; the
    activated cell (the same at every position) selects one per edge. Weights are as
    constructed (seed torch's RNG first for reproducible ones); the all-``none`` cell
    is active after construction.

    Args:
        channels: channels of the first stage (16 in the benchmark).
        cells_per_stage: cells per stage (5 in the benchmark).
        num_classes: classifier outputs (10 for CIFAR-10).

    Raises:
        ValueError: a size that is not a positive int.
    """

    family = "nb201"

    def __init__(self, *, channels: int = 16, cells_per_stage: int = 5,
                 num_classes: int = 10) -> None:
        super().__init__()
        self.space = NB201_SPACE
        self.net = _Skeleton(channels, cells_per_stage, num_classes, SearchCell)
        self._ops: dict[str, str] = {}
        self.activate(self.space.smallest())

    def _activate(self, config: Config) -> None:
        self._ops = {_edge_key(j, i): str(config[gene_name(j, i)]) for j, i in EDGES}

    def forward(self, images: Tensor) -> Tensor:  # (B, 3, 32, 32) -> (B, classes)
        x = self.net.stem(images)
        for cell in self.net.cells:
            x = cell(x, self._ops) if isinstance(cell, SearchCell) else cell(x)
        return self.net._head(x)

    def _extract(self, config: Config) -> NB201Network:
        """Copy the chosen ops' weights into a dense network on this device and dtype."""
        with torch.device("meta"):
            dense = NB201Network(config=config.to_dict(), **self._sizes())
        dense.load_state_dict(self._dense_state(config), strict=True, assign=True)
        return dense.train(self.training)

    def _dense_state(self, config: Config) -> dict[str, Tensor]:
        """The supernet's state with each edge's chosen op's entries renamed from
        ``cells.k.edges.j<-i.<op>.*`` to ``cells.k.edges.j<-i.*`` and the others dropped."""
        chosen = {f".edges.{_edge_key(j, i)}.": str(config[gene_name(j, i)]) for j, i in EDGES}
        state: dict[str, Tensor] = {}
        for key, tensor in self.net.state_dict().items():
            edge = next((e for e in chosen if e in key), None)
            if edge is None:
                state[key] = tensor.detach().clone()
                continue
            head, rest = key.split(edge, 1)
            op, _, tail = rest.partition(".")
            if op == chosen[edge]:
                state[f"{head}{edge}{tail}"] = tensor.detach().clone()
        return state

    def _describe(self, config: Config) -> SubnetShape:
        ops = [str(config[gene_name(j, i)]) for j, i in EDGES]
        counts = {op: ops.count(op) for op in OPERATIONS}
        layers = [LayerShape("stem", {"in_channels": 3, "channels": self.net.channels,
                                      "resolution": IMAGE_SIZE})]
        c_prev, size = self.net.channels, IMAGE_SIZE
        for kind, c_out in nb201_layout(self.net.channels, self.net.cells_per_stage):
            if kind == "reduction":
                layers.append(LayerShape(kind, {"in_channels": c_prev, "channels": c_out,
                                                "resolution": size}))
                size //= 2
            else:
                layers.append(LayerShape(kind, {"channels": c_out, "resolution": size,
                                                **counts}))
            c_prev = c_out
        layers.append(LayerShape("head", {"channels": c_prev, "classes": self.net.num_classes}))
        return SubnetShape(family=self.family, layers=tuple(layers),
                           dims={**self._sizes(), "image_size": IMAGE_SIZE})

    def _sizes(self) -> dict[str, int]:
        return {"channels": self.net.channels, "cells_per_stage": self.net.cells_per_stage,
                "num_classes": self.net.num_classes}

    def _architecture(self) -> dict[str, Any]:
        return self._sizes()
