"""The implementation calibration: our dense HAT model's costs against fairseq's.

HAT's device measurements time HAT's fairseq SuperTransformer, whose per-step cost on a
small model is dominated by Python and framework work (six super-layers visited at every
step, incremental-state dictionaries, sliced weights). Our dense model
(:mod:`nas.supernets.hat._dense`) does far fewer operations per step. Applied as they
are, the device models would price fairseq's overhead, not ours.

So we time our dense model here, on this machine's CPU, over subnets of the G2P space
(varying encoder depth, decoder depth, widths and step counts), fit the same structured
form (:func:`~nas.hardware._latency_model.fit_total_coefficients`), and relate each
term to the Xeon E5-2640's fairseq term in HAT's data. Our implementation on a device
is then, term by term::

    ours on device = ours here * (fairseq on device / fairseq on the Xeon E5-2640)

i.e. each device coefficient times the *implementation factor* ``ours here / fairseq
on the Xeon``. Assumptions, stated wherever the figures are shown: this CPU does one
framework operation and one MAC as fast as HAT's Xeon E5-2640 did, and the device's
speed relative to the Xeon (from HAT's data) is the same for our implementation as for
fairseq. Neither can be checked without the devices.

The calibration is recorded once in ``data/implementation_calibration.json`` with its
provenance; ``python -m nas.hardware.calibrate`` regenerates it.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas._space import Config, SearchSpace
from nas._supernet import Supernet
from nas._task import Task, Workload
from nas.hardware._hat_data import HAT_WORKLOAD
from nas.hardware._hat_latency import fit_hat_device
from nas.hardware._latency_model import (
    MEGA,
    LatencyCoefficients,
    fit_total_coefficients,
    regression_errors,
)
from nas.hardware._macs import DENSE_HAT_DECODING, FAIRSEQ_INCREMENTAL, Seq2SeqShape, seq2seq_macs
from nas.hardware._timing import cpu_details, cpu_model, time_ms, torch_threads

logger = logging.getLogger(__name__)

REFERENCE_DEVICE = "xeon"
"""HAT's device whose fairseq costs the local measurements are compared with."""

CALIBRATION_FILENAME = "implementation_calibration.json"
FORMAT_VERSION = 1

# Each coefficient of our implementation is transported to a device by that device's
# ratio to the reference device on the same term. The per-inference and per-decoder-layer
# constants cannot be fitted on HAT's data (fixed encoder depth, fixed step count); they
# travel with the encoder-layer and decoder-layer-step terms.
_RATIO_TERM = {
    "inference_ms": "encoder_layer_ms",
    "encoder_layer_ms": "encoder_layer_ms",
    "encoder_ms_per_mmac": "encoder_ms_per_mmac",
    "decoder_step_ms": "decoder_step_ms",
    "decoder_layer_step_ms": "decoder_layer_step_ms",
    "decoder_ms_per_mmac": "decoder_ms_per_mmac",
    "decoder_layer_ms": "decoder_layer_step_ms",
}
_COMPUTE_TERMS = ("encoder_ms_per_mmac", "decoder_ms_per_mmac")


@dataclass(frozen=True)
class LocalTiming:
    """One measured point: a subnet decoding ``steps`` tokens from ``src_len`` tokens.

    ``min_ms`` (what the fit uses) and ``median_ms`` are over the timed rounds.

    ``role`` is ``"fit"`` (used to fit the local coefficients) or ``"validation"``
    (held out: random subnets timed with the task's own latency probe).
    """

    config: dict[str, Any]
    encoder_layers: int
    decoder_layers: int
    src_len: int
    steps: int
    min_ms: float
    median_ms: float
    role: str


