"""The ``nas`` command line: search, train, hardware, studies, export, compression and
quantization."""

from __future__ import annotations

import typer

from nas.cli import (
    _agent,
    _bench,
    _calibrate,
    _compress,
    _dashboard,
    _export,
    _hardware,
    _predictor,
    _profile,
    _quant,
    _report,
    _search,
    _studies,
    _supernets,
    _train,
    _worker,
)
from nas.cli._common import OneLineErrors

app = typer.Typer(
    name="nas",
    cls=OneLineErrors,
    help="Hardware-aware neural architecture search and model compression.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("search")(_search.search)
app.command("worker")(_worker.worker)
app.command("train")(_train.train)
app.command("export")(_export.export)
app.command("profile")(_profile.profile)
app.command("agent")(_agent.agent)
app.command("report")(_report.report)
app.command("dashboard")(_dashboard.dashboard)
_hardware.app.command("calibrate")(_calibrate.calibrate)
app.add_typer(_hardware.app, name="hw")
app.add_typer(_studies.app, name="studies")
app.add_typer(_supernets.app, name="supernets")
app.add_typer(_predictor.app, name="predictor")
app.add_typer(_bench.app, name="bench")
app.add_typer(_compress.app, name="compress")
app.add_typer(_quant.app, name="quant")


def main() -> None:
    app()


__all__ = ["app", "main"]
