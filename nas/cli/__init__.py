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
    rich_markup_mode="markdown",  # a docstring paragraph reflows into one line
)

# `nas --help` lists the commands by the job they serve, in the order a user meets them.
SEARCH = "Search for a subnet and ship it"
STUDIES = "Read and compare studies"
HARDWARE = "Hardware targets and measurements"
SUPERNETS = "Supernets and training"
COMPRESS = "Compression and quantization"
PREDICT = "Predictors and benchmarks"

app.command("search", rich_help_panel=SEARCH)(_search.search)
app.command("export", rich_help_panel=SEARCH)(_export.export)
app.command("worker", rich_help_panel=SEARCH)(_worker.worker)
app.add_typer(_studies.app, name="studies", rich_help_panel=STUDIES)
app.command("report", rich_help_panel=STUDIES)(_report.report)
app.command("dashboard", rich_help_panel=STUDIES)(_dashboard.dashboard)
_hardware.app.command("calibrate")(_calibrate.calibrate)
app.add_typer(_hardware.app, name="hw", rich_help_panel=HARDWARE)
app.command("profile", rich_help_panel=HARDWARE)(_profile.profile)
app.command("agent", rich_help_panel=HARDWARE)(_agent.agent)
app.add_typer(_supernets.app, name="supernets", rich_help_panel=SUPERNETS)
app.command("train", rich_help_panel=SUPERNETS)(_train.train)
app.add_typer(_compress.app, name="compress", rich_help_panel=COMPRESS)
app.add_typer(_quant.app, name="quant", rich_help_panel=COMPRESS)
app.add_typer(_predictor.app, name="predictor", rich_help_panel=PREDICT)
app.add_typer(_bench.app, name="bench", rich_help_panel=PREDICT)


def main() -> None:
    app()


__all__ = ["app", "main"]
