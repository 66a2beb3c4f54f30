"""Predicted versus measured latency of a study's Pareto subnets (``nas hw check``).

A search ranks subnets by the latency its target gives, and for ``rpi4``, ``xeon`` and
``titanxp`` that figure is a model's prediction. Users pick a subnet by it and then meet
the real figure on their device (HAT users report a 200 ms constraint measured at
270 ms). :func:`check_study` measures the feasible Pareto subnets of a finished study
on a target that measures (this CPU, or a device running ``nas agent``) and says how
far the prediction holds:

- per subnet: the stored latency, the measured one with its 95% interval, their ratio,
  and whether each meets the study's budget;
- over the front: Spearman and Kendall rank correlation (does the ranking hold?), the
  median and largest absolute percentage error, and the scale factor (median of
  measured / predicted) between the predicted device and the measuring one.

On this CPU a subnet is timed as it deploys: a seq2seq subnet that exports an encoder
and a decoder-step graph (HAT's) runs them in ONNX Runtime, encoding once and decoding
the task's probe word step by step with the cache; other subnets run the task's
latency probe on the PyTorch module. ``runtime`` says which.

The result is stored in the study as the user attribute ``hw_check/<fingerprint of the
measuring target>`` (a later check on the same target replaces it); the study's trials
and search metadata are never touched.
"""

from __future__ import annotations

import random
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from nas._extras import installed
from nas._hardware import HardwareTarget, get_hardware
from nas._space import Config
from nas._supernet import Supernet
from nas._task import Task, get_task
from nas.hardware._latency_dataset import ProfileSettings, dataset_fingerprint
from nas.hardware._local import LocalCPUTarget
from nas.hardware._profile import Measurement, measure_latency, median_ci, tukey_outliers
from nas.hardware._remote import RemoteMeasurement, RemoteTarget
from nas.predictors import kendall_tau, spearman
from nas.studies import (
    Study,
    TrialRecord,
    default_storage,
    front_of,
    load_study,
    study_problem,
    study_supernet,
)
from nas.studies._graphs import decoding_graphs_of, write_decoding_graphs

if TYPE_CHECKING:
    from nas.supernets.hat import DecodingGraphs

LATENCY = "latency_ms"
"""The trial metric that holds the latency the study's target gave."""

ATTRIBUTE_PREFIX = "hw_check/"
"""Study user attributes that hold checks, one per measuring target's fingerprint."""

ORT = "onnxruntime"
"""How the runtime of deployed graphs begins (``runtime``: "onnxruntime 1.x: ...")."""

MEASURABLE = "local-cpu (this CPU) or remote:HOST:PORT (a device running `nas agent`)"


@dataclass(frozen=True)
class SubnetCheck:
    """One Pareto subnet: the latency the study stored against the one measured now.

    Milliseconds throughout; ``ratio`` is measured / predicted. The budget flags are
    None when the study has no latency budget.
    """

    trial: int
    predicted_ms: float
    measured_ms: float
    ci_low_ms: float
    ci_high_ms: float
    n_runs: int
    converged: bool
    ratio: float
    within_budget_predicted: bool | None
    within_budget_measured: bool | None
    config: dict[str, Any]


@dataclass(frozen=True)
class Agreement:
    """How well predicted latencies match measured ones over a set of subnets.

    ``spearman`` and ``kendall_tau`` are None below two subnets (no ranking to compare);
    ``median_ape`` and ``max_ape`` are the absolute percentage errors of the prediction,
    ``|predicted - measured| / measured``, as fractions; ``scale`` is the median of
    measured / predicted, the factor that carries the predicted device's figures over
    to the measuring one.
    """

    n: int
    spearman: float | None
    kendall_tau: float | None
    median_ape: float
    max_ape: float
    scale: float


