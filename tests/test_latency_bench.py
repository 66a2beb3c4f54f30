"""Sum-of-columns targets of `nas predictor --space table`, and the HAT latency benchmark's
scoring helpers (benchmarks/bench_latency_models.py)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nas.cli import app
from nas.predictors import TableFeatures, read_csv

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_latency_models.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_latency_models", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


def nas(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def parts_csv(tmp_path: Path) -> Path:
    """80 rows: features x1, x2; two parts a, b of a latency that is linear in them."""
    rng = np.random.default_rng(0)
    x = rng.uniform(1, 5, size=(80, 2))
    a = 2 * x[:, 0] + 1 + 0.01 * rng.normal(size=80)
    b = 3 * x[:, 1] + 2 + 0.01 * rng.normal(size=80)
    path = tmp_path / "parts.csv"
    lines = ["name,x1,a,x2,b"] + [f"r{i},{x1},{ai},{x2},{bi}"
                                  for i, ((x1, x2), ai, bi) in enumerate(zip(x, a, b))]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- sum-of-columns targets -----------------------------------------------------------------


def test_table_target_sums_the_named_columns(parts_csv: Path) -> None:
    table = read_csv(parts_csv)
    assert table.target_columns("a+b") == ("a", "b")
    assert table.target_columns(" a + b ") == ("a", "b")
    np.testing.assert_array_equal(table.target("a+b"), table.column("a") + table.column("b"))
    np.testing.assert_array_equal(table.target("a"), table.column("a"))  # one column as before
    encoder = TableFeatures(target="a+b").fit(table)
    assert encoder.feature_names == ("x1", "x2")


def test_a_column_whose_name_holds_a_plus_is_taken_whole(tmp_path: Path) -> None:
    path = tmp_path / "plus.csv"
    path.write_text("a+b,a,x\n3,1,0\n5,2,1\n")
    table = read_csv(path)
    assert table.target_columns("a+b") == ("a+b",)
    assert TableFeatures(target="a+b").fit(table).feature_names == ("a", "x")


def test_fit_and_eval_on_a_sum_target(parts_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    result = nas("predictor", "fit", "--space", "table", "--data", str(parts_csv),
                 "--target", "a+b", "--model", "ridge", "--samples", "30", "--out", str(out),
                 "--json")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "fit.json").read_text())
    assert record["feature_names"] == ["x1", "x2"] and record["target"] == "a+b"
    result = nas("predictor", "eval", str(out), "--data", str(parts_csv), "--target", "a+b",
                 "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["n"] == 50 and scores["excluded"] == 30
    assert scores["mape"] < 0.01 and scores["spearman"] > 0.99


@pytest.mark.parametrize("command", ["fit", "eval"])
def test_a_missing_column_in_the_sum_is_a_one_line_error(parts_csv, tmp_path, command):
    out = tmp_path / "pred"
    if command == "eval":
        assert nas("predictor", "fit", "--space", "table", "--data", str(parts_csv),
                   "--target", "a+b", "--model", "ridge", "--out", str(out)).exit_code == 0
        result = nas("predictor", "eval", str(out), "--data", str(parts_csv),
                     "--target", "a+latency_typo")
    else:
        result = nas("predictor", "fit", "--space", "table", "--data", str(parts_csv),
                     "--target", "a+latency_typo", "--model", "ridge", "--out", str(out))
    assert result.exit_code != 0
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "'latency_typo'" in lines[0] and "x1, a, x2, b" in lines[0].replace("\n", "")


# -- the benchmark's helpers ----------------------------------------------------------------


def test_noise_floor_is_the_median_relative_std_of_the_total() -> None:
    # Row by row: sqrt(3^2 + 4^2) / (60 + 40) = 0.05, sqrt(0 + 1) / (4 + 6) = 0.1,
    # sqrt(6^2 + 8^2) / (30 + 20) = 0.2; the median is 0.1.
    floor = bench.noise_floor(np.array([60.0, 4.0, 30.0]), np.array([40.0, 6.0, 20.0]),
                              np.array([3.0, 0.0, 6.0]), np.array([4.0, 1.0, 8.0]))
    assert floor == pytest.approx(0.1)


def test_verdict_beats_the_best_baseline_and_the_200_row_ratio() -> None:
    full = {"structured": [0.03, 0.05, 0.04], "linear": [0.06, 0.06, 0.06],
            "quadratic-ridge": [0.05, 0.04, 0.045], "xgboost": [0.07, 0.07, 0.07]}
    small = {"structured": [0.045, 0.05, 0.044]}
    v = bench.verdict(full, small, cleaned={}, model="structured")
    assert v["best_baseline"] == "quadratic-ridge" and v["best_baseline_mape"] == 0.045
    assert v["default_mape"] == 0.04 and v["default_beats_best_baseline"]
    assert v["default_beats_best_baseline_seeds"] == "2 of 3"  # 0.03<0.05, 0.04<0.045
    assert v["default_at_most_4pct"]
    assert v["default_200_over_full"] == pytest.approx(0.045 / 0.04)  # 1.125
    assert v["default_200_within_1.2x"]
    worse = bench.verdict({**full, "structured": [0.05, 0.05, 0.05]},
                          {"structured": [0.07, 0.07, 0.07]},
                          cleaned={"linear": [0.02], "quadratic-ridge": [0.06],
                                   "xgboost": [0.06]}, model="structured")
    assert not worse["default_beats_best_baseline"] and not worse["default_at_most_4pct"]
    assert worse["default_200_over_full"] == pytest.approx(1.4)
    assert not worse["default_200_within_1.2x"]
    assert v["baselines_on_cleaned_training_rows"] is None  # nothing was cleaned
    check = worse["baselines_on_cleaned_training_rows"]
    assert check["best"] == "linear" and not check["default_beats_best"]  # 0.05 > 0.02


def test_split_draws_200_rows_from_the_training_part_and_keeps_the_test_rows() -> None:
    train, test = bench.split(2000, 3, "full")
    small, small_test = bench.split(2000, 3, 200)
    assert len(test) == 400 and len(train) == 1600 and not set(train) & set(test)
    np.testing.assert_array_equal(test, small_test)
    assert len(small) == 200 and set(small) <= set(train)


def test_clean_rows_drops_slow_encoders_on_noisy_devices_only() -> None:
    encoder = np.array([1.0, 1.1, 0.9, 5.0, 1.0])
    data = bench.HATFile(X=np.zeros((5, 10)), shapes=[], encoder_ms=encoder,
                         decoder_ms=np.ones(5), encoder_std=np.zeros(5),
                         decoder_std=np.zeros(5), noisy=True)
    train = np.array([0, 1, 2, 3])  # median 1.05: row 3 (5.0 > 2.1) goes, row 4 is not training
    np.testing.assert_array_equal(bench.clean_rows(data, train), [0, 1, 2])
    quiet = bench.HATFile(**{**data.__dict__, "noisy": False})
    np.testing.assert_array_equal(bench.clean_rows(quiet, train), train)


def test_quick_comparison_on_one_file() -> None:
    document = bench.run(["rpi4"], seeds=range(2))
    json.dumps(document)  # serialisable as written
    assert {"target", "split", "models", "noise_floor", "structured_training_rows",
            "files"} <= set(document)
    (f,) = document["files"]
    assert f["rows"] == 2000 and f["heldout_rows"] == 400
    assert set(f["results"]) == {"full", "200"}
    for by_model in f["results"].values():
        assert set(by_model) == set(bench.MODELS)
        for scores in by_model.values():
            assert math.isfinite(scores["median_mape"]) and 0 < scores["median_mape"] < 0.5
            assert len(scores["mape_per_seed"]) == 2
            assert -1 <= scores["median_kendall_tau"] <= 1
            assert -1 <= scores["median_spearman"] <= 1
    for key in ("default_beats_best_baseline", "default_200_over_full", "best_baseline",
                "default_at_most_4pct", "default_200_within_1.2x"):
        assert key in f
    assert 0 < f["noise_floor"] < 0.05
    assert f["structured_training_rows_dropped"] > 0  # the Raspberry Pi's noisy rows
    assert set(f["baselines_on_cleaned_training_rows"]["median_mape"]) == set(bench.BASELINES)
    assert set(f["also_reported"]) == set(bench.ALSO_REPORTED)
