"""``nas report``: one self-contained HTML file about one or more studies."""

from __future__ import annotations

from pathlib import Path

import typer

from nas._files import check_output, write_text_atomic
from nas.cli._common import STORAGE_HELP, console, force_option, study_name, user_errors


@user_errors
def report(
    study: list[str] = typer.Option(
        ..., "--study", callback=study_name,
        help="Study name; repeat to compare studies on one plot."
    ),
    out: Path = typer.Option(..., "--out", help="The HTML file to write."),
    storage: str | None = typer.Option(None, "--storage", help=STORAGE_HELP),
    force: bool = force_option(),
) -> None:
    """Write Pareto fronts, hypervolume curves, Pareto subnets (with parameters and
    MACs) and settings of the studies to one HTML file that opens without a network."""
    from nas.studies import build_report, default_storage, load_study

    check_output(out, kind="file", force=force)  # before the slow part: refused at once
    url = storage or default_storage()
    studies = [load_study(name, url) for name in study]
    html = build_report(studies)
    check_output(out, kind="file", force=force)  # it may have appeared meanwhile
    write_text_atomic(out, html)
    console.print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)", highlight=False)