@dataclass(frozen=True)
class HardwareCheck:
    """The result of :func:`check_study`; :meth:`to_dict` is the ``--json`` document."""

    study: str
    storage: str
    predicted_on: str
    predicted_fingerprint: str
    measured_on: str
    measured_fingerprint: str
    budget_ms: float | None
    subnets: tuple[SubnetCheck, ...]
    agreement: Agreement
    runtime: str
    note: str
    attribute: str
    checked_at: str
    settings: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_study(
    name: str,
    *,
    storage: str | None = None,
    on: str = "local-cpu",
    settings: ProfileSettings | None = None,
    progress: bool = False,
) -> HardwareCheck:
    """Measure the feasible Pareto subnets of study ``name`` on ``on`` and compare them
    with the latency the study's target gave; record the result in the study.

    The Pareto set is the one ``nas studies show`` and ``nas export --pareto`` use. The
    supernet and task are the ones the search ran on (by the study's metadata; a
    supernet whose checkpoint differs is refused). Subnets are measured in a shuffled
    order, so that a drift in the machine's load does not line up with the ranking.

    Args:
        name: the study.
        storage: its storage URL (default :func:`~nas.studies.default_storage`).
        on: ``local-cpu`` (timed here until the 95% interval of the median is within
            ``settings.rel_ci``) or ``remote:HOST:PORT`` (one request of
            ``settings.min_repeats`` runs on the device, the interval computed here).
        settings: threads, warm-up, repeats and precision (``nas profile``'s defaults).
        progress: show a progress bar on stderr.

    Raises:
        ValueError: ``on`` does not measure (e.g. ``rpi4``), the study is missing, has
            no feasible trial or stores no latency, or the agent fails.
        StudyMismatchError: the shipped supernet's checkpoint is not the study's.
    """
    settings = settings or ProfileSettings()
    target = measurable_target(on, settings)
    study = load_study(name, storage or default_storage())
    front = _pareto_trials(study)
    fingerprint = dataset_fingerprint(target, settings)  # reaches an agent before the long work
    supernet, task = study_supernet_and_task(study)
    measured = _measure_all(supernet, task, target, settings, front, progress=progress)
    budget = study_problem(study).upper_bound(LATENCY)
    rows = tuple(_row(t, measured[t.number], budget) for t in front)
    runtimes = sorted({m.environment.get("runtime", "") for m in measured.values()})
    agreement = rank_agreement([r.predicted_ms for r in rows], [r.measured_ms for r in rows])
    check = HardwareCheck(
        study=study.name, storage=study.storage, predicted_on=study.meta.hardware,
        predicted_fingerprint=study.meta.hardware_fingerprint, measured_on=target.name,
        measured_fingerprint=fingerprint, budget_ms=budget, subnets=rows,
        agreement=agreement, runtime="; ".join(runtimes),
        note=f"Measured: {'; '.join(runtimes)}. "
             + _note(study, target.name, fingerprint, agreement,
                     deployed=any(r.startswith(ORT) for r in runtimes)),
        attribute=ATTRIBUTE_PREFIX + fingerprint,
        checked_at=datetime.now(UTC).isoformat(timespec="seconds"),
        settings=asdict(settings),
        environment=dict(next(iter(measured.values())).environment),
    )
    study.optuna_study.set_user_attr(check.attribute, check.to_dict())
    return check


def measurable_target(name: str, settings: ProfileSettings) -> HardwareTarget:
    """The target ``name`` set up to measure with ``settings``.

    Raises:
        ValueError: an unknown name (listing the known ones), or a target that predicts
            rather than measures, naming the measurable choices.
    """
    target = get_hardware(name)
    if isinstance(target, LocalCPUTarget):
        return LocalCPUTarget(threads=settings.threads, warmup=settings.warmup,
                              repeats=settings.min_repeats)
    if isinstance(target, RemoteTarget):
        return RemoteTarget.from_spec(name, threads=settings.threads, warmup=settings.warmup,
                                      repeats=settings.min_repeats)
    raise ValueError(f"target {name!r} does not measure latency, it predicts it; "
                     f"check against {MEASURABLE}")


