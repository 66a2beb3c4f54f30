"""The predicted targets ``rpi4``, ``xeon`` and ``titanxp``: HAT's devices, modelled.

A HAT subnet's latency on one of HAT's devices is predicted by the structured model
fitted on HAT's measurements of that device (:mod:`nas.hardware._hat_latency`), with
every term carried over from fairseq to our dense implementation by the implementation
calibration (:mod:`nas.hardware._calibration`), for the task's workload (source and
target lengths, beam, vocabulary). :meth:`HATLatencyTarget.extrapolation` says how far
a subnet lies outside what HAT measured.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from nas._hardware import HARDWARE, HardwareTarget, Provenance
from nas._space import Config
from nas._supernet import Supernet
from nas._task import Task, Workload
from nas.hardware._calibration import (
    REFERENCE_DEVICE,
    ImplementationCalibration,
    calibration_digest,
    implementation_factors,
    load_implementation_calibration,
)
from nas.hardware._hat_data import HAT_DEVICES
from nas.hardware._hat_latency import (
    DeviceFit,
    dropped_rows_note,
    fit_hat_device,
    predict_fairseq_ms,
)
from nas.hardware._latency_model import MEGA, LatencyBreakdown, LatencyCoefficients
from nas.hardware._local_model import LocalModelTarget, shipped_quantized_path
from nas.hardware._macs import DENSE_HAT_DECODING, DecodingScheme, Seq2SeqShape, seq2seq_macs
from nas.hardware._quant_latency import MODELLED_BITS

MODEL_VERSION = "hat-structured-v1"


@dataclass(frozen=True)
class Extrapolation:
    """How a subnet's work compares with the models HAT measured on a device.

    Ratios are the subnet's MACs over the smallest measured (HAT's workload and
    fairseq's decoding for the measured side; the task's workload and our decoding for
    the subnet): below 1 means the subnet lies below the calibrated range and its
    latency is extrapolated, dominated by the overhead terms.
    """

    device: str
    encoder_mmacs: float
    decoder_mmacs_per_step: float
    measured_encoder_mmacs: tuple[float, float]
    measured_decoder_mmacs_per_step: tuple[float, float]

    @property
    def encoder_ratio(self) -> float:
        return self.encoder_mmacs / self.measured_encoder_mmacs[0]

    @property
    def decoder_ratio(self) -> float:
        return self.decoder_mmacs_per_step / self.measured_decoder_mmacs_per_step[0]

    @property
    def inside(self) -> bool:
        """Whether both encoder and per-step decoder MACs lie in the measured range."""
        lo_e, hi_e = self.measured_encoder_mmacs
        lo_d, hi_d = self.measured_decoder_mmacs_per_step
        return lo_e <= self.encoder_mmacs <= hi_e and lo_d <= self.decoder_mmacs_per_step <= hi_d

    def describe(self) -> str:
        """One plain sentence for the CLI."""
        lo, hi = self.measured_decoder_mmacs_per_step
        if self.inside:
            where = "inside the measured range"
        elif self.decoder_ratio < 1:
            where = f"{1 / self.decoder_ratio:.0f}x fewer than the smallest measured"
        else:
            where = f"{self.decoder_ratio * lo / hi:.1f}x more than the largest measured"
        return (
            f"{self.decoder_mmacs_per_step:.3g} decoder MMACs per step and "
            f"{self.encoder_mmacs:.3g} encoder MMACs; HAT measured {lo:.0f}-{hi:.0f} MMACs "
            f"per step on {self.device}: {where}"
        )


class HATLatencyTarget(HardwareTarget):
    """Latency of a HAT subnet on one of HAT's devices, predicted.

    Thread safe once warmed up: the fits and the calibration are read once per process
    and cached; predictions are pure arithmetic.

    Args:
        device: ``rpi4``, ``xeon`` or ``titanxp``.
        calibration_path: an implementation calibration JSON other than the shipped one.
        scheme: how the subnets' implementation decodes (our dense HAT model's way).
        scale_compute: scale the per-MAC terms by the implementation factor too (the
            default: at G2P sizes our per-MAC cost here is an order of magnitude above
            fairseq's on the Xeon); ``False`` keeps the device's fairseq per-MAC costs,
            the optimistic bound.

    Raises:
        ValueError: an unknown device.
    """

    def __init__(
        self,
        device: str,
        *,
        calibration_path: Path | None = None,
        scheme: DecodingScheme = DENSE_HAT_DECODING,
        scale_compute: bool = True,
    ) -> None:
        if device not in HAT_DEVICES:
            raise ValueError(f"device must be one of {sorted(HAT_DEVICES)}, got {device!r}")
        self.device = device
        self.name = device
        self.description = f"{HAT_DEVICES[device].hardware}, predicted from HAT's measurements"
        self.calibration_path = calibration_path
        self.scheme = scheme
        self.scale_compute = scale_compute
        self._coefficients: LatencyCoefficients | None = None

    # -- the model ---------------------------------------------------------------------

    def fit(self) -> DeviceFit:
        """fairseq's costs on this device, fitted on HAT's data (cached per process)."""
        return fit_hat_device(self.device)

    def calibration(self) -> ImplementationCalibration:
        return load_implementation_calibration(self.calibration_path)

    def coefficients(self) -> LatencyCoefficients:
        """Our dense implementation's coefficients on this device (computed once)."""
        if self._coefficients is None:
            self._coefficients = self.calibration().transport(
                self.fit().coefficients, fit_hat_device(REFERENCE_DEVICE).coefficients,
                scale_compute=self.scale_compute,
            )
        return self._coefficients

    def breakdown(self, supernet: Supernet, config: Config, task: Task) -> LatencyBreakdown:
        """The prediction term by term (overheads and compute, encoder and decoder)."""
        shape = _shape(supernet, config)
        return self.coefficients().breakdown(shape, task.workload(), self.scheme)

    def shape_latency_ms(self, shape: Seq2SeqShape, task: Task) -> float:
        """The latency of any encoder-decoder of these layer shapes (a pruned HAT subnet
        too) for ``task``'s workload, as :meth:`latency_ms` prices a subnet."""
        return self.coefficients().breakdown(shape, task.workload(), self.scheme).total_ms

    def _latency_ms(self, supernet: Supernet, config: Config, task: Task) -> float:
        return self.breakdown(supernet, config, task).total_ms

    # -- quantized subnets -------------------------------------------------------------

    quant_bits = MODELLED_BITS
    """Modelled widths (:mod:`nas.hardware._quant_latency`)."""

    def int8_model(self) -> LocalModelTarget:
        """The CPU model whose int8-to-fp32 ratios this target applies (the shipped
        calibration, :data:`~nas.hardware._local_model.SHIPPED_QUANTIZED`)."""
        return _shipped_int8_model()

    def quantized_latency_ms(self, supernet: Supernet, arch: Config, model: nn.Module,
                             task: Task) -> float:
        """This device's fp32 prediction of ``arch`` times the ratio of the same subnet's
        int8 and fp32 latencies on the CPU the shipped calibration measured."""
        cpu = self.int8_model()
        ratio = (cpu.quantized_latency_ms(supernet, arch, model, task)
                 / cpu.latency_ms(supernet, arch, task))
        return self._latency_ms(supernet, arch, task) * ratio

    @property
    def quantized_fingerprint(self) -> str:
        return f"{self.fingerprint}:int8-{self.int8_model().fingerprint}"

    def predict_hat_workload_ms(self, shape: Seq2SeqShape) -> float:
        """fairseq's latency on this device for HAT's own workload (what HAT measured):
        the fitted model and its in-range correction, without the implementation
        factors."""
        return predict_fairseq_ms(self.fit(), shape)

    def extrapolation(self, supernet: Supernet, config: Config, task: Task) -> Extrapolation:
        """How far ``config`` lies outside the MAC range HAT measured on this device."""
        return self.extrapolation_of(_shape(supernet, config), task.workload())

    def extrapolation_of(self, shape: Seq2SeqShape, workload: Workload) -> Extrapolation:
        macs = seq2seq_macs(shape, workload, self.scheme)
        fit = self.fit()
        return Extrapolation(
            device=self.device,
            encoder_mmacs=macs.encoder / MEGA,
            decoder_mmacs_per_step=macs.decoder_per_step / MEGA,
            measured_encoder_mmacs=fit.encoder_mmacs,
            measured_decoder_mmacs_per_step=fit.decoder_mmacs_per_step,
        )

    # -- provenance --------------------------------------------------------------------

    def provenance(self) -> Provenance:
        fit = self.fit()
        calibration = self.calibration()
        reference = fit_hat_device(REFERENCE_DEVICE).coefficients
        ours = self.coefficients()
        notes = [
            _measurement_note(fit),
            _range_note(fit),
            _g2p_note(fit, calibration),
            _factor_note(calibration, reference, self.scale_compute),
            self._g2p_prediction_note(),
            _assumption_note(calibration),
            self._int8_note(),
        ]
        dropped = dropped_rows_note(fit)
        if dropped:
            notes.append(dropped)
        return Provenance(
            method="predicted",
            source=(
                f"structured latency model ({MODEL_VERSION}) fitted by NNLS on HAT's "
                f"measurements of its WMT'14 En-De SubTransformers on the "
                f"{fit.device.hardware} (mit-han-lab/hardware-aware-transformers, MIT "
                f"licence), scaled to our dense HAT model by an implementation calibration "
                f"measured on {calibration.machine.get('cpu', 'an unknown CPU')}"
            ),
            error=dict(fit.heldout),
            notes=tuple(notes),
            details={
                "fairseq_coefficients": fit.coefficients.to_dict(),
                "our_coefficients": ours.to_dict(),
                "implementation_factors": implementation_factors(calibration.local, reference),
                "heldout_encoder_mape": fit.heldout_encoder_mape,
                "heldout_decoder_mape": fit.heldout_decoder_mape,
                "n_train": fit.n_train,
                "dropped_rows": fit.dropped,
                "calibration_machine": calibration.machine,
                "calibration_validation": calibration.validation,
            },
        )

    def _int8_note(self) -> str:
        c = self.int8_model().calibration()
        e = c.quantized.heldout if c.quantized is not None else {}
        checked = (f" (there, MAPE {e['mape']:.1%} and Kendall tau {e['kendall_tau']:.2f} on "
                   f"{int(e['n'])} held-out subnets)" if e else "")
        return (
            f"Quantized subnets are modelled from int8 speedups measured on "
            f"{c.machine.get('cpu')} on {c.date[:10]}: this device's fp32 prediction times "
            f"the subnet's int8/fp32 ratio there{checked}. Whether {self.device} gains what "
            f"that CPU gains from int8 is an assumption no measurement here checks; 6-, 4- "
            f"and 2-bit layers are priced as 8-bit ones."
        )

    def _g2p_prediction_note(self) -> str:
        """The smallest and largest subnet of the calibrated space, under both readings
        of the per-MAC terms: the sensitivity a user should know about."""
        g = self.calibration().g2p
        workload = Workload(**g["workload"])
        figures = {}
        for scale in (True, False):
            target = HATLatencyTarget(self.device, calibration_path=self.calibration_path,
                                      scheme=self.scheme, scale_compute=scale)
            coef = target.coefficients()
            figures[scale] = [
                coef.breakdown(Seq2SeqShape.from_dict(g[k]["shape"]), workload, self.scheme)
                for k in ("smallest", "largest")
            ]
        used, other = figures[self.scale_compute], figures[not self.scale_compute]
        other_reading = ("fairseq's own per-MAC costs on this device (optimistic)"
                         if self.scale_compute else "per-MAC costs scaled like the overheads")
        small, large = (f"{b.total_ms:.1f} ms ({100 * _overhead_share(b):.0f}% overhead)"
                        for b in used)
        return (
            f"Predicted for the {g['space']} space on this device: smallest subnet {small}, "
            f"largest {large}; with {other_reading} they would be {other[0].total_ms:.1f} ms "
            f"and {other[1].total_ms:.1f} ms."
        )

    @property
    def fingerprint(self) -> str:
        digest = calibration_digest(self.calibration_path)[:12]
        compute = "" if self.scale_compute else ":fairseq-compute"
        return f"{self.name}:{MODEL_VERSION}:calibration-{digest}{compute}"


@functools.cache
def _shipped_int8_model() -> LocalModelTarget:
    return LocalModelTarget(path=shipped_quantized_path(), any_machine=True)


def _overhead_share(b: LatencyBreakdown) -> float:
    overhead = b.inference_ms + b.encoder_overhead_ms + b.decoder_overhead_ms
    return overhead / b.total_ms if b.total_ms > 0 else 0.0


def _shape(supernet: Supernet, config: Config) -> Seq2SeqShape:
    return Seq2SeqShape.from_subnet(supernet.describe(config))


def _measurement_note(fit: DeviceFit) -> str:
    e = fit.heldout
    return (
        f"Fitted on {fit.n_train} of HAT's {fit.n_train + int(e['n'])} usable measurements "
        f"(fairseq, batch 1, beam 5, 30-token source, 30 incremental decoder steps, encoder "
        f"and decoder timed separately); on the {int(e['n'])} held-out ones the total "
        f"latency has MAPE {100 * e['mape']:.1f}%, RMSE {e['rmse_ms']:.1f} ms and Kendall "
        f"tau {e['kendall_tau']:.2f} (the structured model alone: MAPE "
        f"{100 * fit.heldout_structured_mape:.1f}%; a learned correction of it applies "
        f"only inside the measured shapes, so never to the G2P subnets)."
    )


def _range_note(fit: DeviceFit) -> str:
    lo_d, hi_d = fit.decoder_mmacs_per_step
    lo_e, hi_e = fit.encoder_mmacs
    lo_l, hi_l = fit.latency_ms
    return (
        f"The measured SubTransformers have {lo_d:.0f}-{hi_d:.0f} decoder MMACs per step "
        f"(beam 5, 32,768-word vocabulary) and {lo_e:.0f}-{hi_e:.0f} encoder MMACs; their "
        f"measured latencies span {lo_l:.0f}-{hi_l:.0f} ms."
    )


def _g2p_note(fit: DeviceFit, calibration: ImplementationCalibration) -> str:
    g = calibration.g2p
    small, large = g["smallest"]["decoder_mmacs_per_step"], g["largest"]["decoder_mmacs_per_step"]
    w = g["workload"]
    lo = fit.decoder_mmacs_per_step[0]
    return (
        f"The {g['space']} space's subnets have {small:.2g}-{large:.2g} MMACs per decode "
        f"step on the {g['task']} workload ({w['src_len']:.1f} source tokens, "
        f"{w['tgt_len']:.1f} steps, beam {w['beam']}), {lo / large:.0f}-{lo / small:.0f}x "
        f"fewer than the smallest measured: the model extrapolates far below the range it "
        f"was fitted on."
    )


def _factor_note(
    calibration: ImplementationCalibration, reference: LatencyCoefficients, scale_compute: bool
) -> str:
    f = implementation_factors(calibration.local, reference)
    scaled = ("every term of this device's model, per-MAC costs included, is scaled by its "
              "factor" if scale_compute else
              "the overhead terms of this device's model are scaled by their factor; its "
              "per-MAC costs are fairseq's, unscaled")
    return (
        f"HAT's overheads are fairseq's. Our dense model was timed on "
        f"{calibration.machine.get('cpu')} ({calibration.machine.get('threads')} thread, "
        f"torch {calibration.machine.get('torch')}, {calibration.machine.get('date')}); "
        f"as a fraction of fairseq's cost on the Xeon E5-2640 its per-decoder-layer-step "
        f"overhead is {f['decoder_layer_step_ms']:.3f}x, per-step {f['decoder_step_ms']:.3f}x, "
        f"per-encoder-layer {f['encoder_layer_ms']:.3f}x, per-decoder-MAC "
        f"{f['decoder_ms_per_mmac']:.2f}x and per-encoder-MAC {f['encoder_ms_per_mmac']:.2f}x; "
        f"{scaled}."
    )


def _assumption_note(calibration: ImplementationCalibration) -> str:
    v = calibration.validation
    checked = (
        f" (the local fit predicts {int(v['n'])} held-out subnets timed here with MAPE "
        f"{100 * v['mape']:.1f}%)" if v else ""
    )
    return (
        "The implementation factors are an assumption, not a measurement on this device: "
        "they take this CPU to run framework operations and MACs as fast as HAT's Xeon "
        "E5-2640 did, and our implementation's speed relative to fairseq to be the same on "
        f"every device{checked}."
    )


@HARDWARE.register("rpi4", description="Raspberry Pi 4 (ARM Cortex-A72), predicted from HAT's data")
def rpi4() -> HardwareTarget:
    """Raspberry Pi 4, predicted from HAT's measurements."""
    return HATLatencyTarget("rpi4")


@HARDWARE.register("xeon", description="Intel Xeon E5-2640 CPU, predicted from HAT's data")
def xeon() -> HardwareTarget:
    """Intel Xeon E5-2640, predicted from HAT's measurements."""
    return HATLatencyTarget("xeon")


@HARDWARE.register("titanxp", description="Nvidia TITAN Xp GPU, predicted from HAT's data")
def titanxp() -> HardwareTarget:
    """Nvidia TITAN Xp, predicted from HAT's measurements."""
    return HATLatencyTarget("titanxp")


def extrapolation(
    target: HardwareTarget, supernet: Supernet, config: Config, task: Task
) -> Extrapolation | None:
    """How far ``config`` lies outside the range ``target``'s model was calibrated on;
    ``None`` for a target that measures rather than predicts (nothing to extrapolate)."""
    if isinstance(target, HATLatencyTarget):
        return target.extrapolation(supernet, config, task)
    return None

