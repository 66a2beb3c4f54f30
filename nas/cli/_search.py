"""``nas search``: find the Pareto front of accuracy and latency under a budget."""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from nas._hardware import get_hardware
from nas._supernet import SUPERNETS
from nas._units import parse_latency_ms, parse_size_mb
from nas.cli._common import (
    JSON_HELP,
    STORAGE_HELP,
    configure_logging,
    console,
    print_json,
    study_name,
    user_errors,
)
from nas.quant import BITS_PREFIX, CALIBRATION_SAMPLES, check_mode
from nas.quant._evaluator import QuantizedEvaluator

DEFAULT_EVAL_LIMIT = 2000
"""Validation examples per evaluation: about 0.25% standard error on token accuracy
(the same words for every subnet, so comparisons are paired), and a main job that
finishes in a minute or two on two cores."""


@user_errors
def search(
    supernet: str = typer.Option(
        ..., "--supernet", help="Supernet name (see `nas supernets list`)."
    ),
    hw: str = typer.Option(..., "--hw", help="Hardware target (see `nas hw list`)."),
    budget: str = typer.Option(..., "--budget", help="Latency budget: '50ms', '50 ms', '0.05s'."),
    evals: int = typer.Option(
        120, "--evals", min=1, help="Evaluations the study should hold in total (resumes count)."
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Seed of the search algorithm (default: the study's, or 0)."
    ),
    algorithm: str | None = typer.Option(
        None, "--algorithm",
        help="Search algorithm (default: the study's, or default = hybrid): nsga2, random, "
             "linas, evo, tpe, ... (an unknown name lists them all).",
    ),
    study: str | None = typer.Option(None, "--study", callback=study_name,
                                     help="Study name (default: SUPERNET-HW)."),
    storage: str | None = typer.Option(None, "--storage", help=STORAGE_HELP),
    change_budget: bool = typer.Option(
        False, "--change-budget",
        help="Continue an existing study under another --budget (recorded in the study); "
             "without it a study keeps the budget it was created with.",
    ),
    eval_limit: int = typer.Option(
        DEFAULT_EVAL_LIMIT, "--eval-limit", min=0,
        help="Validate each subnet on a fixed sample of N validation examples (0: all).",
    ),
    quantize: str | None = typer.Option(
        None, "--quantize",
        help="none: fp32 subnets; int8: every unit 8-bit; mixed: per-unit bit widths searched "
             "with the architecture (the target's widths; default: the study's, or none).",
    ),
    objective: list[str] = typer.Option(
        [], "--objective", help="Add an objective: size (model size in MB, minimised)."
    ),
    size_budget: str | None = typer.Option(
        None, "--size-budget", help="Model size budget, e.g. '2MB' (adds the size objective)."
    ),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """Search subnets of SUPERNET for HW under a latency budget; print the Pareto front."""
    from nas._job import SearchRequest, prepare_search, run_prepared

    configure_logging(verbose)
    budget_ms = parse_latency_ms(budget)
    size_budget_mb = parse_size_mb(size_budget) if size_budget is not None else None
    unknown = sorted(set(objective) - {"size"})
    if unknown:
        raise ValueError(f"--objective must be size (accuracy and latency are always "
                         f"objectives), got {', '.join(unknown)}")
    if quantize is not None:
        check_mode(quantize)
    SUPERNETS.entry(supernet)  # unknown names fail here, before anything is loaded
    get_hardware(hw)  # unknown or malformed targets fail here too
    request = SearchRequest(
        supernet=supernet,
        hardware=hw,
        budget_ms=budget_ms,
        evals=evals,
        seed=seed,
        algorithm=algorithm,
        study=study or f"{supernet}-{hw}",
        storage=storage,
        eval_limit=eval_limit or None,
        change_budget=change_budget,
        quantize=quantize,
        size_objective="size" in objective,
        size_budget_mb=size_budget_mb,
    )
    prepared = prepare_search(request)
    request = prepared.request
    console.print(
        f"study [bold]{escape(str(request.study))}[/] in {escape(prepared.storage)}: {supernet} "
        f"on {hw}, latency <= {budget_ms:g} ms (smallest subnet: "
        f"{prepared.min_latency_ms:.1f} ms), {request.algorithm}, seed {request.seed}",
        highlight=False,
    )
    if budget_ms >= prepared.max_latency_ms:
        console.print(
            f"[bold yellow]warning:[/] the budget constrains nothing: the largest subnet "
            f"takes {prepared.max_latency_ms:.1f} ms on {hw}", highlight=False)
    if request.quantize != "none":
        console.print(f"quantize {request.quantize}: {_policy_words(prepared)}", highlight=False)
    result = run_prepared(prepared, progress=not json_output or console.is_terminal)
    document = result_document(result, request, prepared.evaluator)
    if json_output:
        print_json(document)
    else:
        print_front(document)


def _policy_words(prepared: Any) -> str:
    bits = prepared.target.quant_bits if prepared.request.quantize == "mixed" else (8,)
    units = len(prepared.supernet.quant_units())
    return (f"{units} units of {prepared.request.supernet} at {'/'.join(map(str, bits))} bits, "
            f"calibrated on {CALIBRATION_SAMPLES} training samples")


def result_document(result: Any, request: Any, evaluator: Any = None) -> dict[str, Any]:
    """The JSON document of a finished search (also the basis of the table); points of
    a quantized or sized search carry ``bits`` (unit -> bits) and ``size_mb``."""
    return {
        "study": result.study,
        "storage": result.storage,
        "supernet": request.supernet,
        "hardware": request.hardware,
        "budget_ms": request.budget_ms,
        "algorithm": request.algorithm,
        "seed": request.seed,
        "evaluations": result.evaluations,
        "new_evaluations": result.new_evaluations,
        "stopped_early": result.stopped_early,
        "hypervolume": result.to_dict()["hypervolume"],
        "quantize": request.quantize,
        "pareto": [_point(point, evaluator) for point in result.pareto],
    }


def _point(point: Any, evaluator: Any) -> dict[str, Any]:
    entry = {
        "trial": point.trial,
        "accuracy": point.metrics["accuracy"],
        "latency_ms": point.metrics["latency_ms"],
        "config": point.config,
    }
    if "size_mb" in point.metrics:
        entry["size_mb"] = point.metrics["size_mb"]
    if isinstance(evaluator, QuantizedEvaluator):
        entry["bits"] = evaluator.policy_of(evaluator.space.config(point.config))[1]
    return entry


def print_front(document: dict[str, Any]) -> None:
    from rich.console import Console

    table = Table(title=f"Pareto front of study {document['study']} "
                        f"(latency <= {document['budget_ms']:g} ms on {document['hardware']})")
    table.add_column("trial", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("latency ms", justify="right")
    points = document["pareto"]
    sized = any("size_mb" in p for p in points)
    quantized = any("bits" in p for p in points)
    if sized:
        table.add_column("size MB", justify="right")
    if quantized:
        table.add_column("bits")
    table.add_column("subnet")
    for point in points:
        config = {k: v for k, v in point["config"].items() if not k.startswith(BITS_PREFIX)}
        row = [str(point["trial"]), f"{point['accuracy']:.4f}", f"{point['latency_ms']:.2f}"]
        if sized:
            row.append(f"{point['size_mb']:.3f}")
        if quantized:
            row.append(_bits_summary(point["bits"]))
        table.add_row(*row, _summary(config))
    out = Console()
    out.print(table)
    out.print(
        f"{document['evaluations']} evaluations ({document['new_evaluations']} new), "
        f"hypervolume {document['hypervolume'] or 0:.4f}; export one with "
        f"`nas export --study {document['study']} --trial N --out DIR`",
        highlight=False,
    )
    if not document["pareto"]:
        out.print("no evaluated subnet meets the budget yet; raise --evals or the budget")


def _bits_summary(bits: dict[str, int]) -> str:
    """``8x12 32x4``: how many units run at each width (all fp32: ``32``)."""
    if not bits:
        return "32"
    counts: dict[int, int] = {}
    for width in bits.values():
        counts[width] = counts.get(width, 0) + 1
    return " ".join(f"{w}x{n}" for w, n in sorted(counts.items()))


def _summary(config: dict[str, Any]) -> str:
    """A subnet in a few words: encoder and decoder width/depth for encoder-decoder
    supernets (HAT); else genes grouped by their last name part, values in layer order
    (OFA: ``depth 2,3,2,4 · kernel 5,7,...``; SortedNet: ``width 0.5 · depth 2``); else
    every gene's value in order (a NAS-Bench-201 cell's six ops)."""
    sides = [(side, config.get(f"{side}.embed_dim"), config.get(f"{side}.layers"))
             for side in ("encoder", "decoder")]
    if all(dim is not None for _, dim, _ in sides):
        return ", ".join(f"{side[:3]} {dim}/{layers}" for side, dim, layers in sides)
    groups: dict[str, list[str]] = {}
    for name, value in config.items():
        groups.setdefault(name.rsplit(".", 1)[-1], []).append(str(value))
    if len(groups) < len(config) or not any("." in name for name in config):
        return " · ".join(f"{field} {','.join(values)}" for field, values in groups.items())
    return ", ".join(str(value) for value in config.values())