def study_supernet_and_task(study: Study) -> tuple[Supernet, Task]:
    """The supernet and task the study's search ran on, rebuilt from its metadata as
    ``nas search`` built them (the shipped supernet, its task unless the study names
    one).

    Raises:
        StudyMismatchError: the shipped checkpoint is not the one the study was run on
            (the stored figures would describe other weights).
        ValueError: neither the study nor the supernet names a task.
    """
    supernet = study_supernet(study)
    task_name = study.meta.task or supernet.task_name
    if not task_name:
        raise ValueError(f"study {study.name!r} records no task to take a latency probe from")
    return supernet, get_task(task_name)


def rank_agreement(predicted: Sequence[float], measured: Sequence[float]) -> Agreement:
    """Rank correlation, absolute percentage error and scale of ``predicted`` against
    ``measured`` (one entry per subnet, ms).

    Raises:
        ValueError: the lengths differ, there are none, or a value is not positive.
    """
    p = np.asarray(predicted, dtype=float)
    m = np.asarray(measured, dtype=float)
    if p.shape != m.shape or p.size == 0:
        raise ValueError(f"need as many predicted as measured latencies, at least one; "
                         f"got {p.size} and {m.size}")
    if not ((p > 0).all() and (m > 0).all()):
        raise ValueError("latencies must be positive to compare them")
    ranked = p.size >= 2
    ape = np.abs(p - m) / m
    return Agreement(
        n=int(p.size),
        spearman=spearman(m, p) if ranked else None,
        kendall_tau=kendall_tau(m, p) if ranked else None,
        median_ape=float(np.median(ape)),
        max_ape=float(ape.max()),
        scale=float(np.median(m / p)),
    )


def _pareto_trials(study: Study) -> list[TrialRecord]:
    front = front_of(study.trials(), study_problem(study))
    if not front:
        raise ValueError(f"study {study.name!r} has no feasible trial to check")
    if any(LATENCY not in t.metrics for t in front):
        raise ValueError(f"study {study.name!r} stores no {LATENCY} for its trials; "
                         "there is no prediction to check")
    return front


def _measure_all(
    supernet: Supernet,
    task: Task,
    target: HardwareTarget,
    settings: ProfileSettings,
    front: Sequence[TrialRecord],
    *,
    progress: bool,
) -> dict[int, Measurement]:
    """Measurements by trial number, taken in a seeded shuffled order."""
    from nas._progress import progress_bar

    order = list(front)
    random.Random(0).shuffle(order)
    measured: dict[int, Measurement] = {}
    for trial in progress_bar(order, desc=f"check on {target.name}", unit="subnet",
                              disable=not progress, dynamic_ncols=True):
        config = supernet.space.config(trial.config)
        measured[trial.number] = measure_subnet(supernet, config, task, target, settings)
    return measured


def measure_subnet(
    supernet: Supernet,
    config: Config,
    task: Task,
    target: HardwareTarget,
    settings: ProfileSettings,
) -> Measurement:
    """The latency of the dense subnet ``config`` on ``target`` with its 95% interval.

    On this CPU the deployed graphs (:func:`measure_deployed`) or else the task's
    latency probe are timed with :func:`measure_latency`'s stopping rule; a remote
    device times a fixed number of runs, whose durations give the interval here. The
    measurement's ``environment["runtime"]`` says what ran.
    """
    if isinstance(target, RemoteTarget):
        remote = _remote_measurement(target.measure(supernet, config, task), settings)
        return _with_runtime(remote, f"the agent at {target.name}: the task's latency probe "
                                     "on the PyTorch module")
    model = supernet.extract(config).to("cpu").eval()
    graphs = decoding_graphs_of(model) if installed("onnx") else None
    if graphs is not None and hasattr(task, "vocab_document"):
        return measure_deployed(model, graphs, task, settings)
    with torch.inference_mode():
        measured = measure_latency(task.latency_probe(model), threads=settings.threads,
                                   warmup=settings.warmup, min_repeats=settings.min_repeats,
                                   max_repeats=settings.max_repeats, rel_ci=settings.rel_ci)
    return _with_runtime(measured, f"torch {torch.__version__}: the task's latency probe on "
                                   "the PyTorch module")