@dataclass(frozen=True)
class ImplementationCalibration:
    """Our dense model's measured costs here and how they relate to fairseq's.

    Attributes:
        local: the structured model fitted to our timings here.
        reference_device: HAT's device the factors are relative to (``xeon``).
        factors: per term, ``local / fairseq on the reference device`` at calibration
            time (informational: :meth:`transport` recomputes them from the fits).
        validation: error of ``local`` on the held-out validation timings.
        machine: CPU model, logical CPUs, threads, torch and Python versions, date.
        g2p: the reference workload and the MAC range of the smallest and largest
            subnets of the calibrated space (for provenance notes).
        timings: every measured point.
    """

    local: LatencyCoefficients
    reference_device: str
    factors: dict[str, float]
    validation: dict[str, float]
    machine: dict[str, Any]
    g2p: dict[str, Any]
    timings: tuple[LocalTiming, ...]

    def transport(
        self,
        device: LatencyCoefficients,
        reference: LatencyCoefficients,
        *,
        scale_compute: bool = True,
    ) -> LatencyCoefficients:
        """Our implementation's coefficients on ``device``: each local term times the
        device's ratio to the reference device on that term (fairseq on both).

        With ``scale_compute=False`` the per-MAC terms are the device's fairseq ones,
        unscaled: the optimistic reading, in which our small single-sentence matrix
        products run as efficiently per MAC as fairseq's large beam-5 ones did.
        """
        values = {}
        for term, ratio_term in _RATIO_TERM.items():
            if not scale_compute and term in _COMPUTE_TERMS:
                values[term] = getattr(device, term)
                continue
            ref = getattr(reference, ratio_term)
            ratio = getattr(device, ratio_term) / ref if ref > 0 else 1.0
            values[term] = getattr(self.local, term) * ratio
        return LatencyCoefficients(**values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "reference_device": self.reference_device,
            "local_coefficients": self.local.to_dict(),
            "factors": self.factors,
            "validation": self.validation,
            "machine": self.machine,
            "g2p": self.g2p,
            "timings": [dataclasses.asdict(t) for t in self.timings],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImplementationCalibration:
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"implementation calibration format_version must be {FORMAT_VERSION}, "
                f"got {data.get('format_version')!r}; regenerate it with "
                "`python -m nas.hardware.calibrate`"
            )
        return cls(
            local=LatencyCoefficients(**data["local_coefficients"]),
            reference_device=data["reference_device"],
            factors=dict(data["factors"]),
            validation=dict(data["validation"]),
            machine=dict(data["machine"]),
            g2p=dict(data["g2p"]),
            timings=tuple(LocalTiming(**t) for t in data["timings"]),
        )


def implementation_factors(
    local: LatencyCoefficients, reference: LatencyCoefficients
) -> dict[str, float]:
    """Per term, our cost here divided by fairseq's on the reference device."""
    out = {}
    for term, ratio_term in _RATIO_TERM.items():
        ref = getattr(reference, ratio_term)
        out[term] = getattr(local, term) / ref if ref > 0 else float("nan")
    return out


# -- loading -------------------------------------------------------------------------


def default_calibration_path() -> Path:
    """Where the shipped calibration lives (inside the installed package)."""
    return Path(str(resources.files("nas.hardware").joinpath("data", CALIBRATION_FILENAME)))


@functools.cache
def _load(path: str, digest: str) -> ImplementationCalibration:
    del digest  # part of the cache key only: a rewritten file is read again
    with open(path, encoding="utf-8") as f:
        return ImplementationCalibration.from_dict(json.load(f))


def calibration_digest(path: Path | None = None) -> str:
    """sha256 of the calibration file (part of predicted targets' fingerprints)."""
    p = path or default_calibration_path()
    try:
        return hashlib.sha256(p.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no implementation calibration at {p}; create it with "
            "`python -m nas.hardware.calibrate`"
        ) from None


def load_implementation_calibration(path: Path | None = None) -> ImplementationCalibration:
    """The calibration at ``path`` (the shipped one by default), read once per content.

    Raises:
        FileNotFoundError: no calibration file.
        ValueError: a file of another format version.
    """
    p = path or default_calibration_path()
    return _load(str(p), calibration_digest(p))


# -- measuring -----------------------------------------------------------------------


def calibration_configs(space: SearchSpace, *, random: int, seed: int) -> list[Config]:
    """Subnets that make every term identifiable: each (encoder depth, decoder depth)
    at all-smallest and all-largest widths, plus ``random`` seeded random subnets
    (they decorrelate encoder and decoder widths).

    Relies on HAT's gene names (``encoder.layers``, ``decoder.layers``,
    ``decoder.{i}.ende_layers``).
    """
    enc_depths = space.gene("encoder.layers").choices
    dec_depths = space.gene("decoder.layers").choices
    configs = [
        _designed(space, int(n_enc), int(n_dec), big)
        for n_enc in enc_depths for n_dec in dec_depths for big in (False, True)
    ]
    rng = np.random.default_rng(seed)
    configs += [space.sample(rng) for _ in range(random)]
    return configs


