"""``nas search``: find the Pareto front of accuracy and latency under a budget."""

from __future__ import annotations

import time
from typing import Any

import typer
from rich.markup import escape

from nas.cli._common import (
    JSON_HELP,
    STORAGE_HELP,
    configure_logging,
    console,
    print_json,
    study_name,
    user_errors,
)

DEFAULT_EVALS = 120
"""Evaluations of a supernet search left without ``--evals``."""
PREDICTED_EVALS = 5000
"""Evaluations of a ``--space`` search left without ``--evals``: each costs about a
millisecond with its SQLite write (OFA's Note10 tables and predictor at 25 ms:
``evo-budget`` passes OFA's tutorial figure after 1,700 to 4,500 for seeds 0-9)."""
DEFAULT_EVAL_LIMIT = 2000
"""Validation examples per evaluation: about 0.25% standard error on token accuracy
(the same words for every subnet, so comparisons are paired), and a main job that
finishes in a minute or two on two cores."""


@user_errors
def search(
    supernet: str | None = typer.Option(
        None, "--supernet", help="Supernet name (see `nas supernets list`); or --space."
    ),
    space: str | None = typer.Option(
        None, "--space",
        help="Search a published space without weights instead of a supernet (ofa-mbv3); "
             "accuracy comes from --accuracy-predictor.",
    ),
    accuracy_predictor: str | None = typer.Option(
        None, "--accuracy-predictor",
        help="With --space: ofa:PATH (OFA's acc_predictor.pth) or the folder of a predictor "
             "`nas predictor fit` wrote (default: the study's).",
    ),
    hw: str = typer.Option(..., "--hw", help="Hardware target (see `nas hw list`)."),
    budget: str | None = typer.Option(
        None, "--budget",
        help="Latency budget: '50ms', '50 ms', '0.05s' (default: the study's; for a new "
             "study none: the whole front, hypervolume normalised by the largest subnet's "
             "latency)."),
    evals: int | None = typer.Option(
        None, "--evals", min=1,
        help=f"Evaluations the study should hold in total (resumes count; default "
             f"{DEFAULT_EVALS}, or {PREDICTED_EVALS} for a --space search).",
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Seed of the search algorithm (default: the study's, or 0)."
    ),
    algorithm: str | None = typer.Option(
        None, "--algorithm",
        help="Search algorithm (default: the study's, or default = screened; evo-budget for a "
             "--space search): nsga2, random, linas, evo, tpe, ... (an unknown name lists "
             "them all).",
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
        [], "--objective", help="Add an objective: size (model size in MB, minimised); "
                                "memory (peak of weights plus activations and KV cache at "
                                "batch 1, MB, minimised)."
    ),
    size_budget: str | None = typer.Option(
        None, "--size-budget", help="Model size budget, e.g. '2MB' (adds the size objective)."
    ),
    memory_budget: str | None = typer.Option(
        None, "--memory-budget",
        help="Peak memory budget at batch 1, e.g. '8MB', '500kB' (adds the memory objective; "
             "measured on local-cpu and remote targets, modelled from the subnet's shapes "
             "on the others: `nas hw show` states the model's error).",
    ),
    workers: int | None = typer.Option(
        None, "--workers",
        help="Evaluate by N local worker processes through the study's database (an "
             "SQLite file or postgresql://); `nas worker` joins from other hosts. The "
             "driver alone runs the algorithm, so the front is the one of a search without "
             "workers; samplers that ask one config at a time (tpe, optuna-gp) are asked "
             "N at once, recorded in the study.",
    ),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """Search subnets of SUPERNET for HW under a latency budget; print the Pareto front."""
    from nas._evaluator import MEMORY_METRIC
    from nas._hardware import get_hardware
    from nas._job import SearchRequest, prepare_search, run_prepared
    from nas._supernet import SPACES, SUPERNETS
    from nas._units import format_mb, parse_latency_ms, parse_size_mb
    from nas.quant import check_mode

    configure_logging(verbose)
    budget_ms = parse_latency_ms(budget) if budget is not None else None
    size_budget_mb = parse_size_mb(size_budget) if size_budget is not None else None
    memory_budget_mb = (parse_size_mb(memory_budget, what="memory budget")
                        if memory_budget is not None else None)
    unknown = sorted(set(objective) - {"size", "memory"})
    if unknown:
        raise ValueError(f"--objective must be size or memory (accuracy and latency are "
                         f"always objectives), got {', '.join(unknown)}")
    if quantize is not None:
        check_mode(quantize)
    if (supernet is None) == (space is None):
        raise ValueError("name what to search: --supernet NAME (see `nas supernets list`) "
                         "or --space NAME with --accuracy-predictor, one of the two")
    if supernet is not None:
        SUPERNETS.entry(supernet)  # unknown names fail here, before anything is loaded
    else:
        SPACES.entry(str(space))
    get_hardware(hw)  # unknown or malformed targets fail here too
    if workers is not None:
        from nas._worker import MAX_LOCAL_WORKERS, check_worker_storage
        from nas.studies import default_storage

        if not 1 <= workers <= MAX_LOCAL_WORKERS:
            raise ValueError(f"--workers must be from 1 to {MAX_LOCAL_WORKERS} (each worker "
                             f"holds up to two database connections), got {workers}")
        storage = storage or default_storage()
        check_worker_storage(storage, must_exist=False)
    subject = supernet or str(space)
    request = SearchRequest(
        supernet=supernet or "",
        space=space,
        accuracy_predictor=accuracy_predictor,
        hardware=hw,
        budget_ms=budget_ms,
        evals=evals if evals is not None else (
            DEFAULT_EVALS if space is None else PREDICTED_EVALS),
        seed=seed,
        algorithm=algorithm,
        study=study or f"{subject}-{hw}",
        storage=storage,
        eval_limit=eval_limit or None,
        change_budget=change_budget,
        quantize=quantize,
        size_objective="size" in objective,
        size_budget_mb=size_budget_mb,
        memory_objective="memory" in objective,
        memory_budget_mb=memory_budget_mb,
        workers=workers,
    )
    prepared = prepare_search(request)
    request = prepared.request
    bound = (f"latency <= {request.budget_ms:g} ms (smallest subnet: "
             f"{prepared.min_latency_ms:.1f} ms)" if request.budget_ms is not None else
             f"no latency budget: the whole front (hypervolume normalised by the space's "
             f"range, latency up to {request.latency_reference_ms:.1f} ms)")
    console.print(
        f"study [bold]{escape(str(request.study))}[/] in {escape(prepared.storage)}: "
        f"{escape(prepared.problem.space.name)} on {escape(hw)}, {bound}, "
        f"{request.algorithm}, seed {request.seed}",
        highlight=False,
    )
    if prepared.min_memory_mb is not None:
        bound = prepared.problem.upper_bound(MEMORY_METRIC)
        console.print(f"memory <= {format_mb(bound)} on {escape(hw)} (least a subnet "
                      f"needs: {format_mb(prepared.min_memory_mb)}, "
                      f"{prepared.target.memory_provenance().method})", highlight=False)
    largest = prepared.max_latency_ms
    if request.budget_ms is not None and largest is not None and request.budget_ms >= largest:
        console.print(
            f"[bold yellow]warning:[/] the budget constrains nothing: the largest subnet "
            f"takes {largest:.1f} ms on {hw}", highlight=False)
    for note in prepared.notes:
        console.print(escape(note), highlight=False)
    if prepared.study.meta.predicted_accuracy:
        console.print(escape(prepared.study.meta.accuracy_note()), highlight=False)
    if request.quantize != "none":
        console.print(f"quantize {request.quantize}: {_policy_words(prepared)}", highlight=False)
    started = time.perf_counter()
    show = not json_output or console.is_terminal
    result = (run_prepared(prepared, progress=show) if workers is None
              else _run_with_workers(prepared, workers, progress=show))
    document = result_document(result, request, prepared.evaluator)
    document["seconds"] = round(time.perf_counter() - started, 3)
    meta = prepared.study.meta
    if meta.predicted_accuracy:
        document["space"] = meta.space
        document["accuracy_predictor"] = meta.accuracy_predictor
        document["accuracy_predictor_sha256"] = meta.accuracy_predictor_sha256
        document["accuracy_note"] = meta.accuracy_note()
    if json_output:
        print_json(document)
    else:
        print_front(document)


def _run_with_workers(prepared: Any, count: int, *, progress: bool) -> Any:
    """The search driven here, evaluated by ``count`` local ``nas worker`` processes;
    a config that fails for good (or workers that all exit) stops it in one line."""
    from nas._driver import QueueDriver
    from nas._job import run_prepared
    from nas._worker import LocalWorkers
    from nas.cli._common import fail
    from nas.studies._queue import QueueError, TrialQueue

    queue = TrialQueue(prepared.study)
    with LocalWorkers(prepared.storage, str(prepared.request.study), count) as pool:
        try:
            return run_prepared(prepared, progress=progress,
                                workers=QueueDriver(queue, check=pool.check))
        except (QueueError, RuntimeError, ConnectionError) as err:
            fail(str(err).splitlines()[0], code=1)


def _policy_words(prepared: Any) -> str:
    from nas.quant import CALIBRATION_SAMPLES

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
        "latency_reference_ms": request.latency_reference_ms,
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
    from nas._evaluator import MEMORY_METRIC
    from nas.quant._evaluator import QuantizedEvaluator

    entry = {
        "trial": point.trial,
        "accuracy": point.metrics["accuracy"],
        "latency_ms": point.metrics["latency_ms"],
        "config": point.config,
    }
    for metric in ("size_mb", MEMORY_METRIC):
        if metric in point.metrics:
            entry[metric] = point.metrics[metric]
    if isinstance(evaluator, QuantizedEvaluator):
        entry["bits"] = evaluator.policy_of(evaluator.space.config(point.config))[1]
    return entry


def print_front(document: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from nas._evaluator import MEMORY_METRIC
    from nas.quant import BITS_PREFIX

    bound = ("whole front" if document["budget_ms"] is None
             else f"latency <= {document['budget_ms']:g} ms")
    table = Table(title=f"Pareto front of study {document['study']} "
                        f"({bound} on {document['hardware']})")
    table.add_column("trial", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("latency ms", justify="right")
    points = document["pareto"]
    sized = any("size_mb" in p for p in points)
    memory = any(MEMORY_METRIC in p for p in points)
    quantized = any("bits" in p for p in points)
    if sized:
        table.add_column("size MB", justify="right")
    if memory:
        table.add_column("memory kB", justify="right")
    if quantized:
        table.add_column("bits")
    table.add_column("subnet")
    for point in points:
        config = {k: v for k, v in point["config"].items() if not k.startswith(BITS_PREFIX)}
        row = [str(point["trial"]), f"{point['accuracy']:.4f}", f"{point['latency_ms']:.2f}"]
        if sized:
            row.append(f"{point['size_mb']:.3f}")
        if memory:
            row.append(f"{point[MEMORY_METRIC] * 1000:.1f}")
        if quantized:
            row.append(_bits_summary(point["bits"]))
        table.add_row(*row, _summary(config))
    out = Console()
    out.print(table)
    export_hint = ("" if document.get("accuracy_note") else
                   f"; export one with `nas export --study {document['study']} --trial N "
                   f"--out DIR`")
    out.print(
        f"{document['evaluations']} evaluations ({document['new_evaluations']} new), "
        f"hypervolume {document['hypervolume'] or 0:.4f}{export_hint}",
        highlight=False,
    )
    if not document["pareto"]:
        out.print("no evaluated subnet meets the budget yet; raise --evals or the budget")
    elif document.get("accuracy_note"):
        best = max(document["pareto"], key=lambda p: p["accuracy"])
        budget = document["budget_ms"]
        within = "" if budget is None else f" (<= {budget:g} ms)"
        out.print(
            f"best predicted accuracy {best['accuracy']:.4f} at {best['latency_ms']:.2f} ms"
            f"{within}, trial {best['trial']} of "
            f"{document['evaluations']} evaluations, {document.get('seconds', 0):.1f} s "
            f"of search ({document['algorithm']}); "
            f"{document['accuracy_note']}", highlight=False)


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
