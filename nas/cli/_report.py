"""``nas report``: one self-contained HTML file about one or more studies."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from nas.cli._common import STORAGE_HELP, console, user_errors


@user_errors
def report(
    study: list[str] = typer.Option(
        ..., "--study", help="Study name; repeat to compare studies on one plot."
    ),
    out: Path = typer.Option(..., "--out", help="The HTML file to write."),
    storage: str | None = typer.Option(None, "--storage", help=STORAGE_HELP),
    force: bool = typer.Option(False, "--force", help="Replace an existing OUT."),
) -> None:
    """Write Pareto fronts, hypervolume curves, Pareto subnets (with parameters and
    MACs) and settings of the studies to one HTML file that opens without a network."""
    from nas.studies import build_report, default_storage, load_study

    _check_out(out, force=force)  # before the slow part, so a refusal is immediate
    url = storage or default_storage()
    studies = [load_study(name, url) for name in study]
    html = build_report(studies)
    _check_out(out, force=force)  # the file may have appeared while the report was built
    _write_atomic(out, html)
    console.print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)", highlight=False)


def _check_out(out: Path, *, force: bool) -> None:
    if out.is_dir():
        raise ValueError(f"--out '{out}' is a directory; give a file name such as report.html")
    if not out.parent.is_dir():
        raise ValueError(f"--out '{out}': directory '{out.parent}' does not exist")
    if out.exists() and not force:
        raise FileExistsError(f"'{out}' exists; pass --force to replace it")


def _write_atomic(out: Path, text: str) -> None:
    """Write a temporary file beside ``out`` and rename it, so that an interrupted write
    never leaves a truncated report (or a half-replaced old one)."""
    temp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with temp.open("x", encoding="utf-8") as handle:  # usual permissions, unlike mkstemp
            handle.write(text)
        os.replace(temp, out)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
