"""``nas supernets``: the shipped supernets and their search spaces."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from nas.cli._common import JSON_HELP, print_json, user_errors

app = typer.Typer(help="Shipped supernets.", no_args_is_help=True)


@app.command("list")
@user_errors
def list_supernets(json_output: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List the supernets `nas search --supernet` accepts."""
    from nas._supernet import SUPERNETS

    rows = [{"name": n, "description": SUPERNETS.entry(n).description} for n in SUPERNETS.names()]
    if json_output:
        print_json(rows)
        return
    table = Table("supernet", "description")
    for row in rows:
        table.add_row(Text(row["name"]), Text(row["description"]))  # text, not markup
    Console().print(table)


@app.command("show")
@user_errors
def show_supernet(
    name: str = typer.Argument(..., help="A supernet from `nas supernets list`."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show a supernet: its family, task, search space, size range and training recipe."""
    from nas.cli._supernet_summary import supernet_summary

    summary = supernet_summary(name)
    if json_output:
        print_json(summary)
        return
    table = Table("field", "value", show_header=False)
    for key, value in summary.items():
        if key != "genes":
            table.add_row(key, Text(str(value)))
    genes = summary["genes"]
    more = f" ... ({len(genes)} in all)" if len(genes) > 12 else ""
    table.add_row("genes", Text(", ".join(genes[:12]) + more))
    Console().print(table)
