"""The ``local-cpu-model`` target: the structured per-layer latency model, calibrated here.

``local-cpu`` times every subnet it is asked about (about a second each); the HAT
targets (``rpi4``, ``xeon``, ``titanxp``) predict devices we do not have from HAT's
measurements. ``local-cpu-model`` sits between them: the physically structured model of
:mod:`nas.hardware._latency_model` (per-layer and per-step overheads plus per-MAC costs,
non-negative), with its coefficients fitted on subnets measured on this machine, so a
search gets this CPU's latency at the price of arithmetic, with a stated error.

Calibration (``nas hw calibrate local-cpu-model``, :func:`calibrate_local`) measures
``n`` distinct random subnets with the profiler (:func:`~nas.hardware._profile.measure_latency`),
each twice: the whole latency probe (greedy decoding of the task's example) and its
encoder alone, so encoder and decoder terms are fitted separately
(:func:`~nas.hardware._latency_model.fit_split_coefficients`, our dense model's decoding
scheme, the probe's workload). A quarter of the subnets is held out to state the
error; the saved coefficients are then fitted on all ``n``. The calibration is a small
JSON file in the user cache (``$NAS_CACHE`` or ``~/.cache/nas/``) that records the
machine (CPU model, thread count, torch version); the target refuses a calibration
made on another machine.

What is timed: thread CPU time with one intra-op thread, and each subnet's figure is
its fastest run. This machine is shared: other processes stretch wall-clock medians by
10-20% from one minute to the next (up to 2x while another process holds a core), and
even CPU-time medians by about 9% (caches and cores are shared too), while the fastest
CPU-time run moves by about 3%. The model
therefore predicts the uncontended single-thread latency; ``local-cpu`` reports the
wall-clock median, which is that plus whatever the machine's load adds at the time.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nas._files import write_text_atomic
from nas._hardware import HARDWARE, HardwareTarget, Provenance
from nas._space import Config
from nas._supernet import Supernet
from nas._task import Task, Workload
from nas.hardware._latency_dataset import ProfileSettings, sample_new_configs
from nas.hardware._latency_model import (
    LatencyCoefficients,
    fit_split_coefficients,
    heldout_split,
    regression_errors,
)
from nas.hardware._macs import (
    DENSE_HAT_DECODING,
    Seq2SeqShape,
    decoder_macs,
    encoder_macs,
)
from nas.hardware._profile import Measurement, measure_latency
from nas.hardware._quant_latency import (
    MODELLED_BITS,
    RANDOM_POLICIES,
    QuantizedCalibration,
    QuantizedCosts,
    check_bits,
    fit_quantized_costs,
    measure_int8,
    random_policies,
)
from nas.hardware._timing import cpu_model
from nas.quant import calibration_batches
from nas.quant._work import QuantizedWork, quantized_work

logger = logging.getLogger(__name__)

TARGET_NAME = "local-cpu-model"
CALIBRATE_COMMAND = f"nas hw calibrate {TARGET_NAME}"
CACHE_ENV = "NAS_CACHE"
CALIBRATION_FILENAME = f"{TARGET_NAME}.json"
SHIPPED_QUANTIZED = "quantized_cpu_calibration.json"
"""The calibration with int8 costs shipped in ``data/`` (``python -m
nas.hardware.calibrate --quantized``): the modelled HAT targets price int8 from it."""
FORMAT_VERSION = 1
THREADS = 1
"""Intra-op threads while calibrating: one, so thread CPU time counts all the work."""

HELDOUT_FRACTION = 0.25
MIN_SAMPLES = 8
"""Two held out (a quarter) is the fewest with a rank correlation; six fit the model."""

SETTINGS = ProfileSettings(threads=THREADS, warmup=3, min_repeats=10, max_repeats=60,
                           rel_ci=0.03)
"""How each subnet is timed: rounds of 10 runs until the median's 95% interval is within
±3%, at most 60 runs; the figure is the fastest of them."""


# -- where the calibration lives ---------------------------------------------------------


def cache_dir() -> Path:
    """The user cache of the platform: ``$NAS_CACHE`` if set, else ``~/.cache/nas``."""
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else Path.home() / ".cache" / "nas"


def calibration_path() -> Path:
    """Where ``nas hw calibrate local-cpu-model`` writes, and the target reads."""
    return cache_dir() / CALIBRATION_FILENAME


def machine_fingerprint() -> dict[str, Any]:
    """What a calibration is valid for: the CPU model, the thread count and torch's
    version (each changes the costs the model prices)."""
    return {"cpu": cpu_model(), "threads": THREADS, "torch": torch.__version__}


def _describe_machine(machine: Mapping[str, Any]) -> str:
    return f"{machine.get('cpu')}, {machine.get('threads')} thread(s), torch {machine.get('torch')}"


# -- the calibration record --------------------------------------------------------------


@dataclass(frozen=True)
class LocalCalibration:
    """The structured model's coefficients on this machine and how well they predict.

    Attributes:
        coefficients: fitted on all ``n`` measured subnets.
        machine: :func:`machine_fingerprint` at calibration time.
        space: the search space the subnets were drawn from.
        task: the task whose latency probe was timed.
        workload: the probe's inference (source tokens, decoder steps).
        n: subnets measured.
        heldout: error on the held-out subnets of the model fitted on the others
            (``median_ape``, ``mape`` as fractions; ``rmse_ms``, ``kendall_tau``, ``n``).
        seed: seeds the subnets and the split.
        protocol: how each subnet was timed.
        date: when (UTC, ISO 8601).
        quantized: the quantized latency model (``--quantized``), else ``None``.
    """

    coefficients: LatencyCoefficients
    machine: dict[str, Any]
    space: str
    task: str
    workload: Workload
    n: int
    heldout: dict[str, float]
    seed: int
    protocol: dict[str, Any]
    date: str
    quantized: QuantizedCalibration | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
            "coefficients": self.coefficients.to_dict(),
            "workload": dataclasses.asdict(self.workload),
            "quantized": self.quantized.to_dict() if self.quantized is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LocalCalibration:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: another format version, or a field missing.
        """
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"the {TARGET_NAME} calibration has format_version "
                f"{data.get('format_version')!r}, this version reads {FORMAT_VERSION}; run "
                f"`{CALIBRATE_COMMAND}`"
            )
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name not in data and f.name != "quantized"]
        if missing:
            raise ValueError(f"the {TARGET_NAME} calibration lacks {', '.join(missing)}; run "
                             f"`{CALIBRATE_COMMAND}`")
        fields = {f.name: data.get(f.name) for f in dataclasses.fields(cls)}
        quantized = data.get("quantized")
        return cls(**{
            **fields,
            "coefficients": LatencyCoefficients(**data["coefficients"]),
            "workload": Workload(**data["workload"]),
            "quantized": QuantizedCalibration.from_dict(quantized) if quantized else None,
        })

    @property
    def digest(self) -> str:
        """A short hash of the record: changes whenever it is recalibrated."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def save_calibration(calibration: LocalCalibration, path: Path | None = None) -> Path:
    """Write ``calibration`` as JSON (:func:`calibration_path` by default); returns the path."""
    return write_text_atomic(path or calibration_path(),
                             json.dumps(calibration.to_dict(), indent=1) + "\n")


def load_calibration(path: Path | None = None) -> LocalCalibration:
    """The calibration at ``path`` (:func:`calibration_path` by default), checked to be
    this machine's.

    Raises:
        FileNotFoundError: no calibration there.
        ValueError: another format version, or made on another machine.
    """
    p = path or calibration_path()
    if not p.is_file():
        raise FileNotFoundError(f"no {TARGET_NAME} calibration at {p}; run `{CALIBRATE_COMMAND}`")
    calibration = read_calibration(p)
    here = machine_fingerprint()
    if calibration.machine != here:
        raise ValueError(
            f"the {TARGET_NAME} calibration at {p} was made on "
            f"{_describe_machine(calibration.machine)}, not on this machine "
            f"({_describe_machine(here)}); run `{CALIBRATE_COMMAND}`"
        )
    return calibration


def shipped_quantized_path() -> Path:
    """Where the shipped calibration with int8 costs lies in the package."""
    return Path(str(resources.files("nas.hardware").joinpath("data", SHIPPED_QUANTIZED)))


def read_calibration(path: Path) -> LocalCalibration:
    """The calibration at ``path``, whichever machine made it (the shipped one that the
    modelled targets take int8 costs from)."""
    return LocalCalibration.from_dict(json.loads(path.read_text(encoding="utf-8")))


# -- measuring and fitting ---------------------------------------------------------------


def probe_workload(task: Task) -> Workload:
    """The inference the task's latency probe runs: its example's source length and as
    many decoder steps as the example's target has tokens (what ``local-cpu`` times)."""
    src, prev = task.example_inputs()[:2]
    return Workload(src_len=int(src.shape[1]), tgt_len=int(prev.shape[1]))


