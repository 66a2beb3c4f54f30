"""``nas profile``: build a latency dataset of a supernet's subnets on a hardware target."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import typer

from nas.cli._common import (
    JSON_HELP,
    configure_logging,
    console,
    print_json,
    threads_option,
    user_errors,
)


@user_errors
def profile(
    supernet: str = typer.Option(..., "--supernet", help="Supernet name (see `nas supernets "
                                 "list`)."),
    hw: str = typer.Option(..., "--hw", help="Hardware target: local-cpu is timed here; "
                           "others (rpi4, ...) give their own figure (source column)."),
    samples: int = typer.Option(20, "--samples", min=1, help="Rows the file should hold in "
                                "total (a rerun continues)."),
    out: Path = typer.Option(..., "--out", help="The CSV to write or extend."),
    seed: int = typer.Option(0, "--seed", help="Seed of the config sampling."),
    threads: int = threads_option(1, "torch intra-op threads while timing"),
    rel_ci: float = typer.Option(0.05, "--rel-ci", help="Stop timing a subnet once the 95% "
                                 "interval of its median is within ±this fraction."),
    min_repeats: int = typer.Option(10, "--min-repeats", help="Timed runs per round (>= 6)."),
    max_repeats: int = typer.Option(100, "--max-repeats", help="Most timed runs per subnet."),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed runs per subnet first."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """Measure (or predict) the latency of SAMPLES distinct subnets of SUPERNET on HW and
    append one CSV row per subnet to OUT, flushed row by row.

    Rerunning with the same OUT skips the configs already there and continues until
    the file holds SAMPLES rows; a file made for another supernet, target, machine or
    thread count is refused and left as it is.

    CSV columns: one per feature of the space (as `to_features`), config_json,
    latency_ms, ci_low_ms, ci_high_ms (median and 95% interval), n_runs, converged,
    outliers (count beyond Tukey's fences), outlier_ms (JSON list), macs, params,
    weights_bytes, peak_activation_bytes, kv_cache_bytes, source (measured or
    predicted), supernet, hardware, fingerprint, cpu, threads, torch. Fit a predictor
    on it with: nas predictor fit --space table --data OUT --target latency_ms
    --drop ci_low_ms,ci_high_ms,n_runs,outliers,threads --out DIR
    """
    from nas._hardware import get_hardware
    from nas._supernet import SUPERNETS, get_supernet
    from nas._task import get_task
    from nas.hardware._latency_dataset import ProfileSettings, plan_dataset, run_plan
    from nas.hardware._profile import environment

    configure_logging(verbose)
    settings = ProfileSettings(threads=threads, warmup=warmup, min_repeats=min_repeats,
                               max_repeats=max_repeats, rel_ci=rel_ci)
    SUPERNETS.entry(supernet)  # unknown names fail here, before anything is loaded
    target = get_hardware(hw)
    net = get_supernet(supernet)
    plan = plan_dataset(out, supernet_name=supernet, supernet=net, target=target,
                        samples=samples, seed=seed, settings=settings)
    rows: list[dict[str, Any]] = []
    if plan.torn_bytes:
        console.print(f"{out}: its last row was cut short by a kill ({plan.torn_bytes} bytes); "
                      "dropping it and measuring that subnet again", highlight=False,
                      soft_wrap=True)
    if plan.todo:
        if net.task_name is None:
            raise ValueError(f"supernet {supernet!r} records no task to take a latency probe "
                             "from")
        try:
            rows = run_plan(plan, supernet=net, task=get_task(net.task_name), target=target,
                            settings=settings, progress=not json_output or console.is_terminal)
        except KeyboardInterrupt:
            console.print(f"interrupted; the rows measured so far are in {out}: rerun the same "
                          "command to continue", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
    document = summary(plan.path, plan.existing, rows, plan.identity,
                       {**environment(), "threads": threads})
    document["dropped_torn_bytes"] = plan.torn_bytes
    if json_output:
        print_json(document)
    else:
        print_summary(document)


def summary(path: Path, existing: int, rows: list[dict[str, Any]], identity: Any,
            env: dict[str, Any]) -> dict[str, Any]:
    """The JSON document of a run: counts, and the spread of the new figures."""
    latencies = [r["latency_ms"] for r in rows]
    measured = [r for r in rows if r["n_runs"] > 0]  # timed here, not given by the target
    widths = [max(r["ci_high_ms"] - r["latency_ms"], r["latency_ms"] - r["ci_low_ms"])
              / r["latency_ms"] for r in measured if r["latency_ms"] > 0]
    return {
        "out": str(path),
        **dict(identity),
        "existing_rows": existing,
        "new_rows": len(rows),
        "rows": existing + len(rows),
        "median_latency_ms": statistics.median(latencies) if latencies else None,
        "median_rel_ci_half_width": statistics.median(widths) if widths else None,
        "median_runs": statistics.median(r["n_runs"] for r in measured) if measured else None,
        "given_rows": len(rows) - len(measured),
        "not_converged": sum(r["converged"] == "false" for r in rows),
        "outlier_runs": sum(r["outliers"] for r in rows),
        "environment": env,
    }


def print_summary(document: dict[str, Any]) -> None:
    line = (f"{document['out']}: {document['rows']} rows ({document['new_rows']} new, "
            f"{document['existing_rows']} already there) for {document['supernet']} on "
            f"{document['hardware']}")
    if document["new_rows"]:
        line += f"; new rows: median {document['median_latency_ms']:.3g} ms"
    if document["median_rel_ci_half_width"] is not None:
        line += (f", median CI ±{document['median_rel_ci_half_width']:.1%}, "
                 f"median {document['median_runs']:g} runs, "
                 f"{document['not_converged']} not converged, "
                 f"{document['outlier_runs']} outlier runs")
    if document["given_rows"]:
        line += (f", {document['given_rows']} figures given by the target, not timed "
                 f"here (see `nas hw show {document['hardware']}`)")
    console.print(line, highlight=False, soft_wrap=True)
