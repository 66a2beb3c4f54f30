"""``nas export``: write a trial's (or the whole front's) subnet as standalone checkpoints."""

from __future__ import annotations

from pathlib import Path

import typer

from nas.cli._common import (
    JSON_HELP,
    STORAGE_HELP,
    STUDY_HELP,
    console,
    fail,
    print_json,
    user_errors,
)


@user_errors
def export(
    study: str = typer.Option(..., "--study", help=STUDY_HELP),
    out: Path = typer.Option(
        ..., "--out", help="Directory to write model.safetensors and config.json."
    ),
    trial: int | None = typer.Option(
        None, "--trial", help="Trial number (see `nas studies show`)."
    ),
    pareto: bool = typer.Option(
        False, "--pareto", help="Export every subnet of the feasible front."
    ),
    storage: str | None = typer.Option(None, "--storage", help=STORAGE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing export in OUT."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Extract dense subnets and save them; `nas.load_subnet(DIR)` reloads one.

    Prints each export's parameter count and MACs (fvcore, one forward pass of the
    task's example input).
    """
    from nas.studies import export_pareto, export_trial

    if (trial is None) == (not pareto):
        fail("give exactly one of --trial N or --pareto")
    if pareto:
        written = export_pareto(study, out, storage=storage, overwrite=overwrite)
    else:
        written = [export_trial(study, trial, out, storage=storage, overwrite=overwrite)]
    exports = [{"path": str(path), **_counts(path)} for path in written]
    if json_output:
        print_json({"study": study, "exports": exports})
        return
    for row in exports:
        console.print(
            f"wrote {row['path']}/model.safetensors and config.json "
            f"({row['params']:,} parameters, {row['macs']:,} MACs per forward)",
            highlight=False,
        )


def _counts(path: Path) -> dict[str, int]:
    """Parameters and MACs of the exported model, as loaded back from its two files."""
    import json

    from nas import get_task, load_subnet
    from nas.hardware import count_macs, count_params

    model = load_subnet(path)
    task_name = json.loads((path / "config.json").read_text())["metadata"].get("task")
    if not task_name:
        return {"params": count_params(model), "macs": -1}
    inputs = get_task(task_name).example_inputs()
    return {"params": count_params(model), "macs": count_macs(model, inputs)}
