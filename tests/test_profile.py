"""Latency profilers (stopping rule, CI, outliers, environment) and `nas profile`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from cli_helpers import nas, one_line_error

import nas.hardware._latency_dataset as dataset_module
import nas.hardware._profile as profile_module
from nas.hardware._latency_dataset import RESULT_COLUMNS, read_latency_csv
from nas.hardware._profile import (
    MIN_RUNS,
    environment,
    measure_latency,
    measure_latency_cuda,
    median_ci,
    tukey_outliers,
)


class FakeClock:
    """A clock whose timed runs last the given durations (ms), in order: each run reads
    the clock twice (start, end)."""

    def __init__(self, durations_ms: list[float]) -> None:
        self.durations = list(durations_ms)
        self.now = 0.0
        self.started = False

    def __call__(self) -> float:
        if self.started:
            self.now += self.durations.pop(0) / 1e3
        self.started = not self.started
        return self.now


ROUND_1 = [5, 15, 10, 10, 10, 10, 10, 10, 6, 14]
ROUND_2 = [9, 11, 10, 9, 11, 10, 9, 11, 10, 40]
# Sorted, the 20 runs read 5, 6, 9, 9, 9, 10 (x9), 11, 11, 11, 14, 15, 40.


def fake_measure(durations: list[float], **options) -> tuple[profile_module.Measurement, int]:
    calls = []
    m = measure_latency(lambda: calls.append(1), clock=FakeClock(durations), **options)
    return m, len(calls)


def test_stops_once_the_median_interval_is_tight() -> None:
    m, calls = fake_measure(ROUND_1 + ROUND_2, warmup=2, min_repeats=10, max_repeats=40,
                            rel_ci=0.12)
    # Round 1 (n = 10): CI = 2nd and 9th order statistics = [6, 14], ±40%: go on.
    # Round 2 (n = 20): CI = 6th and 15th = [10, 11] around the median 10: +10% <= 12%.
    assert (m.median_ms, m.ci_low_ms, m.ci_high_ms) == pytest.approx((10, 10, 11))
    assert m.n_runs == 20 and m.converged and calls == 22  # 2 warm-up calls
    assert m.rel_half_width == pytest.approx(0.1)
    # Quartiles 9.75 and 11, IQR 1.25: fences 7.875 and 12.875.
    assert m.outliers_ms == pytest.approx((5, 15, 6, 14, 40))
    assert m.n_outliers == 5
    assert m.durations_ms == pytest.approx(tuple(ROUND_1 + ROUND_2))


def test_stops_at_max_repeats_and_says_so() -> None:
    m, _ = fake_measure(ROUND_1 + ROUND_2, warmup=0, min_repeats=10, max_repeats=20,
                        rel_ci=0.05)
    assert m.n_runs == 20 and not m.converged
    assert (m.ci_low_ms, m.ci_high_ms) == pytest.approx((10, 11))
    # The last round is cut to what the budget leaves.
    m, _ = fake_measure(ROUND_1 + ROUND_2, warmup=0, min_repeats=10, max_repeats=15,
                        rel_ci=0.05)
    assert m.n_runs == 15 and not m.converged


def test_a_steady_function_stops_after_one_round() -> None:
    m, _ = fake_measure([2.0] * 6, warmup=0, min_repeats=6, max_repeats=60, rel_ci=0.01)
    assert m.n_runs == 6 and m.converged and m.outliers_ms == ()
    assert (m.median_ms, m.ci_low_ms, m.ci_high_ms) == pytest.approx((2, 2, 2))


def test_median_ci_ranks_by_hand() -> None:
    data = list(range(1, 21))
    assert median_ci(data[:10]) == (2, 9)  # P(B <= 1) = 11/1024 <= 0.025 < 56/1024
    assert median_ci(data) == (6, 15)  # P(B <= 5) = 0.0207, P(B <= 6) = 0.0577
    assert median_ci(data[:MIN_RUNS]) == (1, 6)  # 2/64 <= 0.05: (min, max)
    with pytest.raises(ValueError, match="needs more than 5 runs"):
        median_ci(data[:5])


def test_tukey_fences_by_hand() -> None:
    # Quartiles of 1..8 (inclusive): 2.75 and 6.25, IQR 3.5: fences -2.5 and 11.5.
    assert tukey_outliers([1, 2, 3, 4, 5, 6, 7, 8]) == ()
    assert tukey_outliers([1, 2, 3, 4, 5, 6, 7, 20]) == (20,)


@pytest.mark.parametrize("options, match", [
    ({"min_repeats": 5}, "min_repeats must be >= 6"),
    ({"max_repeats": 8}, "max_repeats must be >= min_repeats"),
    ({"rel_ci": 0.0}, "rel_ci must be in"),
    ({"warmup": -1}, "warmup must be >= 0"),
    ({"threads": 0}, "threads must be from 1 to"),
])
def test_bad_budgets_are_refused(options, match) -> None:
    with pytest.raises(ValueError, match=match):
        measure_latency(lambda: None, **options)


def test_environment_is_recorded_with_the_pinned_threads() -> None:
    keys = {"cpu", "logical_cores", "threads", "python", "torch", "numpy", "onnxruntime",
            "hostname", "cuda_device"}
    assert keys <= set(environment())
    before = torch.get_num_threads()
    x = torch.randn(64, 64)
    m = measure_latency(lambda: x @ x, threads=1, warmup=1, min_repeats=6, max_repeats=12,
                        rel_ci=0.5)
    assert keys <= set(m.environment) and m.environment["threads"] == 1
    assert m.environment["torch"] == torch.__version__
    assert 0 < m.ci_low_ms <= m.median_ms <= m.ci_high_ms
    assert torch.get_num_threads() == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_events_time_a_matmul() -> None:  # pragma: no cover - no GPU in CI
    x = torch.randn(512, 512, device="cuda")
    m = measure_latency_cuda(lambda: x @ x, warmup=2, min_repeats=10, max_repeats=50)
    assert 0 < m.ci_low_ms <= m.median_ms <= m.ci_high_ms
    assert m.environment["cuda_device"] == torch.cuda.get_device_name()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_timer_without_cuda_says_so() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        measure_latency_cuda(lambda: None)


# -- reading latency CSVs ------------------------------------------------------------------

GOOD_ROW = {
    "config_json": "{}", "latency_ms": "2.5", "ci_low_ms": "2.4", "ci_high_ms": "2.6",
    "n_runs": "10", "converged": "true", "outliers": "0", "outlier_ms": "[]",
    "macs": "100", "params": "10", "weights_bytes": "40", "peak_activation_bytes": "8",
    "kv_cache_bytes": "0", "source": "measured", "supernet": "x", "hardware": "local-cpu",
    "fingerprint": "f", "cpu": "cpu", "threads": "1", "torch": "2",
}


def write_csv(path: Path, rows: list[dict[str, str]], columns=RESULT_COLUMNS) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_reader_names_the_line_of_a_non_numeric_value(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "lat.csv", [GOOD_ROW, {**GOOD_ROW, "latency_ms": "fast"}])
    with pytest.raises(ValueError, match=r"lat.csv line 3: column 'latency_ms' is not a "
                                         r"finite number: 'fast'"):
        read_latency_csv(path)
    table = read_latency_csv(write_csv(tmp_path / "ok.csv", [GOOD_ROW] * 2))
    assert len(table) == 2 and table.column("latency_ms").tolist() == [2.5, 2.5]


def test_reader_names_missing_columns_and_short_rows(tmp_path: Path) -> None:
    columns = [c for c in RESULT_COLUMNS if c not in ("latency_ms", "macs")]
    path = write_csv(tmp_path / "lat.csv", [{c: GOOD_ROW[c] for c in columns}], columns)
    with pytest.raises(ValueError, match="lacks the column.s. latency_ms, macs"):
        read_latency_csv(path)
    path = write_csv(tmp_path / "short.csv", [GOOD_ROW])
    path.write_text(path.read_text() + "1,2,3\n")
    with pytest.raises(ValueError, match="line 3 has 3 fields, the header 20"):
        read_latency_csv(path)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty"):
        read_latency_csv(tmp_path / "empty.csv")
    with pytest.raises(FileNotFoundError):
        read_latency_csv(tmp_path / "missing.csv")


# -- nas profile ---------------------------------------------------------------------------

FAST = ["--min-repeats", "6", "--max-repeats", "12", "--warmup", "1", "--rel-ci", "0.2"]




@pytest.mark.slow
def test_profile_writes_resumes_refuses_and_feeds_the_predictor(tmp_path, monkeypatch):
    out = tmp_path / "lat.csv"
    result = nas("profile", "--supernet", "hat", "--hw", "local-cpu", "--samples", "3",
                 "--out", str(out), "--seed", "1", "--json", *FAST)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["new_rows"] == 3 and document["rows"] == 3
    first = out.read_text().splitlines()
    assert len(first) == 4

    # A rerun asking for 5 rows measures only the 2 new configs.
    measured = []
    original = dataset_module.profile_config
    monkeypatch.setattr(dataset_module, "profile_config",
                        lambda *a, **k: measured.append(a[1]) or original(*a, **k))
    result = nas("profile", "--supernet", "hat", "--hw", "local-cpu", "--samples", "5",
                 "--out", str(out), "--seed", "1", *FAST)
    assert result.exit_code == 0, result.output
    assert "5 rows (2 new, 3 already there)" in result.output
    lines = out.read_text().splitlines()
    assert len(measured) == 2 and len(lines) == 6 and lines[:4] == first

    table = read_latency_csv(out)
    from nas.supernets import G2P_SPACE

    space = G2P_SPACE.build()
    configs = [space.from_json(r["config_json"]) for r in table.rows]
    assert len({c.key for c in configs}) == 5
    assert {c.key for c in configs[3:]} == {c.key for c in measured}
    for row, config in zip(table.rows, configs):
        assert [float(row[n]) for n in space.feature_names] == \
            space.to_features(config).tolist()
        assert row["source"] == "measured" and row["hardware"] == "local-cpu"
        assert float(row["ci_low_ms"]) <= float(row["latency_ms"]) <= float(row["ci_high_ms"])
        assert 6 <= int(row["n_runs"]) <= 12 and int(row["threads"]) == 1
        assert int(row["macs"]) > 0 and int(row["params"]) > 0
        assert int(row["peak_activation_bytes"]) >= int(row["kv_cache_bytes"]) > 0
        assert len(json.loads(row["outlier_ms"])) == int(row["outliers"])

    # Nothing to do when the file already holds enough rows.
    result = nas("profile", "--supernet", "hat", "--hw", "local-cpu", "--samples", "4",
                 "--out", str(out), *FAST)
    assert result.exit_code == 0 and "(0 new, 5 already there)" in result.output

    # Another target (or thread count) is refused, the file untouched.
    before = out.read_bytes()
    one_line_error(nas("profile", "--supernet", "hat", "--hw", "rpi4", "--samples", "6",
                       "--out", str(out)), "line 2 was made with hardware 'local-cpu'",
                   "'rpi4'", "another --out")
    one_line_error(nas("profile", "--supernet", "hat", "--hw", "local-cpu", "--samples", "6",
                       "--out", str(out), "--threads", "2"), "fingerprint")
    assert out.read_bytes() == before

    # The file is a --space table feature table as it stands.
    result = nas("predictor", "fit", "--space", "table", "--data", str(out), "--target",
                 "latency_ms", "--drop", "ci_low_ms,ci_high_ms,n_runs,outliers,threads",
                 "--model", "ridge", "--out", str(tmp_path / "pred"), "--json")
    assert result.exit_code == 0, result.output
    names = json.loads((tmp_path / "pred" / "fit.json").read_text())["feature_names"]
    assert "encoder.embed_dim" in names and "macs" in names
    assert not {"latency_ms", "ci_low_ms", "config_json", "cpu", "threads"} & set(names)


def test_profile_of_a_predicted_target_says_so(tmp_path: Path) -> None:
    out = tmp_path / "rpi4.csv"
    result = nas("profile", "--supernet", "hat", "--hw", "rpi4", "--samples", "2",
                 "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = read_latency_csv(out).rows
    assert [r["source"] for r in rows] == ["predicted", "predicted"]
    for row in rows:
        assert row["n_runs"] == "0" and row["converged"] == "n/a"
        assert row["ci_low_ms"] == row["latency_ms"] == row["ci_high_ms"]
        assert float(row["latency_ms"]) > 0
    words = " ".join(result.output.split())
    assert "2 figures given by the target, not timed here" in words
    assert "runs" not in words and "CI" not in words  # no timing statistics of ours


def test_profile_bad_input_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "lat.csv"
    out.write_text("a,b\n1,2\n")
    one_line_error(nas("profile", "--supernet", "hat", "--hw", "local-cpu", "--out", str(out)),
                   "lacks the column(s) encoder.embed_dim, encoder.layers,", "and 42 more")
    assert out.read_text() == "a,b\n1,2\n"
    one_line_error(nas("profile", "--supernet", "nope", "--hw", "local-cpu", "--out",
                       str(tmp_path / "x.csv")), "unknown supernet 'nope'")
    one_line_error(nas("profile", "--supernet", "hat", "--hw", "pdp11", "--out",
                       str(tmp_path / "x.csv")), "unknown hardware target 'pdp11'")
    one_line_error(nas("profile", "--supernet", "hat", "--hw", "local-cpu", "--out",
                       str(tmp_path / "x.csv"), "--min-repeats", "3"), "min_repeats must be")
    assert not (tmp_path / "x.csv").exists()
