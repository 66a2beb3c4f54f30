"""``nas hw``: the hardware targets, where their figures come from and their error."""

from __future__ import annotations

import dataclasses

import typer
from rich.console import Console
from rich.table import Table

from nas._hardware import HARDWARE, get_hardware
from nas.cli._common import JSON_HELP, print_json, user_errors

app = typer.Typer(help="Hardware targets.", no_args_is_help=True)


@app.command("list")
@user_errors
def list_targets(json_output: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List the hardware targets."""
    rows = [{"name": n, "description": HARDWARE.entry(n).description} for n in HARDWARE.names()]
    if json_output:
        print_json(rows)
        return
    table = Table("target", "description")
    for row in rows:
        table.add_row(row["name"], row["description"])
    Console().print(table)


@app.command("show")
@user_errors
def show(
    name: str = typer.Argument(..., help="Target name, e.g. rpi4."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """How NAME gets its latency figures, their measured error and where they extrapolate."""
    target = get_hardware(name)
    provenance = target.provenance()
    document = {"name": target.name, "description": target.description,
                **dataclasses.asdict(provenance)}
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