def subnet_shape(supernet: Supernet, config: Config) -> Seq2SeqShape:
    """The subnet's per-layer widths (raises ``ValueError`` outside the HAT family)."""
    return Seq2SeqShape.from_subnet(supernet.describe(config))


@dataclass(frozen=True)
class SubnetTiming:
    """One subnet timed with the profiler: the whole probe and its encoder alone."""

    total: Measurement
    encoder: Measurement


def measure_subnet(
    supernet: Supernet,
    config: Config,
    task: Task,
    *,
    settings: ProfileSettings = SETTINGS,
    clock: Callable[[], float] = time.thread_time,
) -> SubnetTiming:
    """Time ``config``'s dense subnet: the task's latency probe, then ``encode`` alone.

    ``clock`` is thread CPU time by default (valid with one intra-op thread only);
    ``time.perf_counter`` gives wall-clock figures, what ``local-cpu`` reports.
    """
    model = supernet.extract(config).to("cpu").eval()
    probe = task.latency_probe(model)
    src = task.example_inputs()[0]
    options = _options(settings, clock)
    with torch.inference_mode():
        total = measure_latency(probe, **options)
        encoder = measure_latency(lambda: model.encode(src), **options)
    return SubnetTiming(total, encoder)


def fastest_ms(measurement: Measurement) -> float:
    """A measurement's fastest run: other processes only ever add time, so on a shared
    machine it is the steadiest estimate of the work itself."""
    return min(measurement.durations_ms)


