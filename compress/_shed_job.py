"""The job behind ``nas compress shed``: Mamba-Shedder on a Mamba-2 byte LM.

Loads the source (:func:`~nas.compress._lm_jobs.load_lm`: a zoo name or an export folder
holding a :class:`~nas.supernets.mamba.MambaLM`), removes blocks and SSMs greedily by
calibration loss on random train windows of ``pydoc-lm``
(:func:`~nas.compress._shedder.shed`), extracts the smaller model, optionally fine-tunes
it (:func:`~nas.compress._shedder.recover`), scores source and result on the same
held-out windows, times both and writes the export (family ``mamba-lm``, with ONNX).

What to remove (:class:`ShedRequest`): counts (``--remove blocks:2,ssm:4``), a fraction
of the parameters kept (``--target-params``) or a latency (``--target-latency``), and
counts with a target as the most the search may remove. Without counts a target's
search may remove every block but one, then the SSMs left: blocks first, as the
official hybrid search runs its block stage before its SSM stage
(``--remove ssm:4 --target-latency 5ms`` searches SSMs only). A latency target first
calibrates :class:`~nas.compress._mamba_latency.MambaLatencyModel` on this CPU, stops
the search when the model predicts the budget is met and reports predicted and
measured ms of the result. A target the source already meets, or one that even the
smallest model the counts allow misses, is refused before the search.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas._files import check_output
from nas.compress._lm_jobs import (
    EVAL_WINDOWS,
    TASK,
    check_option,
    count_params,
    export_lm,
    forward_ms,
    heldout_loss,
    load_lm,
    train_windows,
    window_length,
)
from nas.compress._mamba_latency import Counts, calibrate_mamba, kind_counts
from nas.compress._shedder import (
    BLOCK,
    SSM,
    _check_quotas,
    extract,
    parse_spec,
    recover,
    shed,
)
from nas.supernets.mamba import FAMILY, MambaLM
from nas.supernets.mamba.model import ABSENT, FULL, NO_SSM

__all__ = ["ShedRequest", "shed_job"]

CALIBRATION_WINDOWS = 32
RECOVERY_WINDOWS = 512
"""Random train windows recovery draws its batches from."""
LATENCY_SAMPLES = 12
"""Configurations a latency model is fitted on (fewer if fewer are reachable)."""


@dataclass(frozen=True)
class ShedRequest:
    """What to remove: ``remove`` counts (``"blocks:2,ssm:4"``; maxima with a target),
    and at most one target: ``params`` (fraction of the parameters kept, in (0, 1]) or
    ``latency_ms`` (CPU, batch 1)."""

    remove: str | None = None
    params: float | None = None
    latency_ms: float | None = None

    def check(self) -> None:
        """Refuse no request, two targets, or a malformed one (one line each)."""
        if self.params is not None and self.latency_ms is not None:
            raise ValueError("give one of --target-latency, --target-params, not both")
        if self.remove is None and self.params is None and self.latency_ms is None:
            raise ValueError("say what to remove: --remove blocks:2,ssm:4, --target-latency "
                             "5ms or --target-params 0.7")
        if self.remove is not None:
            parse_spec(self.remove)
        if self.params is not None and not 0 < self.params <= 1:
            raise ValueError(f"--target-params is the fraction of the parameters kept, in "
                             f"(0, 1], got {self.params:g}")
        if self.latency_ms is not None and not self.latency_ms > 0:
            raise ValueError(f"--target-latency must be positive, got {self.latency_ms:g}")

    @property
    def has_target(self) -> bool:
        return self.params is not None or self.latency_ms is not None


def _largest_spec(model: MambaLM) -> dict[str, int]:
    """Every block but one, then the SSMs the search may still find."""
    present = sum(k != ABSENT for k in model.kinds)
    ssms = sum(k == FULL for k in model.kinds)
    blocks = present - 1
    spec = {BLOCK: blocks, SSM: ssms - min(blocks, ssms)}
    spec = {k: v for k, v in spec.items() if v > 0}
    if not spec:
        raise ValueError(f"nothing to remove: the model keeps one block and it has no SSM "
                         f"(blocks {model.kinds})")
    return spec


def _smallest_counts(model: MambaLM, spec: dict[str, int],
                     cost: Callable[[Counts], float]) -> Counts:
    """The ``(full, no_ssm)`` of least ``cost`` that removing at most ``spec`` reaches:
    ``k`` full and ``b - k`` SSM-less blocks removed, then SSMs of full blocks left."""
    full, no_ssm = kind_counts(model.kinds)
    blocks, ssms = spec.get(BLOCK, 0), spec.get(SSM, 0)
    options = []
    for k in range(max(0, blocks - no_ssm), min(blocks, full) + 1):
        left = full - k
        cut = min(ssms, left)
        options.append((left - cut, no_ssm - (blocks - k) + cut))
    return min(options, key=cost)


def _kinds(model: MambaLM, counts: Counts) -> list[str]:
    f, n = counts
    return [FULL] * f + [NO_SSM] * n + [ABSENT] * (len(model.kinds) - f - n)


def shed_job(
    source: str,
    out: Path,
    *,
    request: ShedRequest,
    recover_steps: int = 0,
    calibration_windows: int = CALIBRATION_WINDOWS,
    latency_samples: int = LATENCY_SAMPLES,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Shed ``source`` as ``request`` says, optionally recover, write the export to
    ``out`` and return the summary.

    Returns:
        The summary (also the export's metadata): ``removed``, ``params_before``/
        ``params_after``, ``loss_before``/``loss_after`` (held-out nats per byte; with
        recovery also ``loss_before_recovery``), ``ms_before``/``ms_after``, ``latency``
        (a latency target: budget, predicted and measured ms, the model's held-out
        error), ``search`` (every step's candidate scores), ``onnx`` and the options.

    Raises:
        ValueError: a bad request or option, a model that is not a Mamba LM (or has no
            SSMs to remove, or would lose every block), a target the source already
            meets or the counts cannot reach, or a search that ends short of it.
        FileExistsError: ``out`` holds files and ``overwrite`` is false.
        FileNotFoundError: ``source`` is neither a folder nor a zoo model.
    """
    request.check()
    check_option("--recover-steps", recover_steps, zero=True)
    check_option("--calibration-windows", calibration_windows)
    check_output(out, kind="dir", force=overwrite)
    started = time.perf_counter()
    model, origin = load_lm(source, expected=MambaLM, family=FAMILY, command="shed")
    spec = parse_spec(request.remove) if request.remove is not None else _largest_spec(model)
    _check_quotas(model, spec)  # every block, SSMs of a model without: before any work
    length = window_length(model)
    ms_before = forward_ms(model, length)

    calibration_record = None
    meets_target = None
    if request.latency_ms is not None:
        calibration = calibrate_mamba(model, length=length,
                                      measure=lambda m: forward_ms(m, length),
                                      samples=latency_samples, seed=seed, progress=progress)
        latency_model = calibration.model
        _check_reachable(model, spec, "--target-latency", f"{request.latency_ms:g} ms",
                         lambda counts: latency_model.predict_counts(counts),
                         request.latency_ms, "ms predicted")
        budget = request.latency_ms

        def meets_target(extracted: MambaLM) -> bool:
            return latency_model.predict_ms(extracted.kinds) <= budget

        calibration_record = calibration
    if request.params is not None:
        _check_reachable(model, spec, "--target-params", f"{request.params:g}",
                         lambda counts: _param_fraction_of(model, counts),
                         request.params, "of the parameters")

    windows = train_windows(calibration_windows, length, seed=seed)  # (K, L + 1)
    result = shed(model, remove=spec, calibration=windows,
                  target_params_fraction=request.params, meets_target=meets_target,
                  progress=progress)
    if result.target_met is False:
        raise ValueError(f"the search removed {', '.join(result.removed)} and stopped short "
                         f"of the target ({_target_text(request)}); nothing was written: "
                         f"allow more with --remove")
    shed_model = extract(model, result.removed).eval()
    before = heldout_loss(model, length)
    after = heldout_loss(shed_model, length)
    summary: dict[str, Any] = {
        "command": "shed",
        "method": "mamba-shedder",
        "options": {"remove": request.remove, "spec": spec,
                    "target_params": request.params, "target_latency_ms": request.latency_ms,
                    "recover_steps": recover_steps,
                    "calibration_windows": calibration_windows, "seed": seed},
        "source": source,
        "origin": origin,
        "out": str(out),
        "task": TASK,
        "removed": list(result.removed),
        "blocks_before": list(model.kinds),
        "blocks_after": list(shed_model.kinds),
        "params_before": count_params(model),
        "loss_before": before["loss"],
        "accuracy_before": before["accuracy"],
    }
    if recover_steps:
        summary["loss_before_recovery"] = after["loss"]
        summary["accuracy_before_recovery"] = after["accuracy"]
        recovery = train_windows(RECOVERY_WINDOWS, length, seed=seed + 1)
        losses = recover(shed_model, recovery, steps=recover_steps, seed=seed,
                         progress=progress)
        shed_model.eval()
        summary["recovery"] = {"steps": recover_steps, "windows": RECOVERY_WINDOWS,
                               "first_loss": losses[0], "last_loss": losses[-1]}
        after = heldout_loss(shed_model, length)
    summary.update({
        "params_after": count_params(shed_model),
        "loss_after": after["loss"],
        "accuracy_after": after["accuracy"],
        "eval": {"split": "validation", "windows": EVAL_WINDOWS, "length": length,
                 "unit": "nats per byte"},
        "ms_before": ms_before,
        "ms_after": forward_ms(shed_model, length),
        "timing": {"device": "cpu", "batch": 1, "length": length, "threads": 1,
                   "figure": "median thread CPU time"},
        "search": result.as_dict(),
    })
    summary["params_fraction"] = summary["params_after"] / summary["params_before"]
    if calibration_record is not None:
        summary["latency"] = {
            "budget_ms": request.latency_ms,
            "predicted_ms": calibration_record.model.predict_ms(shed_model.kinds),
            "measured_ms": summary["ms_after"],
            "source_predicted_ms": calibration_record.model.predict_ms(model.kinds),
            "heldout_median_ape": calibration_record.heldout["median_ape"],
            "calibration": calibration_record.to_dict(),
        }
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    return export_lm(shed_model, out, family=FAMILY, summary=summary, length=length,
                     overwrite=overwrite)


def _param_fraction_of(model: MambaLM, counts: Counts) -> float:
    """Parameters of a model with ``counts`` ``(full, no_ssm)`` blocks over ``model``'s
    (built on the meta device; where the kinds sit does not change the count)."""
    with torch.device("meta"):
        kept = count_params(MambaLM(**{**model.subnet_config(), "blocks": _kinds(model,
                                                                            counts)}))
    return kept / count_params(model)


def _check_reachable(model: MambaLM, spec: dict[str, int], option: str, given: str,
                     cost: Callable[[Counts], float], target: float, unit: str) -> None:
    source = cost(kind_counts(model.kinds))
    if source <= target:
        raise ValueError(f"the source already meets {option} {given} ({source:.4g} {unit}); "
                         f"nothing to remove")
    smallest = cost(_smallest_counts(model, spec, cost))
    if smallest > target:
        raise ValueError(f"{option} {given} is below the smallest model the search may reach "
                         f"({smallest:.4g} {unit}, removing at most "
                         f"{', '.join(f'{k}:{v}' for k, v in spec.items())})")


def _target_text(request: ShedRequest) -> str:
    if request.latency_ms is not None:
        return f"--target-latency {request.latency_ms:g} ms, predicted"
    return f"--target-params {request.params:g}"
