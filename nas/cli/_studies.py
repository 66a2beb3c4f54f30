"""``nas studies``: the studies in a storage, their Pareto fronts and their tables."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from nas.cli._common import (
    JSON_HELP,
    STORAGE_HELP,
    force_option,
    print_json,
    study_name,
    user_errors,
)

app = typer.Typer(help="Study databases.", no_args_is_help=True)


@app.command("list")
@user_errors
def list_command(
    storage: str | None = typer.Option(None, "--storage", help=STORAGE_HELP),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List the studies in the storage."""
    from nas.studies import default_storage, list_studies

    summaries = list_studies(storage or default_storage())
    if json_output:
        print_json([dataclasses.asdict(s) for s in summaries])
        return
    table = Table("study", "trials", "supernet", "hardware")
    for s in summaries:
        table.add_row(s.name, str(s.trials), str(s.supernet), str(s.hardware))
    Console().print(table)


@app.command("show")
@user_errors
def show(
    name: str = typer.Argument(..., callback=study_name, help="Study name."),
    storage: str | None = typer.Option(None, "--storage", help=STORAGE_HELP),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """A study's settings, trial count and Pareto front."""
    from nas.studies import StudyMeta, default_storage, describe_study
    from nas.studies._study import constraints_text

    document = describe_study(name, storage or default_storage())
    if json_output:
        print_json(document)
        return
    out = Console()
    meta = document["meta"]
    subject = (f"supernet {meta['supernet']}" if meta.get("supernet")
               else f"space {meta.get('space')}")
    out.print(f"[bold]{name}[/]: {document['trials']} trials; {subject} "
              f"on {meta['hardware']}; budgets: {constraints_text(meta['constraints'])}",
              highlight=False)
    note = StudyMeta.from_dict(meta).accuracy_note()
    if note:
        out.print(note, highlight=False)
    table = Table("trial", "accuracy", "latency ms", title="Pareto front (feasible trials)")
    for point in document["pareto"]:
        table.add_row(str(point["trial"]), f"{point['accuracy']:.4f}",
                      f"{point['latency_ms']:.2f}")
    out.print(table)
    out.print(f"hypervolume {document['hypervolume']:.4f}", highlight=False)


def _positive_seconds(value: float) -> float:
    if not value > 0 or value == float("inf"):
        raise typer.BadParameter(f"must be a positive number of seconds, got {value:g}")
    return value


@app.command("audit")
@user_errors
def audit(
    name: str = typer.Argument(..., callback=study_name, help="Study name."),
    storage: str | None = typer.Option(None, "--storage", help=STORAGE_HELP),
    stale_after: float = typer.Option(
        300.0, "--stale-after", metavar="SECONDS", callback=_positive_seconds,
        help="A RUNNING trial with no heartbeat (or, without heartbeats, no start) for "
             "this long is stale."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """A study's health when many workers write it: trials by state, configs evaluated
    more than once, stale running trials, configs lost (every trial failed without a
    result). Exit code 0 if healthy, 1 if not."""
    from nas.studies import audit_study, default_storage

    report = audit_study(name, storage or default_storage(), stale_after=stale_after)
    if json_output:
        print_json(report.to_dict())
    else:
        typer.echo(report.summary())
    if not report.healthy:
        raise typer.Exit(1)


@app.command("export")
@user_errors
def export(
    name: str = typer.Argument(..., callback=study_name, help="Study name."),
    storage: str | None = typer.Option(None, "--storage", help=STORAGE_HELP),
    fmt: str = typer.Option(..., "--format", help="Table format: csv or parquet."),
    out: Path | None = typer.Option(
        None, "--out", help="File to write (default: NAME.csv or NAME.parquet here)."
    ),
    force: bool = force_option(),
) -> None:
    """Write a study as a table: one row per trial, one column per gene and metric."""
    from nas._files import check_output
    from nas.studies import default_storage, study_dataframe, write_study_table
    from nas.studies._tables import check_table_format

    check_table_format(fmt)
    path = check_output(out or Path(f"{name}.{fmt}"), kind="file", force=force)
    table = study_dataframe(name, storage or default_storage())
    write_study_table(table, path, fmt, overwrite=force)
    typer.echo(f"wrote {len(table)} trials to {path}")
