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
    study_name,
    user_errors,
)


@user_errors
def export(
    study: str = typer.Option(..., "--study", callback=study_name, help=STUDY_HELP),
    out: Path = typer.Option(
        ..., "--out", help="Directory to write (one folder per subnet with --pareto)."
    ),
    trial: int | None = typer.Option(
        None, "--trial", help="Trial number (see `nas studies show`)."
    ),
    pareto: bool = typer.Option(
        False, "--pareto", help="Export every subnet of the feasible front."
    ),
    storage: str | None = typer.Option(None, "--storage", help=STORAGE_HELP),
    formats: str = typer.Option(
        "safetensors", "--format",
        help="Comma list of safetensors, onnx, torchscript; graph formats are run back "
             "and checked against PyTorch.",
    ),
    force: bool = typer.Option(
        False, "--force", "--overwrite", help="Write into OUT although it already holds files."
    ),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Extract dense subnets and save them with config.json and MODEL_CARD.md;
    `nas.load_subnet(DIR)` reloads a safetensors export.

    Prints each export's files, parameter count and MACs (fvcore, one forward pass of the
    task's example input).
    """
    from nas.studies._export import export_pareto, export_trial, parse_formats

    if (trial is None) == (not pareto):
        fail("give exactly one of --trial N or --pareto")
    chosen = parse_formats(formats)
    if pareto:
        written = export_pareto(study, out, storage=storage, overwrite=force, formats=chosen)
    else:
        written = [export_trial(study, trial, out, storage=storage, overwrite=force,
                                formats=chosen)]
    exports = [{"path": str(path), "files": sorted(p.name for p in path.iterdir()),
                **_counts(path)} for path in written]
    if json_output:
        print_json({"study": study, "exports": exports})
        return
    for row in exports:
        counts = (f" ({row['params']:,} parameters, {row['macs']:,} MACs per forward)"
                  if row["params"] >= 0 else "")
        console.print(f"wrote {row['path']}: {', '.join(row['files'])}{counts}",
                      highlight=False)


def _counts(path: Path) -> dict[str, int]:
    """Parameters and MACs of the exported model, as loaded back from its safetensors
    weights (-1 when the export has none)."""
    import json

    from nas import get_task, load_subnet
    from nas.hardware import count_macs, count_params

    if not (path / "model.safetensors").is_file():
        return {"params": -1, "macs": -1}
    model = load_subnet(path)
    task_name = json.loads((path / "config.json").read_text())["metadata"].get("task")
    if not task_name:
        return {"params": count_params(model), "macs": -1}
    inputs = get_task(task_name).example_inputs()
    return {"params": count_params(model), "macs": count_macs(model, inputs)}
