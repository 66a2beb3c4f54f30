"""``nas supernets``: the shipped supernets and their search spaces."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from nas._supernet import SUPERNETS
from nas.cli._common import JSON_HELP, print_json, user_errors

app = typer.Typer(help="Shipped supernets.", no_args_is_help=True)


@app.command("list")
@user_errors
def list_supernets(json_output: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List the supernets `nas search --supernet` accepts."""
    rows = [{"name": n, "description": SUPERNETS.entry(n).description} for n in SUPERNETS.names()]
    if json_output:
        print_json(rows)
        return
    table = Table("supernet", "description")
    for row in rows:
        table.add_row(row["name"], row["description"])
    Console().print(table)
