"""``nas predictor``: fit a learned predictor on a CSV of measurements, and score it.

A fitted predictor is a directory: the model's own files (``predictor.json``,
``arrays.safetensors``, ...) plus ``fit.json``, which records the feature space, the
target, the CSV's hash and the indices of the rows used for fitting, so that ``eval`` on
the same CSV scores only the rows the model never saw.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import typer

from nas._files import check_output, file_sha256, write_text_atomic
from nas.cli._common import JSON_HELP, console, force_option, print_json, user_errors

app = typer.Typer(help="Learned predictors of accuracy, latency and memory.",
                  no_args_is_help=True)

FIT_FILE = "fit.json"


def _split_drop(drop: str | None) -> tuple[str, ...]:
    return tuple(c.strip() for c in (drop or "").split(",") if c.strip())


@app.command("fit")
@user_errors
def fit(
    space: str = typer.Option(..., "--space", help="Feature space: nb201 (rows keyed by "
                              "arch_str) or table (every numeric column as a feature)."),
    data: Path = typer.Option(..., "--data", help="CSV of measurements."),
    target: str = typer.Option(..., "--target", help="The column to predict, or a "
                               "sum of columns a+b (latency_mean_encoder+latency_mean_decoder)."),
    out: Path = typer.Option(..., "--out", help="Directory to write the predictor to."),
    model: str = typer.Option("auto", "--model", help="Predictor name (auto picks by CV)."),
    samples: int | None = typer.Option(None, "--samples", help="Fit on K rows chosen by "
                                       "--seed (default: all rows)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the row choice and the model."),
    drop: str | None = typer.Option(None, "--drop", help="Comma-separated columns that are "
                                    "not features (--space table)."),
    log_target: bool = typer.Option(False, "--log-target/--no-log-target",
                                    help="Fit log(target) (positive targets only)."),
    proxies: bool = typer.Option(True, "--proxies/--no-proxies",
                                 help="nb201: add live-operation counts to the one-hot."),
    force: bool = force_option("Write into OUT although it holds files (an earlier "
                               "predictor is replaced)."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Fit a predictor of TARGET on (K rows of) a CSV and save it to OUT."""
    from nas.predictors import create_encoder, create_predictor, read_csv
    from nas.predictors._fitting import fit_predictor, sample_rows

    check_output(out, kind="dir", force=force)
    create_predictor(model)  # fail early on an unknown model name
    encoder = create_encoder(space, target=target, drop=_split_drop(drop), proxies=proxies)
    table = read_csv(data)
    table.target_columns(target)  # fail early on a missing column
    n = len(table)
    if samples is not None and samples > n:
        raise ValueError(f"--samples {samples} is larger than the data: {data} has {n} rows")
    if samples is not None and samples < 2:
        raise ValueError(f"--samples must be at least 2, got {samples}")
    rows = sample_rows(n, samples, seed)
    train = table.subset(rows)
    predictor = fit_predictor(table, rows, encoder=encoder, model=model, target=target,
                              seed=seed, log_target=log_target)
    check_output(out, kind="dir", force=force)  # files may have appeared while it fitted
    predictor.save(out)
    record: dict[str, Any] = {
        "features": encoder.to_spec(),
        "feature_names": list(encoder.feature_names),
        "target": target,
        "model": model,
        "chosen": getattr(predictor, "chosen_", model),
        "cv_scores": getattr(predictor, "cv_scores_", {}),
        "seed": seed,
        "log_target": log_target,
        "data": {"path": str(data), "sha256": file_sha256(data), "rows": n},
        "train_rows": rows.tolist(),
        "train_keys_sha256": hashlib.sha256(
            "\n".join(sorted(encoder.row_keys(train))).encode()).hexdigest(),
    }
    write_text_atomic(out / FIT_FILE, json.dumps(record, indent=2) + "\n")
    summary = {"out": str(out), "model": model, "chosen": record["chosen"],
               "cv_scores": record["cv_scores"], "n_train": int(rows.size),
               "n_features": len(record["feature_names"])}
    if json_output:
        print_json(summary)
        return
    console.print(f"fitted {record['chosen']} on {rows.size} of {n} rows "
                  f"({len(record['feature_names'])} features) -> {out}", highlight=False)


@app.command("eval")
@user_errors
def evaluate(
    path: Path = typer.Argument(..., help="A directory written by `nas predictor fit`."),
    data: Path = typer.Option(..., "--data", help="CSV of measurements."),
    target: str = typer.Option(..., "--target", help="The column to compare with, or "
                               "a sum of columns a+b."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Score a predictor: RMSE, MAPE (fraction), Kendall tau and Spearman on the rows it
    was not fitted on (every row when DATA is another CSV)."""
    from nas.predictors import Predictor, encoder_from_spec, read_csv, score_all

    record_path = path / FIT_FILE
    if not record_path.is_file():
        raise FileNotFoundError(f"no predictor at {path} (missing {FIT_FILE})")
    try:
        record = json.loads(record_path.read_text())
        encoder = encoder_from_spec(record["features"])
        train_rows = [int(i) for i in record["train_rows"]]
        same_data = record["data"]["sha256"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{record_path} is not a readable predictor record: {err!r}") from None
    import numpy as np

    predictor = Predictor.load(path)
    table = read_csv(data)
    table.target_columns(target)  # fail early on a missing column
    keep = np.ones(len(table), dtype=bool)
    if file_sha256(data) == same_data:
        keep[[i for i in train_rows if i < len(table)]] = False
    if not keep.any():
        raise ValueError(f"every row of {data} was used for fitting; nothing left to score")
    rows = table.subset(np.flatnonzero(keep))
    scores = score_all(rows.target(target), predictor.predict(encoder.transform(rows)))
    document = {**scores, "excluded": int((~keep).sum()), "model": record.get("chosen")}
    if json_output:
        print_json(document)
        return
    console.print(
        f"{document['model']} on {scores['n']} rows ({document['excluded']} fitting rows "
        f"excluded): spearman {scores['spearman']:.4f}, kendall tau "
        f"{scores['kendall_tau']:.4f}, MAPE {scores['mape']:.4f}, RMSE {scores['rmse']:.4g}",
        highlight=False)
