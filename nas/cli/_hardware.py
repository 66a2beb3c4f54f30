"""``nas hw``: the hardware targets, where their figures come from and their error."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from nas.cli._common import (
    JSON_HELP,
    STORAGE_HELP,
    STUDY_HELP,
    console,
    force_option,
    print_json,
    study_name,
    threads_option,
    user_errors,
)

if TYPE_CHECKING:
    from nas._hw_check import HardwareCheck

app = typer.Typer(help="Hardware targets.", no_args_is_help=True)


@app.command("list")
@user_errors
def list_targets(json_output: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List the hardware targets: measured or predicted, and the predicted ones' error on
    held-out measurements (``nas hw show NAME`` says where each figure comes from)."""
    from nas._hardware import HARDWARE
    from nas.hardware._user_targets import user_target_names

    rows = [_summary(name) for name in [*HARDWARE.names(), *user_target_names()]]
    if json_output:
        print_json(rows)
        return
    table = Table("target", "kind", "held-out MAPE", "description")
    for row in rows:
        mape = row["heldout_mape"]
        table.add_row(row["name"], row["kind"], "-" if mape is None else f"{mape:.1%}",
                      row["description"] + (f" ({row['unavailable']})"
                                            if row["unavailable"] else ""))
    Console().print(table)


def _summary(name: str) -> dict[str, Any]:
    """One row of ``nas hw list``; a target that cannot describe itself here (e.g. not
    calibrated on this machine) is listed with the reason instead of failing the list."""
    row: dict[str, Any] = {"name": name, "description": "", "kind": None,
                           "heldout_mape": None, "unavailable": None}
    from nas._hardware import get_hardware

    try:
        target = get_hardware(name)
        row["description"] = target.description
        provenance = target.provenance()
    except (ValueError, OSError) as err:
        row["unavailable"] = str(err)
        return row
    row["kind"] = provenance.method
    row["heldout_mape"] = provenance.error.get("mape")
    return row


