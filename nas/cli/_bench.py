"""``nas bench``: benchmark search algorithms on a tabular benchmark's true Pareto front."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from nas.cli._common import (
    JSON_HELP,
    configure_logging,
    console,
    force_option,
    print_json,
    user_errors,
)

app = typer.Typer(
    help="Benchmarks of the search algorithms on tabular benchmarks.",
    no_args_is_help=True,
)


@app.command("search")
@user_errors
def search(
    space: str = typer.Option(..., "--space", help="Tabular benchmark (nb201)."),
    device: str = typer.Option(..., "--device", help="Latency column of the table (raspi4, ...)."),
    algorithms: str = typer.Option(
        "random,nsga2", "--algorithms",
        help="Comma-separated algorithm names (see `nas search --algorithm`; default too).",
    ),
    evals: int = typer.Option(250, "--evals", help="Evaluations per run (the last checkpoint)."),
    seeds: int = typer.Option(5, "--seeds", help="Runs per algorithm, seeds 0..N-1."),
    data: Path | None = typer.Option(
        None, "--data", help="Read the table from this CSV instead of the shipped one."
    ),
    dataset: str | None = typer.Option(
        None, "--dataset", help="Accuracy column (default: the table's, CIFAR-10 for nb201)."
    ),
    out: Path = typer.Option(
        Path("benchmarks/results"), "--out", help="Folder for the JSON document and PNG plot."
    ),
    force: bool = force_option("Replace the JSON document and plot of an earlier run in OUT."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """Run every algorithm for every seed on SPACE and report, per evaluation checkpoint,
    the median hypervolume gap to the true Pareto front of (error, latency on DEVICE)
    and the true Pareto points found."""
    from nas._bench import bench_search, file_stem, output_paths, write_outputs
    from nas._files import check_outputs

    configure_logging(verbose)
    files = output_paths(out, file_stem(space, device, evals))
    if out.is_dir():  # refused before the runs, not after them
        check_outputs(files, force=force)
    bench = bench_search(
        space,
        device=device,
        algorithms=algorithms.split(","),
        evals=evals,
        seeds=seeds,
        data=data,
        dataset=dataset,
        progress=True,
    )
    json_path, png_path = write_outputs(bench, out, overwrite=force)
    document = bench.to_dict()
    document["files"] = {"json": str(json_path), "plot": str(png_path)}
    if json_output:
        print_json(document)
        return
    table = Table(
        title=f"{space} on {bench.device} ({bench.dataset}): median over {seeds} seeds; "
              f"true front {bench.true_front_size} cells"
    )
    table.add_column("algorithm")
    table.add_column("evals", justify="right")
    table.add_column("hv gap %", justify="right")
    table.add_column("IQR %", justify="right")
    table.add_column("true front found", justify="right")
    for row in bench.summary:
        table.add_row(
            row.algorithm,
            str(row.evals),
            f"{100 * row.hv_gap_median:.3f}",
            f"{100 * row.hv_gap_q25:.3f}-{100 * row.hv_gap_q75:.3f}",
            f"{row.true_front_found_median:g}",
        )
    Console().print(table)
    if bench.stopped_early:
        console.print(f"stopped early: {', '.join(bench.stopped_early)}", highlight=False)
    console.print(f"wrote {json_path} and {png_path}", highlight=False, soft_wrap=True)