def _designed(space: SearchSpace, n_enc: int, n_dec: int, big: bool) -> Config:
    values: dict[str, Any] = {}
    for gene in space.genes:
        if gene.name == "encoder.layers":
            values[gene.name] = n_enc
        elif gene.name == "decoder.layers":
            values[gene.name] = n_dec
        elif gene.name.endswith(".ende_layers"):
            allowed = [c for c in gene.choices if c <= n_enc]
            values[gene.name] = max(allowed) if big else min(allowed)
        else:
            values[gene.name] = max(gene.choices) if big else min(gene.choices)
    return space.config(values)


def measure_local(
    supernet: Supernet,
    task: Task,
    *,
    threads: int = 1,
    warmup: int = 3,
    repeats: int = 30,
    steps: Sequence[int] = (1, 4, 8, 16),
    random_fit: int = 8,
    validation: int = 12,
    seed: int = 0,
) -> list[LocalTiming]:
    """Time our dense model's greedy decoding here.

    Fit points: :func:`calibration_configs` at every step count in ``steps``, decoding
    the task's example source. Validation points: ``validation`` other random subnets
    timed with ``task.latency_probe`` (what ``local-cpu`` measures).

    Every point is warmed up, then timed once per round for ``repeats`` rounds that
    visit all points in turn: a burst of load from another process then spreads over
    all points instead of spoiling a few, and the minimum over rounds estimates the
    uncontended time (the median is kept too). With one thread the clock is this
    thread's CPU time, which does not count the time other processes hold the CPU
    (on a shared machine wall-clock minima are still inflated by preemption).
    """
    src, prev = task.example_inputs()[:2]
    probe_steps = int(prev.shape[1])
    points: list[tuple[Config, int, str, Callable[[], object]]] = []
    for config in calibration_configs(supernet.space, random=random_fit, seed=seed):
        model = supernet.extract(config).eval()
        for n in steps:
            points.append((config, n, "fit", functools.partial(
                model.greedy_decode, src, max_len=n, steps=n)))
    rng = np.random.default_rng(seed + 1)
    for _ in range(validation):
        config = supernet.space.sample(rng)
        points.append((config, probe_steps, "validation",
                       task.latency_probe(supernet.extract(config).eval())))
    clock = _clock(threads)
    durations: list[list[float]] = [[] for _ in points]
    with torch_threads(threads), torch.inference_mode():
        for _, _, _, fn in points:
            time_ms(fn, warmup=warmup, repeats=1, clock=clock)
        for _ in range(repeats):
            for i, (_, _, _, fn) in enumerate(points):
                durations[i] += time_ms(fn, warmup=0, repeats=1, clock=clock)
    timings = []
    for (config, n, role, _), times in zip(points, durations, strict=True):
        shape = Seq2SeqShape.from_subnet(supernet.describe(config))
        timings.append(LocalTiming(
            config=config.to_dict(), encoder_layers=shape.encoder_layers,
            decoder_layers=shape.decoder_layers, src_len=int(src.shape[1]), steps=n,
            min_ms=min(times), median_ms=statistics.median(times), role=role,
        ))
        logger.info("%s: enc %d dec %d steps %2d -> min %.3f ms, median %.3f ms", role,
                    shape.encoder_layers, shape.decoder_layers, n, min(times),
                    statistics.median(times))
    return timings


def _clock(threads: int) -> Callable[[], float]:
    """Thread CPU time with one intra-op thread (all work runs in this thread), else
    wall-clock time."""
    return time.thread_time if threads == 1 else time.perf_counter


