"""Few-shot latency adaptation: a power law of reference devices' latencies."""

from __future__ import annotations

import numpy as np
import pytest

from nas.hardware._fewshot import FewShotLatency


def test_a_device_that_is_a_power_law_of_a_reference_is_recovered() -> None:
    rng = np.random.default_rng(0)
    reference = rng.uniform(1.0, 50.0, size=(200, 2))
    new = 0.5 * reference[:, 0] ** 1.2  # 0.5 ms x (reference 0)^1.2, reference 1 irrelevant
    model = FewShotLatency(alphas=[1e-6]).fit(reference[:8], new[:8])
    np.testing.assert_allclose(model.predict(reference), new, rtol=1e-4)
    np.testing.assert_allclose(model.weights_, [1.2, 0.0], atol=1e-4)
    assert model.intercept_ == pytest.approx(np.log(0.5), abs=1e-4)


def test_a_uniformly_faster_device_is_one_intercept_away() -> None:
    reference = np.array([[1.0], [2.0], [4.0], [8.0]])
    model = FewShotLatency(alphas=[1e-9]).fit(reference, reference[:, 0] / 3)
    np.testing.assert_allclose(model.predict(np.array([[30.0]])), [10.0], rtol=1e-6)


def test_ranking_on_nb201_from_five_cells_beats_the_published_figure() -> None:
    from scipy.stats import spearmanr

    from nas._tabular import get_table

    table = get_table("nb201")
    rows = np.arange(len(table))
    others = [d for d in table.devices if d != "raspi4"]
    reference = np.column_stack([table.latency_ms(rows, device=d) for d in others])
    target = table.latency_ms(rows, device="raspi4")
    drawn = np.random.default_rng(0).choice(len(rows), 5, replace=False)
    predicted = FewShotLatency().fit(reference[drawn], target[drawn]).predict(reference)
    assert spearmanr(predicted, target)[0] > 0.89


@pytest.mark.parametrize(("reference", "latency", "message"), [
    (np.ones((2, 1)), np.ones(2), "at least 3 measured configs, got 2"),
    (np.ones((4, 1)), np.ones(3), "reference_ms has 4 rows but latency_ms has 3"),
    (np.ones((3, 1)), np.array([1.0, -1.0, 2.0]), "latency_ms must hold positive"),
    (np.ones(3), np.ones(3), r"must be \(configs, references\), got shape \(3,\)"),
    (np.full((3, 1), np.nan), np.ones(3), "reference_ms must hold positive"),
])
def test_bad_input_is_named(reference, latency, message) -> None:
    with pytest.raises(ValueError, match=message):
        FewShotLatency().fit(reference, latency)


def test_predict_checks_the_model_and_the_references() -> None:
    with pytest.raises(RuntimeError, match="call fit"):
        FewShotLatency().predict(np.ones((1, 1)))
    model = FewShotLatency().fit(np.arange(1.0, 7.0).reshape(3, 2), np.ones(3) + [0, 1, 2])
    with pytest.raises(ValueError, match="fitted on 2 references"):
        model.predict(np.ones((1, 3)))
    with pytest.raises(ValueError, match="penalties >= 0"):
        FewShotLatency(alphas=[])
