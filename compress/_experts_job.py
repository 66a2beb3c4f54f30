"""The job behind ``nas compress merge-experts``: a MoE byte LM with fewer experts.

Loads the source (:func:`~nas.compress._lm_jobs.load_lm`: a zoo name or an export
folder holding a :class:`~nas.supernets.moe.MoELM`), merges its experts with
:func:`~nas.compress._experts.merge_experts` on random train windows of ``pydoc-lm``,
scores source and result on the same held-out windows, times both, and writes the
export (family ``moe-lm``) with the summary as its metadata. Arguments and the output
folder are checked before any work; the model's own limits (experts, rank) before
calibration.

ONNX: the MoE layer runs each expert on the tokens routed to it (``nonzero``), with a
Python test of whether any token was; tracing keeps the branch of each expert the
example input reaches and drops the others. The graph is written only when the example
reaches every expert of every layer (then the graph holds every branch and gathers the
routed tokens at run time) and ONNX Runtime matches torch on held-out windows.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from nas._files import check_output
from nas.compress._experts import list_merge_methods, merge_experts
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
from nas.supernets.moe import FAMILY, MoELM

__all__ = ["merge_experts_job"]

CALIBRATION_WINDOWS = 32
"""Default calibration windows (2,048 tokens at 64 bytes: ``merge_experts``' default
``max_tokens``)."""


def merge_experts_job(
    source: str,
    out: Path,
    *,
    experts: int,
    method: str = "sub-moe",
    rank: int | None = None,
    calibration_windows: int = CALIBRATION_WINDOWS,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Merge ``source``'s experts down to ``experts`` per layer on average (``experts``
    times its layers in total, spread evenly over the layers); write the export to
    ``out``; return the summary.

    Args:
        source: a zoo name (``moe-pydoc``) or an export folder of a ``moe-lm`` model.
        out: the export folder (missing or empty unless ``overwrite``).
        experts: experts kept per layer on average.
        method: one of :func:`~nas.compress._experts.list_merge_methods`.
        rank: every merged expert's matrices at this rank (None: dense).
        calibration_windows: random train windows the merge is calibrated on.
        seed: the windows' and the grouping's seed.
        overwrite: write into an existing ``out``.

    Returns:
        The summary (also the export's metadata): ``params_before``/``params_after``,
        ``loss_before``/``loss_after`` (held-out nats per byte), ``ms_before``/
        ``ms_after``, ``onnx`` (a record, or ``"not exported: why"``) and the options.

    Raises:
        ValueError: a bad option, a model that is not a MoE LM, more experts per layer
            than the model has, a rank above the experts' matrix rank.
        FileExistsError: ``out`` holds files and ``overwrite`` is false.
        FileNotFoundError: ``source`` is neither a folder nor a zoo model.
    """
    if method not in list_merge_methods():
        raise ValueError(f"--method must be one of {list_merge_methods()}, got {method!r}")
    check_option("--experts", experts)
    if rank is not None:
        check_option("--rank", rank)
    check_option("--calibration-windows", calibration_windows)
    check_output(out, kind="dir", force=overwrite)
    started = time.perf_counter()
    model, origin = load_lm(source, expected=MoELM, family=FAMILY, command="merge-experts")
    length = window_length(model)
    calibration = train_windows(calibration_windows, length, seed=seed)[:, :-1]  # (K, L)
    if experts > max(model.experts_per_layer):
        raise ValueError(f"--experts {experts} is more than the {max(model.experts_per_layer)} "
                         f"experts per layer {source} has")
    merged = merge_experts(model, calibration, experts=experts * len(model.experts_per_layer),
                           method=method, rank=rank, seed=seed).eval()
    before, after = heldout_loss(model, length), heldout_loss(merged, length)
    summary: dict[str, Any] = {
        "command": "merge-experts",
        "method": method,
        "options": {"experts": experts, "rank": rank,
                    "calibration_windows": calibration_windows, "seed": seed},
        "source": source,
        "origin": origin,
        "out": str(out),
        "task": TASK,
        "experts_before": sum(model.experts_per_layer),
        "experts_after": sum(merged.experts_per_layer),
        "experts_per_layer": list(merged.experts_per_layer),
        "params_before": count_params(model),
        "params_after": count_params(merged),
        "loss_before": before["loss"],
        "loss_after": after["loss"],
        "accuracy_before": before["accuracy"],
        "accuracy_after": after["accuracy"],
        "eval": {"split": "validation", "windows": EVAL_WINDOWS, "length": length,
                 "unit": "nats per byte"},
        "ms_before": forward_ms(model, length),
        "ms_after": forward_ms(merged, length),
        "timing": {"device": "cpu", "batch": 1, "length": length, "threads": 1,
                   "figure": "median thread CPU time"},
    }
    summary["params_fraction"] = summary["params_after"] / summary["params_before"]
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    return export_lm(merged, out, family=FAMILY, summary=summary, length=length,
                     overwrite=overwrite, trace_check=_every_expert_reached)


def _every_expert_reached(model: nn.Module, example: Tensor) -> str | None:
    """None if ``example`` routes a token to every expert of every layer, else which
    expert it misses (the traced graph would lack that expert's branch)."""
    reached: list[Tensor] = []

    def record(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        flat = args[0].reshape(-1, args[0].shape[-1])  # (N, C)
        reached.append((module.gates(module.router(flat)) != 0).any(dim=0))  # (E,)

    handles = [moe.register_forward_pre_hook(record) for moe in model.moe_layers]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    for layer, hit in enumerate(reached):
        missed = (~hit).nonzero().flatten().tolist()
        if missed:
            return (f"the MoE routing is data-dependent and a traced graph keeps only the "
                    f"experts its example reaches; the example window of "
                    f"{example.shape[1]} bytes routes no token to expert {missed[0]} of "
                    f"layer {layer}, so the graph would silently drop it")
    return None