def calibrate_implementation(
    supernet: Supernet,
    task: Task,
    *,
    threads: int = 1,
    warmup: int = 3,
    repeats: int = 30,
    seed: int = 0,
) -> ImplementationCalibration:
    """Measure our dense model here and relate it to fairseq on HAT's Xeon E5-2640.

    Args:
        supernet: a HAT-family supernet (untrained weights time the same).
        task: the task whose example input and latency probe are timed.
        threads: intra-op threads while timing (``local-cpu`` uses 1 by default).
        warmup: untimed runs per point first.
        repeats: timed rounds per point (the fit uses the minimum).
        seed: seeds the random subnets.
    """
    load = _load_average()
    cpus = os.cpu_count() or 1
    if load and load[0] > 0.5 * cpus:
        logger.warning("load average %.2f on %d CPUs: other processes will disturb the "
                       "timings; calibrate on an idle machine", load[0], cpus)
    timings = measure_local(supernet, task, threads=threads, warmup=warmup,
                            repeats=repeats, seed=seed)
    fit = [t for t in timings if t.role == "fit"]
    val = [t for t in timings if t.role == "validation"]
    local = _fit_local(supernet, fit)
    reference = fit_hat_device(REFERENCE_DEVICE).coefficients
    return ImplementationCalibration(
        local=local,
        reference_device=REFERENCE_DEVICE,
        factors=implementation_factors(local, reference),
        validation=_validate(supernet, local, val),
        machine=_machine(threads, warmup, repeats, load),
        g2p=_reference_range(supernet, task),
        timings=tuple(timings),
    )


def _shapes_and_workloads(
    supernet: Supernet, timings: Sequence[LocalTiming]
) -> tuple[list[Seq2SeqShape], list[Workload]]:
    shapes = [Seq2SeqShape.from_subnet(supernet.describe(t.config)) for t in timings]
    workloads = [Workload(src_len=t.src_len, tgt_len=t.steps) for t in timings]
    return shapes, workloads


def _fit_local(supernet: Supernet, timings: Sequence[LocalTiming]) -> LatencyCoefficients:
    shapes, workloads = _shapes_and_workloads(supernet, timings)
    return fit_total_coefficients(
        shapes, workloads, np.array([t.min_ms for t in timings]), scheme=DENSE_HAT_DECODING
    )


def _validate(
    supernet: Supernet, local: LatencyCoefficients, timings: Sequence[LocalTiming]
) -> dict[str, float]:
    if not timings:
        return {}
    shapes, workloads = _shapes_and_workloads(supernet, timings)
    predicted = [local.breakdown(s, w, DENSE_HAT_DECODING).total_ms
                 for s, w in zip(shapes, workloads, strict=True)]
    return regression_errors(np.array([t.min_ms for t in timings]), np.array(predicted))


def _machine(threads: int, warmup: int, repeats: int, load: tuple[float, ...]) -> dict[str, Any]:
    return {
        "clock": _clock(threads).__name__,
        "load_average_before": list(load),
        "load_average_after": list(_load_average()),
        "cpu": cpu_model(),
        "cpu_details": cpu_details(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "warmup": warmup,
        "repeats": repeats,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _load_average() -> tuple[float, ...]:
    """The 1-, 5- and 15-minute load averages (empty where the OS has none)."""
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return ()


def _reference_range(supernet: Supernet, task: Task) -> dict[str, Any]:
    """MACs of the space's smallest and largest subnets on the task's workload, and
    the measured range of HAT's data, for the provenance notes."""
    workload = task.workload()
    out: dict[str, Any] = {
        "task": task.name,
        "space": supernet.space.name,
        "workload": dataclasses.asdict(workload),
    }
    for label, config in (("smallest", supernet.space.smallest()),
                          ("largest", supernet.space.largest())):
        shape = Seq2SeqShape.from_subnet(supernet.describe(config))
        macs = seq2seq_macs(shape, workload, DENSE_HAT_DECODING)
        out[label] = {"encoder_mmacs": macs.encoder / MEGA,
                      "decoder_mmacs_per_step": macs.decoder_per_step / MEGA,
                      "shape": shape.to_dict()}
    out["hat_workload"] = dataclasses.asdict(HAT_WORKLOAD)
    out["hat_decoding"] = dataclasses.asdict(FAIRSEQ_INCREMENTAL)
    out["our_decoding"] = dataclasses.asdict(DENSE_HAT_DECODING)
    return out


def write_calibration(calibration: ImplementationCalibration, path: Path | None = None) -> Path:
    """Write ``calibration`` as JSON (the shipped file by default); returns the path."""
    p = path or default_calibration_path()
    p.write_text(json.dumps(calibration.to_dict(), indent=1) + "\n", encoding="utf-8")
    return p
