"""OFA's progressive shrinking as a :class:`TrainingScheme`.

Cai et al., "Once-for-All: Train One Network and Specialize it for Efficient
Deployment", ICLR 2020, Section 3.2. The full network is trained first; then the
sampled space widens phase by phase: elastic kernel size, elastic depth ({4, 3} then
{4, 3, 2}), elastic expand ratio ({6, 4} then {6, 4, 3}). Genes not yet elastic stay at
their largest value. Every shrinking step sums the losses of ``subnets`` random subnets
(OFA's ``dynamic_batch_size``: 1 for kernel, 2 for depth, 4 for expand), each
``CE + kd_ratio * KD`` where KD is the soft-target cross-entropy against a frozen copy
of the trained full network (the teacher), run at the student's resolution. Before each
expand phase every block's middle channels are sorted by importance. Each phase is a
training run of its own, as in OFA: a fresh optimiser state and its own warm-up and
cosine schedule (:class:`~nas.supernets.training._schemes.TrainingRun`).

Elastic resolution: OFA samples one image size per training batch, in every phase
(its data loader resizes each batch), so each step here draws one resolution that all
its subnets share, the full-network phase included.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas._space import Config
from nas._supernet import Supernet
from nas._task import Task
from nas.supernets.training._schemes import TrainingRun, TrainingScheme, WeightedConfigs

if TYPE_CHECKING:
    from nas.supernets.ofa import OFAMobileNetV3


@dataclass(frozen=True)
class Phase:
    """One phase: the choices sampled (``None``: the space's), its share of the steps,
    the subnets per step, the channel-sorting stage run when it starts (``None``: no
    sorting), and its learning rate (relative to the recipe's peak) and warm-up: each
    phase is a run of its own, with a fresh optimiser state and its own cosine schedule,
    as OFA trains it. The resolution is elastic in every phase (module docstring)."""

    name: str
    fraction: float
    subnets: int
    kernel_sizes: tuple[int, ...] | None = None
    depths: tuple[int, ...] | None = None
    expand_ratios: tuple[int, ...] | None = None
    sort_stage: int | None = None
    lr_scale: float = 1.0
    warmup: bool = True


DEFAULT_FRACTIONS = (180 / 590, 120 / 590, 25 / 590, 120 / 590, 25 / 590, 120 / 590)
"""Shares of the steps of the six phases: OFA's ImageNet epochs (full network 180,
kernel 120, depth 25 + 120, expand 25 + 120; ``train_ofa_net.py`` and the paper)."""


OFA_LR_SCALES = (1.0, 1.0, 2.5e-3 / 3e-2, 7.5e-3 / 3e-2, 2.5e-3 / 3e-2, 7.5e-3 / 3e-2)
"""OFA's per-phase learning rates relative to the kernel phase's (``train_ofa_net.py``:
kernel 3e-2, first depth and expand phases 2.5e-3, second ones 7.5e-3; SGD on ImageNet).
Not the default: with AdamW on digits (1,000 steps) they leave the smallest subnet at
0.848 validation accuracy against 0.948 with equal rates (largest 1.000 either way)."""

OFA_WARMUP = (True, True, False, True, False, True)
"""Which phases warm up (OFA: 5 epochs in kernel and the second depth and expand phases,
none in the short first ones)."""


def ofa_phases(
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    lr_scales: Sequence[float] = (1.0,) * 6,
) -> tuple[Phase, ...]:
    """OFA's six phases for a space with kernels {3,5,7}, depths {2,3,4}, expand {3,4,6}.

    Args:
        fractions: the phases' shares of the steps.
        lr_scales: each phase's peak learning rate relative to the recipe's
            (:data:`OFA_LR_SCALES` for OFA's own ratios).
    """
    for name, values in (("fractions", fractions), ("lr_scales", lr_scales)):
        if len(values) != 6 or any(not v >= 0 for v in values):
            raise ValueError(f"{name} must be 6 non-negative numbers, got {list(values)}")
    if abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {list(fractions)}")
    f, lr, warm = [float(x) for x in fractions], [float(x) for x in lr_scales], OFA_WARMUP
    return (
        Phase("full", f[0], 1, (7,), (4,), (6,), lr_scale=lr[0], warmup=warm[0]),
        Phase("kernel", f[1], 1, (3, 5, 7), (4,), (6,), lr_scale=lr[1], warmup=warm[1]),
        Phase("depth-1", f[2], 2, (3, 5, 7), (3, 4), (6,), lr_scale=lr[2], warmup=warm[2]),
        Phase("depth-2", f[3], 2, (3, 5, 7), (2, 3, 4), (6,), lr_scale=lr[3], warmup=warm[3]),
        Phase("expand-1", f[4], 4, (3, 5, 7), (2, 3, 4), (4, 6), sort_stage=1,
              lr_scale=lr[4], warmup=warm[4]),
        Phase("expand-2", f[5], 4, (3, 5, 7), (2, 3, 4), (3, 4, 6), sort_stage=2,
              lr_scale=lr[5], warmup=warm[5]),
    )


def soft_cross_entropy(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum(p_teacher * log p_student)`` (OFA's KD loss)."""
    return -(soft_targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()


class ProgressiveShrinking(TrainingScheme):
    """OFA's progressive shrinking with knowledge distillation from the full network.

    Args:
        kd_ratio: weight of the distillation loss (OFA: 1.0); 0 trains without teacher.
        fractions: the six phases' shares of the steps (:data:`DEFAULT_FRACTIONS`).
        lr_scales: the phases' peak learning rates relative to the recipe's (equal by
            default; :data:`OFA_LR_SCALES` for OFA's ratios).

    The teacher is built when the first shrinking phase starts: a deep copy of the
    supernet with its largest kernel, depth and expand ratio, every parameter frozen.
    Like OFA's teacher (kept in train mode) it normalises with batch statistics; it does
    not track running statistics and its dropout is off, so nothing in it changes during
    shrinking.
    """

    name = "progressive-shrinking"

    def __init__(
        self, *, kd_ratio: float = 1.0,
        fractions: Sequence[float] = DEFAULT_FRACTIONS,
        lr_scales: Sequence[float] = (1.0,) * 6,
    ) -> None:
        if not kd_ratio >= 0:
            raise ValueError(f"kd_ratio must be >= 0, got {kd_ratio!r}")
        self.kd_ratio = float(kd_ratio)
        self.phases = ofa_phases(fractions, lr_scales)
        self.teacher: OFAMobileNetV3 | None = None
        self._ends: list[int] = []
        self._current = -1

    def start(self, supernet: Supernet, task: Task, *, steps: int) -> None:
        if not hasattr(supernet, "sort_channels"):
            raise TypeError(
                f"progressive shrinking trains OFA supernets, got {type(supernet).__name__}"
            )
        self._ends = self._phase_ends(steps)
        self._current = -1
        self.teacher = None

    def runs(self, steps: int) -> tuple[TrainingRun, ...]:
        """One run per phase (fresh optimiser state, own schedule); empty phases skipped."""
        firsts = [1] + [end + 1 for end in self._phase_ends(steps)[:-1]]
        runs: dict[int, TrainingRun] = {}
        for first, phase in zip(firsts, self.phases):
            if first <= steps:
                runs[first] = TrainingRun(first, phase.lr_scale, phase.warmup)
        return tuple(runs.values())

    def _phase_ends(self, steps: int) -> list[int]:
        """The last step of each phase."""
        ends = [int(round(b)) for b in np.cumsum([p.fraction for p in self.phases]) * steps]
        ends[-1] = steps
        return ends

    def phase_at(self, step: int) -> int:
        """The index of the phase that ``step`` (from 1) belongs to."""
        for i, end in enumerate(self._ends):
            if step <= end:
                return i
        return len(self.phases) - 1

    def plan(
        self, step: int, steps: int, supernet: Supernet, rng: np.random.Generator
    ) -> WeightedConfigs:
        if not self._ends:
            raise RuntimeError("call start() before plan()")
        index = self.phase_at(step)
        while self._current < index:  # enter every phase up to this one, in order
            self._current += 1
            self._enter(self.phases[self._current], supernet)
        phase = self.phases[index]
        resolutions = supernet.space.gene("resolution").choices
        resolution = resolutions[int(rng.integers(len(resolutions)))]  # one per batch
        configs = [self._sample(phase, supernet, rng, resolution)
                   for _ in range(phase.subnets)]
        return [(config, 1.0) for config in configs]  # OFA sums the subnets' losses

    def _enter(self, phase: Phase, supernet: Supernet) -> None:
        if phase.name != "full" and self.teacher is None and self.kd_ratio > 0:
            self.teacher = _frozen_teacher(supernet)
        if phase.sort_stage is not None:
            supernet.sort_channels(phase.sort_stage)

    def _sample(
        self, phase: Phase, supernet: Supernet, rng: np.random.Generator, resolution: int
    ) -> Config:
        space = supernet.space

        def pick(choices: tuple[Any, ...], allowed: tuple[int, ...] | None) -> Any:
            pool = [c for c in choices if allowed is None or c in allowed] or [max(choices)]
            return pool[int(rng.integers(len(pool)))]

        values: dict[str, Any] = {}
        for gene in space.genes:
            field = gene.name.rsplit(".", 1)[-1]
            if field == "resolution":
                values[gene.name] = resolution
            else:
                allowed = {"kernel": phase.kernel_sizes, "depth": phase.depths,
                           "expand": phase.expand_ratios}[field]
                values[gene.name] = pick(gene.choices, allowed)
        return space.config(values)

    def loss(
        self, supernet: Supernet, task: Task, batch: tuple[torch.Tensor, ...], config: Config
    ) -> torch.Tensor:
        if self.teacher is None or self._current <= 0:
            return task.loss(supernet, batch)
        if len(batch) != 2:
            raise ValueError(f"progressive shrinking needs (images, labels) batches, got "
                             f"{len(batch)} tensors")
        images, labels = batch
        logits = supernet(images)
        loss = F.cross_entropy(logits, labels,
                               label_smoothing=float(getattr(task, "label_smoothing", 0.0)))
        teacher_config = dict(self.teacher.space.largest())
        teacher_config["resolution"] = config["resolution"]
        self.teacher.activate(teacher_config)
        with torch.no_grad():
            soft = F.softmax(self.teacher(images), dim=-1)
        return loss + self.kd_ratio * soft_cross_entropy(logits, soft)

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """The phase entered last and the teacher's weights (once it exists)."""
        tensors = {} if self.teacher is None else dict(self.teacher.state_dict())
        return {"current": self._current, "teacher": self.teacher is not None}, tensors

    def restore(self, supernet: Supernet, meta: dict[str, Any],
                tensors: dict[str, torch.Tensor]) -> None:
        self._current = int(meta["current"])
        if meta["teacher"]:
            self.teacher = _frozen_teacher(supernet)
            self.teacher.load_state_dict(tensors)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kd_ratio": self.kd_ratio,
            "kd_loss": "soft-target cross-entropy",
            "teacher": "frozen copy of the full network after the full phase",
            "channel_sorting": "L1 norm of project weights, before each expand phase",
            "phases": [
                {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(p).items()}
                for p in self.phases
            ],
        }


def _frozen_teacher(supernet: Supernet) -> OFAMobileNetV3:
    teacher = copy.deepcopy(supernet)
    teacher.set_calibration(None)
    teacher.requires_grad_(False)
    for module in teacher.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.track_running_stats = False  # batch statistics, nothing updated
        elif isinstance(module, nn.Dropout):
            module.p = 0.0
    return teacher.train()