@app.command("show")
@user_errors
def show(
    name: str = typer.Argument(..., help="Target name, e.g. rpi4."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """How NAME gets its latency figures, their measured error and where they extrapolate."""
    from nas._hardware import get_hardware

    target = get_hardware(name)
    provenance = target.provenance()
    memory = target.memory_provenance()
    document = {"name": target.name, "description": target.description,
                **dataclasses.asdict(provenance), "memory": dataclasses.asdict(memory)}
    if json_output:
        print_json(document)
        return
    out = Console()
    out.print(f"[bold]{target.name}[/]: {target.description}")
    out.print(f"method: {provenance.method}", highlight=False)
    out.print(f"source: {provenance.source}", highlight=False)
    if provenance.error:
        out.print("error on held-out measurements: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in provenance.error.items()), highlight=False)
    for note in provenance.notes:
        out.print(f"- {note}", highlight=False)
    out.print(f"memory: {memory.method}, {memory.source}", highlight=False)
    for note in memory.notes:
        out.print(f"- {note}", highlight=False)


@app.command("add")
@user_errors
def add(
    name: str = typer.Argument(..., help="Your device's target name, e.g. myboard."),
    supernet: str = typer.Option(..., "--supernet", help="The supernet whose subnets were "
                                 "measured (see `nas supernets list`)."),
    from_csv: Path | None = typer.Option(None, "--from", help="CSV of measurements: a `nas "
                                         "profile` file, or one column per gene of the "
                                         "space and a latency column."),
    measure: str | None = typer.Option(None, "--measure", help="Measure here first: "
                                       "remote:HOST:PORT (a device running `nas agent`) or "
                                       "local-cpu; the CSV goes to --out."),
    samples: int = typer.Option(20, "--samples", min=1, max=10_000, help="With --measure: "
                                "subnets to measure, chosen to spread over the space."),
    out: Path | None = typer.Option(None, "--out", help="With --measure: the CSV to write or "
                                    "extend (default: NAME.csv in the user registry)."),
    reference: str | None = typer.Option(None, "--reference", help="Comma-separated targets "
                                         "that serve as the few-shot prior (default: every "
                                         "built-in model or table of the space; 'none' for "
                                         "the per-layer law alone)."),
    method: str = typer.Option("auto", "--method", help="auto (few-shot where the space has "
                               "references, else per-layer), few-shot or per-layer."),
    latency_column: str = typer.Option("latency_ms", "--latency-column", help="The CSV's "
                                       "latency column, in ms."),
    description: str = typer.Option("", "--description", help="The device in words."),
    seed: int = typer.Option(0, "--seed", help="With --measure: seeds the subnets chosen."),
    threads: int = threads_option(1, "With --measure: torch intra-op threads while timing"),
    force: bool = force_option("Replace a target of the same name."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Add your own device as a target NAME: fit a latency law on measurements of
    SUPERNET's subnets (few-shot on the other devices of the space where it has them,
    else the per-layer model), save it in the user registry, and print its
    leave-one-out error. Then: nas search --supernet SUPERNET --hw NAME --budget ..."""
    from nas._supernet import SUPERNETS, get_supernet
    from nas._task import get_task
    from nas.hardware._user_measurements import read_measurements
    from nas.hardware._user_targets import (
        check_new_name,
        check_references,
        default_references,
        fit_law,
        save_target,
        targets_dir,
    )

    check_new_name(name, force=force)
    if (from_csv is None) == (measure is None):
        raise ValueError("give the measurements with --from CSV, or measure them with "
                         "--measure remote:HOST:PORT (one of the two)")
    if out is not None and measure is None:
        raise ValueError("--out is where --measure writes its CSV; with --from, the CSV is "
                         "read as it is")
    SUPERNETS.entry(supernet)
    net = get_supernet(supernet)
    if net.task_name is None:
        raise ValueError(f"supernet {supernet!r} records no task to take a latency probe from")
    task = get_task(net.task_name)
    progress = None if json_output else (lambda line: console.print(line, highlight=False))
    import numpy as np

    probe = net.space.sample(np.random.default_rng(0))
    if reference is None:
        references = default_references(net, probe, task)
    elif reference.strip() == "none":
        references = []
    else:
        references = check_references([r.strip() for r in reference.split(",") if r.strip()],
                                      net, probe, task)
    if measure is not None:
        from_csv = _measure_spread(measure, out or targets_dir() / f"{name}.csv",
                                   supernet=supernet, net=net, task=task, samples=samples,
                                   seed=seed, threads=threads, progress=not json_output)
    assert from_csv is not None
    data = read_measurements(from_csv, net.space, column=latency_column)
    result = fit_law(net, task, data, references=references, method=method, progress=progress)
    record = save_target(name, supernet_name=supernet, supernet=net, task=task, data=data,
                         result=result, description=description, force=force)
    errors = record.errors
    if json_output:
        print_json({"name": name, "method": record.method, "references": record.references,
                    "errors": record.errors, "measurements": record.measurements})
        return
    console.print(f"added target {name!r}: {record.method} law on {len(data)} subnets, "
                  f"leave-one-out MAPE {errors['mape']:.1%}, Spearman "
                  f"{errors['spearman']:.3f}; use it as --hw {name}", highlight=False,
                  soft_wrap=True)


def _measure_spread(measure: str, out: Path, *, supernet: str, net: Any, task: Any,
                    samples: int, seed: int, threads: int, progress: bool) -> Path:
    """Measure ``samples`` spread subnets on ``measure`` into ``out`` (a rerun extends)."""
    from nas._hardware import get_hardware
    from nas.hardware._latency_dataset import ProfileSettings, plan_dataset, run_plan

    target = get_hardware(measure)
    if not target.measures:
        raise ValueError(f"--measure {measure!r} does not measure: give remote:HOST:PORT (a "
                         "device running `nas agent`) or local-cpu")
    settings = ProfileSettings(threads=threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    plan = plan_dataset(out, supernet_name=supernet, supernet=net, target=target,
                        samples=samples, seed=seed, settings=settings, spread=True)
    if plan.todo:
        run_plan(plan, supernet=net, task=task, target=target, settings=settings,
                 progress=progress)
    return out


@app.command("remove")
@user_errors
def remove(name: str = typer.Argument(..., help="A target added with `nas hw add`.")) -> None:
    """Remove a target added with `nas hw add` (its measurements CSV stays)."""
    from nas.hardware._user_targets import remove_target

    path = remove_target(name)
    console.print(f"removed target {name!r} ({path})", highlight=False, soft_wrap=True)


@app.command("check")
@user_errors
def check(
    study: str = typer.Option(..., "--study", callback=study_name, help=STUDY_HELP),
    storage: str | None = typer.Option(None, "--storage", help=STORAGE_HELP),
    on: str = typer.Option("local-cpu", "--on", help="Where to measure: local-cpu (this CPU) "
                           "or remote:HOST:PORT (a device running `nas agent`)."),
    threads: int = typer.Option(1, "--threads", min=1, help="torch intra-op threads while "
                                "timing."),
    rel_ci: float = typer.Option(0.05, "--rel-ci", help="Stop timing a subnet once the 95% "
                                 "interval of its median is within ±this fraction."),
    min_repeats: int = typer.Option(10, "--min-repeats", help="Timed runs per round (>= 6); "
                                    "on a remote device, the runs per subnet."),
    max_repeats: int = typer.Option(100, "--max-repeats", help="Most timed runs per subnet."),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed runs per subnet first."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Measure the Pareto subnets of a study and compare with the latency the search used.

    Per subnet: predicted (stored) and measured latency, their ratio and the budget; over
    the front: Spearman and Kendall rank correlation, absolute percentage error and the
    scale between the devices. The result is also stored in the study as the user
    attribute hw_check/<fingerprint of the measuring target>.
    """
    from nas._hw_check import check_study
    from nas.hardware._latency_dataset import ProfileSettings

    settings = ProfileSettings(threads=threads, warmup=warmup, min_repeats=min_repeats,
                               max_repeats=max_repeats, rel_ci=rel_ci)
    result = check_study(study, storage=storage, on=on, settings=settings,
                         progress=not json_output or console.is_terminal)
    if json_output:
        print_json(result.to_dict())
        return
    _print_check(result)


def _print_check(result: HardwareCheck) -> None:
    """The per-subnet table, the summary over the front and what it means."""
    budget = result.budget_ms
    table = Table(title=f"study {result.study}: predicted on {result.predicted_on}, "
                        f"measured on {result.measured_on}")
    for column in ("trial", "predicted ms", "measured ms", "95% CI ms", "ratio"):
        table.add_column(column, justify="right")
    if budget is not None:
        table.add_column(f"<= {budget:g} ms predicted / measured", justify="right")
    for row in result.subnets:
        cells = [str(row.trial), f"{row.predicted_ms:.2f}", f"{row.measured_ms:.2f}",
                 f"{row.ci_low_ms:.2f}-{row.ci_high_ms:.2f}", f"{row.ratio:.3g}"]
        if budget is not None:
            cells.append(f"{_yes(row.within_budget_predicted)} / "
                         f"{_yes(row.within_budget_measured)}")
        table.add_row(*cells)
    out = Console()
    out.print(table)
    a = result.agreement
    ranks = ("rank correlation needs two subnets" if a.spearman is None else
             f"Spearman {a.spearman:.3f}, Kendall tau {a.kendall_tau:.3f}")
    out.print(f"{a.n} subnets: {ranks}; absolute error median {a.median_ape:.1%}, max "
              f"{a.max_ape:.1%}; scale (median measured/predicted) {a.scale:.3g}",
              highlight=False)
    out.print(result.note, highlight=False)
    out.print(f"stored in study {result.study} as {result.attribute}", highlight=False)


def _yes(flag: bool | None) -> str:
    return "yes" if flag else "no"
