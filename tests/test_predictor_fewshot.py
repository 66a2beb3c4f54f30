"""Few measurements, good ranking (issue 19, item 2): ``auto`` tries small feature sets
and the ridge baselines, and keeps the simplest within one standard error of the best."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nas.cli import app
from nas.predictors import (
    NB201Features,
    Predictor,
    create_encoder,
    create_predictor,
    encoder_from_spec,
    read_csv,
    spearman,
)
from nas.predictors._fitting import fit_predictor, sample_rows
from nas.predictors.auto import standard_error

NB201_CSV = Path(__file__).resolve().parents[1] / "supernets" / "data" / "nb201_cifar_latency.csv"
ARCH = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
        "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")


@pytest.fixture(scope="module")
def nb201():
    """Every 8th NAS-Bench-201 cell (1,954 rows): enough to rank, quick to encode."""
    table = read_csv(NB201_CSV)
    return table.subset(range(0, len(table), 8))


def test_nb201_operation_counts_and_feature_sets():
    enc = NB201Features(proxies=True, counts=True)
    row = enc.encode([ARCH])[0]
    names = enc.feature_names
    assert len(row) == len(names) == 41
    ops = {names[i]: row[i] for i in enc.feature_sets["op-counts"]}
    # Counted over all six edges, live or not.
    assert ops == {"ops.none": 0, "ops.skip_connect": 2, "ops.nor_conv_1x1": 0,
                   "ops.nor_conv_3x3": 3, "ops.avg_pool_3x3": 1}
    assert [names[i] for i in enc.feature_sets["op-counts+live"]][5:] == [
        "live.none", "live.skip_connect", "live.nor_conv_1x1", "live.nor_conv_3x3",
        "live.avg_pool_3x3", "degenerate"]
    assert NB201Features(proxies=True).feature_sets == {}
    # A predictor saved before the counts existed still encodes 36 features.
    assert len(encoder_from_spec({"space": "nb201", "proxies": True}).feature_names) == 36


@pytest.mark.parametrize("device", ["lat_pixel3", "lat_1080ti_32"])
def test_auto_with_20_cells_ranks_as_well_as_ridge_on_operation_counts(nb201, device):
    encoder = create_encoder("nb201", target=device)
    rows = sample_rows(len(nb201), 20, seed=1)
    rest = np.setdiff1d(np.arange(len(nb201)), rows)
    auto = fit_predictor(nb201, rows, encoder=encoder, model="auto", target=device, seed=1)
    X, y = encoder.transform(nb201), nb201.column(device)
    ops = X[:, encoder.feature_sets["op-counts"]]
    ridge = create_predictor("ridge", seed=1).fit(ops[rows], y[rows])
    assert "@op-counts" in auto.chosen_
    assert spearman(y[rest], auto.predict(X[rest])) >= spearman(y[rest], ridge.predict(ops[rest]))


def test_auto_picks_the_quadratic_ridge_when_it_wins_cv_on_a_table():
    rng = np.random.default_rng(0)
    X = rng.uniform(1, 4, size=(80, 3))
    y = X[:, 0] * X[:, 1] + X[:, 2] ** 2 + 0.01 * rng.normal(size=80)  # products of widths
    candidates = ("ridge", "quadratic", "svr", "xgb")
    auto = create_predictor("auto", candidates=candidates, metric="mape", seed=0).fit(X, y)
    assert auto.chosen_ == "quadratic"
    assert auto.cv_scores_["quadratic"] < auto.cv_scores_["ridge"]
    linear = 2 * X[:, 0] + X[:, 1] + 0.01 * rng.normal(size=80)
    # A linear latency: ridge, first in order, is within one standard error of the best.
    assert create_predictor("auto", candidates=candidates, metric="mape",
                            seed=0).fit(X, linear).chosen_ == "ridge"


@pytest.mark.parametrize("name", ["ridge", "quadratic"])
def test_ridge_family_save_load_round_trip(name, tmp_path):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 4))
    y = np.exp(X[:, 0] * X[:, 1] / 4)
    model = create_predictor(name, alpha=0.5, log_target=True).fit(X, y)
    loaded = Predictor.load(model.save(tmp_path / name))
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.predict(X[:7]), model.predict(X[:7]))


def test_auto_keeps_its_feature_set_through_save_and_load(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 6))
    y = 2 * X[:, 4] - X[:, 5] + 0.01 * rng.normal(size=30)  # only the last two matter
    auto = create_predictor("auto", candidates=("ridge",), feature_sets={"last": [4, 5]},
                            seed=0).fit(X, y)
    assert auto.chosen_ == "ridge@last" and auto.columns_ == [4, 5]
    loaded = Predictor.load(auto.save(tmp_path / "auto"))
    assert loaded.chosen_ == "ridge@last"
    np.testing.assert_array_equal(loaded.predict(X), auto.predict(X))
    with pytest.raises(ValueError, match="feature set 'bad' must list column indices in 0..5"):
        create_predictor("auto", feature_sets={"bad": [6]}).fit(X, y)


def test_cli_nb201_fit_records_the_operation_counts(tmp_path):
    out = tmp_path / "nb"
    result = CliRunner().invoke(app, [
        "predictor", "fit", "--space", "nb201", "--data", str(NB201_CSV), "--target",
        "lat_gold_6226", "--model", "ridge", "--samples", "20", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "fit.json").read_text())
    assert record["features"] == {"space": "nb201", "proxies": True, "counts": True}
    assert len(record["feature_names"]) == 41


def test_standard_errors_by_hand():
    y = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    pred = np.array([1.0, 4.0, 2.0, 8.0, 16.0])  # one swap: Spearman 0.9
    assert standard_error("spearman", y, pred) == pytest.approx((1 - 0.81) * np.sqrt(1.06 / 2))
    ape = np.array([0.0, 1.0, 0.5, 0.0, 0.0])
    assert standard_error("mape", y, pred) == pytest.approx(np.std(ape, ddof=1) / np.sqrt(5))
    # More rows, a tighter tolerance: with many rows auto takes the best score.
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    noisy = x + 0.3 * rng.normal(size=400)
    assert standard_error("spearman", x, noisy) < standard_error("spearman", x[:20],
                                                                 noisy[:20]) / 3
