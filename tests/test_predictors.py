"""Predictors: metrics against hand values, fits, save/load, uncertainty, auto, features."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nas._registry import UnknownNameError
from nas.predictors import (
    PREDICTORS,
    NB201Features,
    NoUncertaintyError,
    Predictor,
    SpaceFeatures,
    TableFeatures,
    create_predictor,
    kendall_tau,
    list_predictors,
    mape,
    read_csv,
    rmse,
    score_all,
    spearman,
)

# Small, fast settings so every model fits in well under a second.
FAST = {
    "ridge": {}, "quadratic": {}, "svr": {}, "gp": {"n_restarts": 0}, "xgb": {"n_estimators": 60},
    "mlp": {"epochs": 60, "hidden": (16,), "lr": 0.03},
    "ensemble": {"base": "ridge", "n_members": 5},
    "auto": {"candidates": ("ridge", "svr", "xgb"), "folds": 3},
}


def linear_data(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return X, 3 * X[:, 0] - 2 * X[:, 1] + 0.1 * rng.normal(size=n)


# -- metrics ---------------------------------------------------------------------------


def test_metrics_by_hand():
    y, p = [1, 2, 3, 4], [1, 3, 2, 4]
    # 6 pairs, one discordant (2,3): tau = (5 - 1) / 6.
    assert kendall_tau(y, p) == pytest.approx(4 / 6)
    # rank differences 0, -1, 1, 0: rho = 1 - 6 * 2 / (4 * 15).
    assert spearman(y, p) == pytest.approx(1 - 12 / 60)
    assert rmse(y, p) == pytest.approx(np.sqrt(2 / 4))
    assert mape(y, p) == pytest.approx((0 + 1 / 2 + 1 / 3 + 0) / 4)
    assert score_all(y, p) == pytest.approx(
        {"rmse": np.sqrt(0.5), "mape": 5 / 24, "kendall_tau": 2 / 3, "spearman": 0.8, "n": 4})


def test_metrics_with_ties():
    y, p = [1, 2, 3, 4], [1, 1, 2, 3]
    # tau-b: concordant 5, discordant 0, one tie in p: 5 / sqrt(6 * 5).
    assert kendall_tau(y, p) == pytest.approx(5 / np.sqrt(30))
    # average ranks of p: 1.5, 1.5, 3, 4 -> Pearson of ranks.
    assert spearman(y, p) == pytest.approx(np.corrcoef([1, 2, 3, 4], [1.5, 1.5, 3, 4])[0, 1])


def test_metric_edge_cases():
    assert spearman([1, 2, 3], [5, 5, 5]) == 0.0
    with pytest.raises(ValueError, match="same length"):
        rmse([1, 2], [1])
    with pytest.raises(ValueError, match="finite"):
        rmse([1, np.nan], [1, 2])
    with pytest.raises(ValueError, match="undefined"):
        mape([0, 1], [1, 1])
    assert np.isnan(score_all([0, 1], [1, 1])["mape"])


# -- every model -----------------------------------------------------------------------


def test_registry_names():
    assert list_predictors() == ["auto", "ensemble", "gp", "mlp", "quadratic", "ridge",
                                 "svr", "xgb"]
    with pytest.raises(UnknownNameError, match="ridge"):
        create_predictor("lasso")


@pytest.mark.parametrize("name", list(FAST))
def test_fits_a_linear_function_better_than_a_constant(name):
    X, y = linear_data()
    Xt, yt = linear_data(200, seed=1)
    model = create_predictor(name, **FAST[name])
    assert model.fit(X, y) is model
    pred = model.predict(Xt)
    assert pred.shape == (200,)
    assert rmse(yt, pred) < 0.5 * rmse(yt, np.full_like(yt, y.mean()))
    assert spearman(yt, pred) > 0.8


@pytest.mark.parametrize("name", list(FAST))
def test_fits_a_categorical_function(name):
    from nas._space import Gene, SearchSpace

    space = SearchSpace("toy", [Gene("op", ("a", "b", "c")), Gene("w", (1, 2, 4))])
    rng = np.random.default_rng(0)
    configs = [space.sample(rng) for _ in range(80)]
    cost = {"a": 0.0, "b": 1.0, "c": 3.0}
    y = np.array([cost[c["op"]] + c["w"] for c in configs]) + 0.05 * rng.normal(size=80)
    X = SpaceFeatures(space).transform_configs(configs)
    assert X.shape == (80, 4)
    model = create_predictor(name, **FAST[name]).fit(X[:60], y[:60])
    assert rmse(y[60:], model.predict(X[60:])) < 0.5 * rmse(y[60:], np.full(20, y[:60].mean()))


@pytest.mark.parametrize("name", list(FAST))
def test_save_load_round_trip_is_exact(name, tmp_path):
    X, y = linear_data()
    y = np.exp(y / 4)  # positive, to exercise log_target too
    model = create_predictor(name, log_target=True, seed=3, **FAST[name]).fit(X, y)
    model.save(tmp_path / "p")
    loaded = Predictor.load(tmp_path / "p")
    assert type(loaded) is type(model)
    assert loaded.get_params() == model.get_params()
    Xt, _ = linear_data(50, seed=2)
    np.testing.assert_array_equal(loaded.predict(Xt), model.predict(Xt))
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.pickle"))


@pytest.mark.parametrize("name", ["ridge", "mlp", "xgb", "gp"])
def test_same_seed_same_predictions(name):
    X, y = linear_data()
    a = create_predictor(name, seed=5, **FAST[name]).fit(X, y).predict(X)
    b = create_predictor(name, seed=5, **FAST[name]).fit(X, y).predict(X)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["gp", "ensemble"])
def test_uncertainty_grows_away_from_the_data(name):
    X, y = linear_data()
    model = create_predictor(name, **FAST[name]).fit(X, y)
    near, far = X[:5], X[:5] + 20.0
    mean, std_near = model.predict(near, return_std=True)
    _, std_far = model.predict(far, return_std=True)
    assert mean.shape == std_near.shape == (5,)
    assert (std_near > 0).all()
    assert std_far.mean() > 2 * std_near.mean()


def test_log_target_std_is_positive():
    X, y = linear_data()
    model = create_predictor("gp", log_target=True, n_restarts=0).fit(X, np.exp(y / 4))
    mean, std = model.predict(X[:3], return_std=True)
    assert (mean > 0).all() and (std > 0).all()


@pytest.mark.parametrize("name", ["ridge", "svr", "xgb", "mlp"])
def test_no_uncertainty_is_a_clear_error(name):
    X, y = linear_data(20)
    model = create_predictor(name, **FAST[name]).fit(X, y)
    with pytest.raises(NoUncertaintyError, match="no uncertainty"):
        model.predict(X, return_std=True)


def test_input_validation():
    X, y = linear_data(20)
    model = create_predictor("ridge")
    with pytest.raises(ValueError, match="not fitted"):
        model.predict(X)
    with pytest.raises(ValueError, match="20 rows but y has 19"):
        model.fit(X, y[:-1])
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(bad, y)
    with pytest.raises(ValueError, match="NaN"):
        model.fit(X, np.where(np.arange(20) == 0, np.nan, y))
    with pytest.raises(ValueError, match="2-D"):
        model.fit(np.zeros((2, 2, 2)), [1, 2])
    with pytest.raises(ValueError, match="at least 2 rows"):
        model.fit(X[:1], y[:1])
    with pytest.raises(ValueError, match="y > 0"):
        create_predictor("ridge", log_target=True).fit(X, y)
    model.fit(X, y)
    with pytest.raises(ValueError, match="has 2 features, the predictor was fitted on 3"):
        model.predict(X[:, :2])


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no predictor"):
        Predictor.load(tmp_path)
    (tmp_path / "predictor.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a predictor"):
        Predictor.load(tmp_path)
    (tmp_path / "predictor.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a predictor"):
        Predictor.load(tmp_path)


def test_auto_picks_by_cv_deterministically():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(60, 2))
    y = np.where(X[:, 0] > 0, 5.0, 0.0) + 0.5 * X[:, 1]  # a step: trees beat ridge
    kw = {"candidates": ("ridge", "xgb"), "folds": 4, "metric": "rmse"}
    a = create_predictor("auto", seed=1, **kw).fit(X, y)
    b = create_predictor("auto", seed=1, **kw).fit(X, y)
    assert a.chosen_ == b.chosen_ == "xgb"
    assert a.cv_scores_ == b.cv_scores_
    assert a.cv_scores_["xgb"] < a.cv_scores_["ridge"]
    assert not a.has_std
    with pytest.raises(ValueError, match="metric"):
        create_predictor("auto", metric="r2").fit(X, y)
    with pytest.raises(ValueError, match="candidates"):
        create_predictor("auto", candidates=("nope",)).fit(X, y)


def test_auto_with_an_uncertain_winner_gives_std():
    X, y = linear_data(30)
    model = create_predictor("auto", candidates=("gp",), folds=3).fit(X, y)
    assert model.has_std
    assert model.predict(X[:2], return_std=True)[1].shape == (2,)


def test_registered_classes_have_matching_names():
    for name in list_predictors():
        assert PREDICTORS.entry(name).factory.name == name


# -- features --------------------------------------------------------------------------

ARCH = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
        "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
DEAD = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|nor_conv_1x1~2|"


def test_nb201_features():
    plain = NB201Features(proxies=False).encode([ARCH])
    assert plain.shape == (1, 30) and plain.sum() == 6
    enc = NB201Features(proxies=True)
    full = enc.encode([ARCH, DEAD])
    assert full.shape == (2, 36) == (2, len(enc.feature_names))
    live = dict(zip(enc.feature_names[30:], full[0, 30:]))
    assert live == {"live.none": 0, "live.skip_connect": 2, "live.nor_conv_1x1": 0,
                    "live.nor_conv_3x3": 3, "live.avg_pool_3x3": 1, "degenerate": 0}
    assert full[1, -1] == 1 and full[1, 30:35].sum() == 0
    with pytest.raises(ValueError, match="arch string"):
        enc.encode(["|bogus~0|"])


def test_table_features(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("name,a,b,y\nx,1,2,3\nz,4,5,6\n")
    table = read_csv(path)
    enc = TableFeatures(target="y").fit(table)
    assert enc.feature_names == ("a", "b")
    np.testing.assert_array_equal(enc.transform(table), [[1, 2], [4, 5]])
    assert TableFeatures(target="y", drop=("a",)).fit(table).feature_names == ("b",)
    with pytest.raises(ValueError, match="columns are: name, a, b, y"):
        TableFeatures(target="missing").fit(table)
    with pytest.raises(ValueError, match="lacks: q"):
        TableFeatures(target="y", drop=("q",)).fit(table)