def fit_local(
    shapes: Sequence[Seq2SeqShape],
    workload: Workload,
    encoder_ms: np.ndarray,
    total_ms: np.ndarray,
) -> LatencyCoefficients:
    """The structured model fitted by NNLS, encoder and decoder terms separately (the
    decoder's share being the total minus the encoder), with our dense model's decoding."""
    encoder_ms, total_ms = np.asarray(encoder_ms, float), np.asarray(total_ms, float)
    return fit_split_coefficients(shapes, workload, encoder_ms, total_ms - encoder_ms,
                                  scheme=DENSE_HAT_DECODING)


def predict_ms(
    coefficients: LatencyCoefficients, shapes: Sequence[Seq2SeqShape], workload: Workload
) -> np.ndarray:
    """The model's latency of each shape, ms."""
    return np.array([coefficients.breakdown(s, workload, DENSE_HAT_DECODING).total_ms
                     for s in shapes])


def prediction_errors(measured: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """:func:`regression_errors` plus the median absolute percentage error (a fraction),
    the figure the target is judged by: robust to the odd subnet timed under load."""
    measured, predicted = np.asarray(measured, float), np.asarray(predicted, float)
    median_ape = float(np.median(np.abs(predicted - measured) / measured))
    return {"median_ape": median_ape, **regression_errors(measured, predicted)}


@dataclass(frozen=True)
class CalibrationTimings:
    """What a calibration measured: ``n`` subnets, their fp32 figures and (with
    ``quantized``) each one's figure under a random 32/8-bit policy (``joint``)."""

    configs: list[Config]
    shapes: list[Seq2SeqShape]
    workload: Workload
    encoder_ms: np.ndarray
    total_ms: np.ndarray
    joint: list[Config] | None = None
    works: list[QuantizedWork] | None = None
    int8_ms: np.ndarray | None = None


def time_calibration_subnets(
    supernet: Supernet,
    task: Task,
    *,
    n: int,
    seed: int = 0,
    settings: ProfileSettings = SETTINGS,
    quantized: bool = False,
    progress: bool = False,
) -> CalibrationTimings:
    """Measure the first ``n`` distinct samples of ``space.sample`` with ``seed`` (those
    ``nas profile --seed`` measures), as :func:`calibrate_local` does.

    Raises:
        ValueError: ``n`` out of range, more than one thread, or a supernet outside the
            HAT family.
    """
    space = supernet.space
    if not MIN_SAMPLES <= n <= space.cardinality():
        raise ValueError(f"n must be in [{MIN_SAMPLES}, {space.cardinality()}], got {n}")
    if settings.threads != THREADS:
        raise ValueError(f"settings.threads must be {THREADS} (thread CPU time counts one "
                         f"thread only), got {settings.threads}")
    configs = list(sample_new_configs(space, seed, set(), n))
    shapes = [subnet_shape(supernet, c) for c in configs]  # fail before measuring
    encoder_ms, total_ms = _measure(supernet, configs, task, settings, progress)
    timings = CalibrationTimings(configs, shapes, probe_workload(task), encoder_ms, total_ms)
    if not quantized:
        return timings
    joint = random_policies(supernet, configs, seed)
    works, int8_ms = _measure_int8(supernet, joint, task, settings, progress)
    return dataclasses.replace(timings, joint=joint, works=works, int8_ms=int8_ms)


def fit_timings(
    timings: CalibrationTimings, rows: np.ndarray
) -> tuple[LatencyCoefficients, QuantizedCosts | None]:
    """The structured model and (if timed) the int8 costs, fitted on ``rows``."""
    t = timings
    coefficients = fit_local([t.shapes[i] for i in rows], t.workload, t.encoder_ms[rows],
                             t.total_ms[rows])
    if t.works is None or t.int8_ms is None:
        return coefficients, None
    costs = fit_quantized_costs([t.works[i] for i in rows], (t.int8_ms - t.total_ms)[rows])
    return coefficients, costs


def predict_int8_ms(
    coefficients: LatencyCoefficients, costs: QuantizedCosts, timings: CalibrationTimings,
    rows: np.ndarray,
) -> np.ndarray:
    """The quantized prediction (fp32 model plus int8 delta) of the timed ``rows``."""
    shapes = [timings.shapes[i] for i in rows]
    return (predict_ms(coefficients, shapes, timings.workload)
            + np.array([costs.delta_ms(timings.works[i]) for i in rows]))


def calibrate_local(
    supernet: Supernet,
    task: Task,
    *,
    n: int = 80,
    seed: int = 0,
    settings: ProfileSettings = SETTINGS,
    quantized: bool = False,
    progress: bool = False,
) -> LocalCalibration:
    """Measure ``n`` distinct random subnets here, fit the structured model, state its error.

    The subnets are those of :func:`time_calibration_subnets`. A quarter of them,
    chosen with ``seed``, is held out: the error is that of the model fitted on the
    others; the coefficients returned are then fitted on all ``n``.

    Args:
        supernet: a HAT-family supernet (untrained weights time the same).
        task: the task whose latency probe is timed.
        n: subnets to measure (at least 8).
        seed: seeds the subnets, their policies and the held-out split.
        settings: the profiler's budget per subnet (one thread).
        quantized: also time each subnet under a random 32/8-bit policy on the int8
            kernels and fit the quantized latency model
            (:mod:`nas.hardware._quant_latency`), held out on the same quarter.
        progress: show a progress bar on stderr.

    Raises:
        ValueError: ``n`` out of range, more than one thread, or a supernet outside the
            HAT family.
    """
    timings = time_calibration_subnets(supernet, task, n=n, seed=seed, settings=settings,
                                       quantized=quantized, progress=progress)
    train, test = heldout_split(n, test_fraction=HELDOUT_FRACTION, seed=seed)
    held, held_costs = fit_timings(timings, train)
    heldout = prediction_errors(timings.total_ms[test],
                                predict_ms(held, [timings.shapes[i] for i in test],
                                           timings.workload))
    coefficients, costs = fit_timings(timings, np.arange(n))
    quant = None
    if costs is not None and held_costs is not None:
        quant = QuantizedCalibration(
            costs=costs, n=n, policies=RANDOM_POLICIES,
            heldout=prediction_errors(timings.int8_ms[test],
                                      predict_int8_ms(held, held_costs, timings, test)))
    return LocalCalibration(
        coefficients=coefficients,
        machine=machine_fingerprint(),
        space=supernet.space.name,
        task=task.name,
        workload=timings.workload,
        n=n,
        heldout=heldout,
        seed=seed,
        protocol={"clock": "thread_time", "statistic": "fastest run",
                  **dataclasses.asdict(settings)},
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        quantized=quant,
    )


def _measure(
    supernet: Supernet, configs: Sequence[Config], task: Task, settings: ProfileSettings,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Encoder and total figures (ms) of each config, with a tqdm bar if asked."""
    from nas._progress import progress_bar

    encoder, total = [], []
    for config in progress_bar(configs, desc=f"calibrate {TARGET_NAME}", unit="subnet",
                               disable=not progress, dynamic_ncols=True):
        timing = measure_subnet(supernet, config, task, settings=settings)
        encoder.append(fastest_ms(timing.encoder))
        total.append(fastest_ms(timing.total))
        logger.info("%s: total %.3f ms, encoder %.3f ms", config.key, total[-1], encoder[-1])
    return np.array(encoder), np.array(total)


def _measure_int8(
    supernet: Supernet, joint: Sequence[Config], task: Task, settings: ProfileSettings,
    progress: bool,
) -> tuple[list[QuantizedWork], np.ndarray]:
    """Each joint (32/8-bit) config's quantized work and its int8 figure (ms, fastest
    thread-CPU-time run, as the fp32 figures)."""
    from nas._progress import progress_bar

    batches = calibration_batches(task, seed=0)
    works, figures = [], []
    for config in progress_bar(joint, desc=f"calibrate {TARGET_NAME} int8", unit="subnet",
                               disable=not progress, dynamic_ncols=True):
        work, measurement = measure_int8(
            supernet, task, config, batches,
            lambda fn: measure_latency(fn, **_options(settings, time.thread_time)))
        works.append(work)
        figures.append(fastest_ms(measurement))
        logger.info("%s: int8 %.3f ms", config.key, figures[-1])
    return works, np.array(figures)


def _options(settings: ProfileSettings, clock: Callable[[], float]) -> dict[str, Any]:
    return dict(threads=settings.threads, warmup=settings.warmup,
                min_repeats=settings.min_repeats, max_repeats=settings.max_repeats,
                rel_ci=settings.rel_ci, clock=clock)


# -- the analytic roofline ---------------------------------------------------------------


FP32_BYTES = 4


def roofline_ms(
    shape: Seq2SeqShape, workload: Workload, peak_gflops: float, bandwidth_gbs: float
) -> float:
    """The analytic roofline: every layer pass takes the longer of its arithmetic at
    ``peak_gflops`` and reading its fp32 weights at ``bandwidth_gbs``; nothing else.

    Encoder layers pass once; every decoder step passes every decoder layer (its
    per-step MACs being its decoding MACs over the steps) and the output projection.
    No overheads are priced, so for small models it is a lower bound, not an estimate.

    Raises:
        ValueError: a non-positive peak or bandwidth.
    """
    if peak_gflops <= 0 or bandwidth_gbs <= 0:
        raise ValueError(f"peak_gflops and bandwidth_gbs must be > 0, got {peak_gflops} "
                         f"and {bandwidth_gbs}")

    def seconds(macs: float, params: float) -> float:
        return max(2 * macs / (peak_gflops * 1e9), FP32_BYTES * params / (bandwidth_gbs * 1e9))

    total = 0.0
    for layer in shape.encoder:
        one = dataclasses.replace(shape, encoder=(layer,))
        e, f, q = layer.embed_dim, layer.ffn_dim, layer.qkv_dim
        total += seconds(encoder_macs(one, workload), 4 * e * q + 2 * e * f)
    steps = workload.tgt_len
    for layer in shape.decoder:
        one = dataclasses.replace(shape, decoder=(layer,), tgt_vocab=0.0)
        e, f, q, qc = layer.embed_dim, layer.ffn_dim, layer.qkv_dim, layer.cross_qkv_dim
        params = 4 * e * q + 2 * e * qc + 2 * e * f  # the encoder's keys/values: once, not per step
        total += steps * seconds(decoder_macs(one, workload, DENSE_HAT_DECODING) / steps, params)
    logits = shape.decoder_embed_dim * shape.tgt_vocab
    total += steps * seconds(workload.batch * workload.beam * logits, logits)
    return 1e3 * total


# -- the target --------------------------------------------------------------------------


class LocalModelTarget(HardwareTarget):
    """This machine's CPU, predicted by the structured model calibrated here.

    Predicts the task's latency probe (what ``local-cpu`` times) from the subnet's
    shape alone: no subnet is built or run. The calibration is read on first use and
    kept; predictions are then pure arithmetic (thread safe).

    Args:
        path: a calibration file other than :func:`calibration_path`.
        any_machine: read it whichever machine made it (the shipped calibration the
            modelled HAT targets take int8 costs from); else it must be this machine's.
    """

    name = TARGET_NAME
    description = (f"this machine's CPU, predicted by a per-layer model calibrated here "
                   f"(`{CALIBRATE_COMMAND}`)")

    def __init__(self, *, path: Path | None = None, any_machine: bool = False) -> None:
        if any_machine and path is None:
            raise ValueError("any_machine reads a given calibration file: pass its path")
        self.path = path
        self.any_machine = any_machine
        self._calibration: LocalCalibration | None = None

    def calibration(self) -> LocalCalibration:
        """The calibration (read once).

        Raises:
            FileNotFoundError: none saved yet.
            ValueError: it was made on another machine, or in another format.
        """
        if self._calibration is None:
            self._calibration = (read_calibration(self.path) if self.any_machine
                                 else load_calibration(self.path))
        return self._calibration

    def _latency_ms(self, supernet: Supernet, config: Config, task: Task) -> float:
        calibration = self.calibration()
        if supernet.space.name != calibration.space:
            raise ValueError(
                f"{TARGET_NAME} was calibrated on space {calibration.space!r}, this subnet "
                f"is of {supernet.space.name!r}; run `{CALIBRATE_COMMAND} --supernet NAME`"
            )
        shape = subnet_shape(supernet, config)
        return calibration.coefficients.breakdown(
            shape, probe_workload(task), DENSE_HAT_DECODING).total_ms

    quant_bits = MODELLED_BITS
    """Modelled widths: 8-bit layers priced from int8 kernels measured here, narrower ones
    priced as 8-bit (:mod:`nas.hardware._quant_latency`)."""

    def quantized_latency_ms(self, supernet: Supernet, arch: Config, model: nn.Module,
                             task: Task) -> float:
        """The fp32 prediction of ``arch`` plus the calibrated int8 delta of what
        ``model``'s quantized layers do on the probe.

        Raises:
            ValueError: a width outside :data:`quant_bits`, or a calibration made
                without ``--quantized``.
        """
        check_bits(model, self.name, self.quant_bits)
        costs = self.quantized_calibration().costs
        return self._latency_ms(supernet, arch, task) + costs.delta_ms(quantized_work(model, task))

    def quantized_calibration(self) -> QuantizedCalibration:
        """The quantized latency model of the calibration.

        Raises:
            ValueError: the calibration was made without ``--quantized``.
        """
        quantized = self.calibration().quantized
        if quantized is None:
            raise ValueError(f"the {TARGET_NAME} calibration has no quantized latency model; "
                             f"run `{CALIBRATE_COMMAND} --quantized --force`")
        return quantized

    def provenance(self) -> Provenance:
        c = self.calibration()
        e = c.heldout
        return Provenance(
            method="calibrated",
            source=(
                f"structured latency model (per-layer and per-step overheads, per-MAC "
                f"costs; NNLS) fitted on {c.n} random subnets of {c.space} measured on "
                f"{_describe_machine(c.machine)} on {c.date}"
            ),
            error=dict(e),
            notes=(
                f"On {int(e['n'])} of the {c.n} subnets held out from the fit, the median "
                f"error is {e['median_ape']:.1%} (MAPE {e['mape']:.1%}, Kendall tau "
                f"{e['kendall_tau']:.2f}); the saved coefficients are refitted on all {c.n}.",
                f"It predicts the uncontended single-thread latency of the {c.task} task's "
                f"latency probe ({c.workload.src_len:g} source tokens, "
                f"{c.workload.tgt_len:g} greedy decoder steps): each subnet was timed as "
                f"its fastest run in thread CPU time; local-cpu's wall-clock median adds "
                f"whatever this machine's load adds.",
                f"Valid on this machine only; recalibrate with `{CALIBRATE_COMMAND}` after "
                f"changing the CPU, thread count or torch version.",
                *_quantized_notes(c.quantized),
            ),
            details={"coefficients": c.coefficients.to_dict(), "machine": c.machine,
                     "quantized": c.quantized.to_dict() if c.quantized is not None else None,
                     "workload": dataclasses.asdict(c.workload), "n": c.n, "seed": c.seed,
                     "protocol": c.protocol, "date": c.date, "task": c.task,
                     "space": c.space},
        )

    @property
    def fingerprint(self) -> str:
        return f"{self.name}:{self.calibration().digest}"


def _quantized_notes(quantized: QuantizedCalibration | None) -> tuple[str, ...]:
    if quantized is None:
        return (f"No quantized latencies: calibrate with `{CALIBRATE_COMMAND} --quantized`.",)
    e, c = quantized.heldout, quantized.costs
    return (
        f"Quantized subnets are modelled: the fp32 prediction plus {c.call_ms * 1e3:.1f} us "
        f"per quantized-layer call and {c.ms_per_melem:.2f} ms per million elements "
        f"(de)quantized, minus {c.saved_ms_per_mmac:.3f} ms per million integer MACs, "
        f"fitted on {quantized.n} subnets timed on torch's int8 kernels here "
        f"({quantized.policies}); on {int(e['n'])} held out, MAPE {e['mape']:.1%}, Kendall "
        f"tau {e['kendall_tau']:.2f}.",
        "6-, 4- and 2-bit layers have no kernel here and are priced as 8-bit ones "
        "(modelled, not measured): they gain size, not speed.",
    )


@HARDWARE.register(TARGET_NAME, description=LocalModelTarget.description)
def local_cpu_model() -> HardwareTarget:
    """This machine's CPU, predicted by the per-layer model calibrated here."""
    return LocalModelTarget()