def measure_deployed(model: torch.nn.Module, graphs: DecodingGraphs, task: Task,
                     settings: ProfileSettings) -> Measurement:
    """Latency of ``model``'s encoder and decoder-step ONNX graphs as they deploy: the
    task's probe word encoded once, then exactly its probe steps decoded greedily with
    the cache, by the loop the model card prints (so the same work as the PyTorch probe).

    The graphs are exported and checked against the model's greedy decoding first.
    """
    from nas.studies import _decoding_loop as loop

    src = task.example_inputs()[0]  # (1, S): the probe word
    steps = task.probe_steps
    reference = model.greedy_decode(src, max_len=min(src.shape[1] + 4, model.max_positions))
    vocab = task.vocab_document()
    with tempfile.TemporaryDirectory(prefix="nas-hw-check-") as folder:
        spec = write_decoding_graphs(graphs, src, reference, vocab,
                                     Path(folder), ["onnx"])
        files = spec["files"]["onnx"]
        encoder = loop.onnx_runner(Path(folder) / files["encoder"], threads=settings.threads)
        step = loop.onnx_runner(Path(folder) / files["step"], threads=settings.threads)
    array = src.numpy()
    measured = measure_latency(
        lambda: loop.greedy_decode(encoder, step, array, spec, vocab, steps=steps),
        threads=settings.threads, warmup=settings.warmup, min_repeats=settings.min_repeats,
        max_repeats=settings.max_repeats, rel_ci=settings.rel_ci,
    )
    return _with_runtime(measured, f"{spec['checks']['onnx']['checked_with']}: encoder + "
                                   f"decoder-step graphs, {steps} greedy steps with the cache")


def _with_runtime(measured: Measurement, runtime: str) -> Measurement:
    return replace(measured, environment={**measured.environment, "runtime": runtime})


def _remote_measurement(remote: RemoteMeasurement, settings: ProfileSettings) -> Measurement:
    """The agent's durations as a :class:`Measurement`, its interval computed here."""
    durations = remote.durations_ms
    median = statistics.median(durations)
    low, high = median_ci(durations)
    converged = max(high - median, median - low) <= settings.rel_ci * median
    return Measurement(median, low, high, len(durations), converged,
                       tukey_outliers(durations), durations, remote.environment)


def _row(trial: TrialRecord, measured: Measurement, budget: float | None) -> SubnetCheck:
    predicted = trial.metrics[LATENCY]
    return SubnetCheck(
        trial=trial.number,
        predicted_ms=predicted,
        measured_ms=measured.median_ms,
        ci_low_ms=measured.ci_low_ms,
        ci_high_ms=measured.ci_high_ms,
        n_runs=measured.n_runs,
        converged=measured.converged,
        ratio=measured.median_ms / predicted,
        within_budget_predicted=None if budget is None else predicted <= budget,
        within_budget_measured=None if budget is None else measured.median_ms <= budget,
        config=dict(trial.config),
    )


def _note(study: Study, measured_on: str, fingerprint: str, agreement: Agreement, *,
          deployed: bool) -> str:
    """What the figures can be trusted to say, in plain words."""
    if study.meta.hardware_fingerprint == fingerprint and deployed:
        return (f"The study's figures were measured on this same target ({measured_on}) on "
                "the PyTorch module; these are the deployed ONNX graphs, so the ratio is the "
                "runtimes' difference as well as run-to-run noise.")
    if study.meta.hardware_fingerprint == fingerprint:
        return (f"The study's figures were measured on this same target ({measured_on}): "
                "the errors are the measurement's run-to-run reproducibility.")
    return (f"{study.meta.hardware} stands for its own device; unless {measured_on} is that "
            f"device, a large absolute error is expected (measured runs at {agreement.scale:.3g}"
            f" x the predicted figures here). Judge the prediction by its ranking: Spearman "
            "and Kendall tau near 1 mean the search ordered these subnets as this machine "
            "does.")
