"""The search benchmark harness (`nas bench search`) and the core tabular registry."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from optuna.storages import InMemoryStorage
from typer.testing import CliRunner

from nas import Objective, Problem, run_search
from nas._bench import bench_search, checkpoints, summarise, write_outputs
from nas._tabular import TABLES, TabularBenchmark, get_table, list_tables
from nas.algorithms import get_algorithm
from nas.cli import app
from nas.studies import StudyMeta, open_study
from nas.supernets.nb201 import (
    DEFAULT_CSV,
    NB201_SPACE,
    NB201Table,
    arch_str_to_config,
    hv_gap,
    true_front_found,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST = ["--space", "nb201", "--device", "raspi4", "--evals", "60", "--seeds", "2"]
RESULT_KEYS = {"algorithm", "seed", "evals", "hv_gap", "true_front_found"}


def invoke(*args: str):
    return CliRunner().invoke(app, ["bench", "search", *args])


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def direct_scores(table: NB201Table, algorithm: str, seed: int, evals: int,
                  at: list[int]) -> list[tuple[float, int]]:
    """One run redone by hand with run_search, scored with the nb201 functions."""
    problem = Problem(NB201_SPACE, (Objective("accuracy", "maximize"),
                                    Objective("latency_ms", "minimize")))
    evaluator = table.evaluator("raspi4", missing="nan")
    meta = StudyMeta.for_problem(problem, supernet="nb201", checkpoint_hash="x",
                                 hardware="raspi4", hardware_fingerprint=evaluator.fingerprint,
                                 seed=seed, algorithm=algorithm)
    study = open_study("direct", InMemoryStorage(), meta=meta, space=NB201_SPACE)
    run_search(problem, get_algorithm(algorithm, problem, seed=seed), evaluator, study,
               n_evals=evals, progress=False)
    trials = study.trials()
    assert len(trials) == evals
    out = []
    for k in at:
        found = [t.config for t in trials[:k] if not t.failed]
        out.append((hv_gap(found, table, device="raspi4"),
                    true_front_found(found, table, device="raspi4")))
    return out


# -- the core registry ------------------------------------------------------------------


def test_core_registry_is_the_one_nb201_fills() -> None:
    import nas.supernets
    import nas.supernets.nb201

    assert nas.supernets.TABLES is TABLES is nas.supernets.nb201.TABLES
    assert nas.supernets.get_table("nb201") is get_table("nb201") is NB201Table.default()
    assert "nb201" in list_tables()
    assert isinstance(get_table("nb201"), TabularBenchmark)


def test_table_methods_delegate_to_the_functions() -> None:
    table = NB201Table.default()
    rows = np.random.default_rng(1).choice(len(table), 200, replace=False)
    for device in ("raspi4", "pixel3"):
        assert table.hv_gap(rows, device=device) == hv_gap(rows, table, device=device)
        assert (table.true_front_found(rows, device=device, dataset="cifar100")
                == true_front_found(rows, table, device=device, dataset="cifar100"))
    assert table.default_dataset == "acc_cifar10"


def test_core_harness_does_not_import_a_concrete_table() -> None:
    code = ("import sys, nas._bench, nas._tabular, nas.cli._bench; "
            "assert not any(m.startswith('nas.supernets') for m in sys.modules), "
            "[m for m in sys.modules if m.startswith('nas.supernets')]")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_missing_cells_score_nan_only_when_asked() -> None:
    subset = NB201Table(path=Path("subset.csv"), sha256="0" * 64,
                        arch_strs=NB201Table.default().arch_strs[:10],
                        codes=NB201Table.default().codes[:10],
                        accuracies={"acc_cifar10": np.full(10, 50.0)},
                        latencies={"raspi4": np.ones(10)})
    other = NB201Table.default().arch_strs[20]
    config = arch_str_to_config(NB201_SPACE, other)
    with pytest.raises(ValueError, match="has no row for cell"):
        subset.evaluator("raspi4").evaluate(config)
    metrics = subset.evaluator("raspi4", missing="nan").evaluate(config)
    assert np.isnan(metrics["accuracy"]) and np.isnan(metrics["latency_ms"])
    with pytest.raises(ValueError, match="missing must be 'raise' or 'nan'"):
        subset.evaluator("raspi4", missing="skip")


# -- checkpoints and medians ------------------------------------------------------------


@pytest.mark.parametrize(("evals", "expected"), [
    (1, [1]), (30, [30]), (50, [50]), (60, [50, 60]), (250, [50, 100, 250]),
    (500, [50, 100, 250, 500]), (1200, [50, 100, 250, 500, 1000, 1200]),
    (5000, [50, 100, 250, 500, 1000, 2500, 5000]),
])
def test_checkpoints(evals: int, expected: list[int]) -> None:
    assert checkpoints(evals) == expected


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "10"])
def test_checkpoints_reject_bad_evals(bad) -> None:
    with pytest.raises(ValueError, match="evals must be a positive integer"):
        checkpoints(bad)


def test_scores_are_the_first_k_trials_of_each_run() -> None:
    table = NB201Table.default()
    bench = bench_search("nb201", device="raspi4", algorithms=["random", "nsga2"], evals=60,
                         seeds=2)
    assert bench.checkpoints == (50, 60)
    assert len(bench.results) == 2 * 2 * 2
    for algorithm in ("random", "nsga2"):
        for seed in (0, 1):
            got = [(r.hv_gap, r.true_front_found) for r in bench.results
                   if r.algorithm == algorithm and r.seed == seed]
            assert got == direct_scores(table, algorithm, seed, 60, [50, 60])
        for k in (50, 60):
            gaps = [r.hv_gap for r in bench.results if r.algorithm == algorithm and r.evals == k]
            found = [r.true_front_found for r in bench.results
                     if r.algorithm == algorithm and r.evals == k]
            row = bench.median(algorithm, k)
            assert row.runs == 2
            assert row.hv_gap_median == pytest.approx(np.median(gaps))
            assert row.hv_gap_q25 <= row.hv_gap_median <= row.hv_gap_q75
            assert row.true_front_found_median == np.median(found)
    # more evaluations never leave a larger gap
    for r50, r60 in zip(bench.results[::2], bench.results[1::2], strict=True):
        assert r60.hv_gap <= r50.hv_gap


def test_summarise_takes_median_and_quartiles() -> None:
    from nas._bench import RunScore

    scores = [RunScore("a", s, 50, g, f) for s, (g, f) in enumerate(
        [(0.01, 1), (0.02, 2), (0.03, 3), (0.04, 4), (0.10, 0)])]
    (row,) = summarise(scores)
    assert (row.runs, row.hv_gap_median, row.true_front_found_median) == (5, 0.03, 2.0)
    assert row.hv_gap_q25 == pytest.approx(0.02) and row.hv_gap_q75 == pytest.approx(0.04)


# -- the command ------------------------------------------------------------------------


def test_json_document_plot_and_files(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = invoke(*FAST, "--algorithms", "random,default,random", "--json", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert "bench runs" in result.stderr  # the progress bar goes to stderr
    document = json.loads(result.stdout)
    settings = document["settings"]
    assert settings["algorithms"] == ["random", "default"]  # repeats run once
    assert settings["implementations"] == {"random": "random", "default": "screened"}
    assert settings["seeds"] == [0, 1]
    assert settings["checkpoints"] == [50, 60]
    assert (settings["space"], settings["device"], settings["dataset"]) == (
        "nb201", "raspi4", "acc_cifar10")
    assert settings["reference_point"] == 1.1 and settings["data"] is None
    assert settings["true_front_size"] == len(NB201Table.default().front_rows(device="raspi4"))
    results = document["results"]
    assert len(results) == 2 * 2 * 2
    for row in results:
        assert set(row) == RESULT_KEYS
        assert 0.0 <= row["hv_gap"] <= 1.0 and isinstance(row["true_front_found"], int)
    assert {(r["algorithm"], r["seed"], r["evals"]) for r in results} == {
        (a, s, k) for a in ("random", "default") for s in (0, 1) for k in (50, 60)}
    assert len(document["summary"]) == 4
    for row in document["summary"]:
        gaps = [r["hv_gap"] for r in results
                if (r["algorithm"], r["evals"]) == (row["algorithm"], row["evals"])]
        assert row["hv_gap_median"] == pytest.approx(float(np.median(gaps)))
    json_path = out / "search-nb201-raspi4-60evals.json"
    png_path = out / "search-nb201-raspi4-60evals.png"
    assert document["files"] == {"json": str(json_path), "plot": str(png_path)}
    assert json.loads(json_path.read_text())["results"] == results
    assert png_path.read_bytes()[:8] == PNG_MAGIC and png_path.stat().st_size > 5_000


def test_table_output_without_json(tmp_path: Path) -> None:
    result = invoke(*FAST, "--algorithms", "random", "--out", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert "random" in result.stdout and "hv gap %" in result.stdout
    assert (tmp_path / "search-nb201-raspi4-60evals.png").read_bytes()[:8] == PNG_MAGIC


def test_data_csv_subset(tmp_path: Path) -> None:
    with DEFAULT_CSV.open(newline="") as f:
        rows = list(csv.reader(f))
    picked = np.random.default_rng(0).choice(len(rows) - 1, 400, replace=False) + 1
    path = tmp_path / "subset.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([rows[0], *(rows[i] for i in sorted(picked))])
    subset = NB201Table.from_csv(path)
    result = invoke(*FAST, "--algorithms", "random", "--data", str(path), "--json",
                    "--out", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["settings"]["data"] == str(path)
    assert document["settings"]["table_sha256"] == subset.sha256
    assert document["settings"]["true_front_size"] == len(subset.front_rows(device="raspi4"))
    got = [(r["hv_gap"], r["true_front_found"]) for r in document["results"] if r["seed"] == 0]
    # cells the subset lacks count as evaluations and score nothing
    assert got == direct_scores(subset, "random", 0, 60, [50, 60])


def test_write_outputs_refuses_a_file_as_folder(tmp_path: Path) -> None:
    bench = bench_search("nb201", device="raspi4", algorithms=["random"], evals=5, seeds=1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file; give a folder"):
        write_outputs(bench, tmp_path / "file")


def _write_csv(path: Path, header: list[str], n: int = 20) -> Path:
    with DEFAULT_CSV.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = [next(reader) for _ in range(n)]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([[row[h] for h in header] for row in rows])
    return path


@pytest.mark.parametrize(("args", "fragments"), [
    (["--space", "nb101"], ["unknown tabular benchmark 'nb101'", "known: nb201"]),
    (["--device", "tpu"], ["unknown device 'tpu'", "raspi4", "pixel3", "1080ti_32"]),
    (["--algorithms", "random,bogus"], ["unknown algorithm 'bogus'", "known:", "nsga2"]),
    (["--algorithms", ","], ["algorithms must name at least one algorithm", "random"]),
    (["--evals", "0"], ["evals must be a positive integer", "got 0"]),
    (["--seeds", "0"], ["seeds must be a positive integer", "got 0"]),
    (["--seeds", "-3"], ["seeds must be a positive integer", "got -3"]),
    (["--dataset", "mnist"], ["unknown dataset 'mnist'", "acc_cifar10"]),
    (["--data", "nope.csv"], ["no such file"]),
])
def test_bad_input_is_one_line(args: list[str], fragments: list[str], tmp_path: Path) -> None:
    result = invoke(*FAST, *args, "--out", str(tmp_path / "out"))
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("header", "fragment"), [
    (["arch_str", "acc_cifar10"], "no latency column (lat_<name>)"),
    (["arch_str", "lat_raspi4"], "no accuracy column (acc_<name>)"),
    (["acc_cifar10", "lat_raspi4"], "no 'arch_str' column"),
    (["arch_str", "acc_cifar10", "lat_pixel3"], "unknown device 'raspi4'"),
])
def test_csv_without_the_needed_columns(header: list[str], fragment: str,
                                        tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "bad.csv", header)
    result = invoke(*FAST, "--data", str(path), "--out", str(tmp_path / "out"))
    assert_one_line_error(result, fragment)


def test_help() -> None:
    result = CliRunner().invoke(app, ["bench", "search", "--help"])
    assert result.exit_code == 0 and "--algorithms" in result.stdout
