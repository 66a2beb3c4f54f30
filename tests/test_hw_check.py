"""`nas hw check`: predicted versus measured latency of a real study's Pareto subnets."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import optuna
import pytest
from typer.testing import CliRunner

from nas._hw_check import rank_agreement
from nas.cli import app
from nas.hardware._agent import AgentServer
from nas.studies import describe_study

STUDY = "tiny"
BUDGET_MS = 100.0
# 10 random subnets scored on 20 words: a real study in seconds, with 3 on its front.
SEARCH = ["search", "--supernet", "hat", "--hw", "rpi4", "--budget", f"{BUDGET_MS:g}ms",
          "--evals", "10", "--eval-limit", "20", "--algorithm", "random", "--seed", "0",
          "--study", STUDY, "--json"]
FEW_RUNS = ["--warmup", "1", "--min-repeats", "6", "--max-repeats", "6"]
TOKEN = "check-token"


def nas(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env)


def assert_one_line_error(result: Any, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def snapshot(storage: str) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    """The study's own attributes and every trial, as stored."""
    study = optuna.load_study(study_name=STUDY, storage=storage)
    trials = [(t.number, t.state, t.values, t.params, t.user_attrs) for t in study.trials]
    return dict(study.user_attrs), trials


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('check') / 'studies.db'}"
    result = nas(*SEARCH, "--storage", url)
    assert result.exit_code == 0, result.stderr
    return url


@pytest.fixture(scope="module")
def checked(storage: str) -> tuple[dict[str, Any], tuple[Any, ...], tuple[Any, ...]]:
    """The --json document of one check, with the study before and after it."""
    before = snapshot(storage)
    result = nas("hw", "check", "--study", STUDY, "--storage", storage, "--on", "local-cpu",
                 *FEW_RUNS, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), before, snapshot(storage)


def test_one_measured_row_per_pareto_trial_with_its_stored_prediction(storage, checked):
    document, _, _ = checked
    front = describe_study(STUDY, storage)["pareto"]
    assert len(front) >= 2  # a ranking to compare
    rows = document["subnets"]
    assert [r["trial"] for r in rows] == [p["trial"] for p in front]
    for row, point in zip(rows, front, strict=True):
        assert row["predicted_ms"] == point["latency_ms"]
        assert row["config"] == point["config"]
        assert 0 < row["ci_low_ms"] <= row["measured_ms"] <= row["ci_high_ms"]
        assert row["n_runs"] == 6
        assert row["ratio"] == pytest.approx(row["measured_ms"] / row["predicted_ms"])
        assert row["within_budget_predicted"] is True
        assert row["within_budget_measured"] == (row["measured_ms"] <= BUDGET_MS)
    agreement = document["agreement"]
    assert agreement["n"] == len(rows)
    assert -1 <= agreement["spearman"] <= 1 and -1 <= agreement["kendall_tau"] <= 1
    assert agreement["scale"] > 0 and 0 <= agreement["median_ape"] <= agreement["max_ape"]
    assert (document["predicted_on"], document["measured_on"]) == ("rpi4", "local-cpu")
    assert document["budget_ms"] == BUDGET_MS
    assert "ranking" in document["note"]


def test_the_check_is_stored_in_the_study_and_nothing_else_changes(checked):
    document, (attrs_before, trials_before), (attrs_after, trials_after) = checked
    key = document["attribute"]
    assert key == f"hw_check/{document['measured_fingerprint']}"
    assert key.startswith("hw_check/local-cpu:") and key not in attrs_before
    assert attrs_after == {**attrs_before, key: document}
    assert trials_after == trials_before


def test_a_missing_study_or_database_is_a_one_line_error(storage, tmp_path):
    assert_one_line_error(nas("hw", "check", "--study", "nope", "--storage", storage),
                          "no study 'nope'", f"studies there: {STUDY}")
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    assert_one_line_error(nas("hw", "check", "--study", STUDY, "--storage", missing),
                          "does not exist")
    assert not (tmp_path / "none.db").exists()


def test_a_predicting_target_is_refused_naming_the_measurable_ones(storage):
    result = nas("hw", "check", "--study", STUDY, "--storage", storage, "--on", "rpi4")
    assert_one_line_error(result, "'rpi4' does not measure", "local-cpu", "remote:HOST:PORT")
    assert_one_line_error(nas("hw", "check", "--study", STUDY, "--storage", storage,
                              "--on", "pi5"),
                          "unknown hardware target", "local-cpu")


@pytest.fixture
def agent_port() -> Iterator[int]:
    server = AgentServer("127.0.0.1", 0, token=TOKEN)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_remote_device_is_checked_and_reported_as_a_table(storage, agent_port):
    on = f"remote:127.0.0.1:{agent_port}"
    result = nas("hw", "check", "--study", STUDY, "--storage", storage, "--on", on,
                 *FEW_RUNS, env={"NAS_AGENT_TOKEN": TOKEN, "COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    assert f"measured on {on}" in result.stdout and "Spearman" in result.stdout
    stored = optuna.load_study(study_name=STUDY, storage=storage).user_attrs
    remote = [v for k, v in stored.items() if k.startswith("hw_check/remote:")]
    assert len(remote) == 1 and remote[0]["measured_on"] == on
    assert all(row["n_runs"] == 6 and row["measured_ms"] > 0 for row in remote[0]["subnets"])


def test_agreement_matches_hand_computed_values():
    # Predicted ranks 1 2 3 4, measured ranks 1 2 4 3: one discordant pair of six.
    a = rank_agreement([10.0, 20.0, 30.0, 40.0], [12.0, 22.0, 40.0, 36.0])
    assert a.n == 4
    assert a.spearman == pytest.approx(1 - 6 * 2 / (4 * (4**2 - 1)))  # 0.8
    assert a.kendall_tau == pytest.approx((5 - 1) / 6)
    # |p - m| / m = 2/12, 2/22, 10/40, 4/36; measured / predicted = 1.2, 1.1, 4/3, 0.9
    assert a.median_ape == pytest.approx((2 / 12 + 4 / 36) / 2)
    assert a.max_ape == pytest.approx(0.25)
    assert a.scale == pytest.approx(1.15)


def test_agreement_of_one_subnet_has_no_ranking_and_bad_input_is_refused():
    one = rank_agreement([10.0], [5.0])
    assert (one.spearman, one.kendall_tau, one.scale, one.max_ape) == (None, None, 0.5, 1.0)
    with pytest.raises(ValueError, match="as many"):
        rank_agreement([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        rank_agreement([1.0, 0.0], [1.0, 2.0])


def test_help_names_the_options():
    result = nas("hw", "check", "--help")
    assert result.exit_code == 0
    for option in ("--study", "--storage", "--on", "--rel-ci", "--max-repeats", "--json"):
        assert option in result.stdout
