"""The `nas` command line end to end: the main job, resume, export, studies, bad input."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import nas
import nas.supernets

MAIN_JOB = ["search", "--supernet", "hat", "--hw", "rpi4", "--budget", "50ms"]
FAST = ["--eval-limit", "300"]


def run_nas(
    *args: str, cwd: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nas.cli", *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def trial_count(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'"
        ).fetchone()[0]


@pytest.mark.parametrize(
    "command",
    [[], ["search"], ["train"], ["export"], ["hw"], ["hw", "show"], ["hw", "list"],
     ["hw", "check"], ["profile"], ["agent"], ["bench", "search"], ["predictor", "fit"],
     ["report"], ["dashboard"], ["studies", "export"],
     ["studies"], ["studies", "list"], ["studies", "show"], ["supernets", "list"],
     ["supernets", "show"]],
)
def test_help_everywhere(command, tmp_path):
    result = run_nas(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["search", "--supernet", "nope", "--hw", "rpi4", "--budget", "50ms"],
         ["unknown supernet 'nope'", "known: ", "hat, matformer"]),
        (["search", "--supernet", "hat", "--hw", "pi5", "--budget", "50ms"],
         ["unknown hardware target 'pi5'", "rpi4"]),
        (["search", "--supernet", "hat", "--hw", "rpi4", "--budget", "fast"],
         ["latency budget", "'fast'"]),
        (["search", "--supernet", "hat", "--hw", "rpi4", "--budget", "0.5ms"],
         ["infeasible on rpi4", "smallest subnet"]),
        (["search", "--supernet", "hat", "--hw", "rpi4", "--budget", "50ms",
          "--algorithm", "magic"], ["unknown algorithm 'magic'", "nsga2"]),
        (["hw", "show", "pi5"], ["unknown hardware target 'pi5'"]),
        (["supernets", "show", "nope"], ["unknown supernet 'nope'", "known: "]),
        (["search", "--supernet", "sortednet", "--hw", "rpi4", "--budget", "5ms"],
         ["family 'sortednet'", "--hw local-cpu"]),
        (["train", "--supernet", "nope"], ["zoo", "'nope'"]),
        (["export", "--study", "none", "--trial", "0", "--out", "x"], ["none"]),
        (["studies", "show", "none"], ["none"]),
    ],
)
def test_bad_input_gives_one_line_error(args, fragments, tmp_path):
    result = run_nas(*args, "--storage", f"sqlite:///{tmp_path / 's.db'}", cwd=tmp_path) \
        if args[0] in ("search", "export", "studies") else run_nas(*args, cwd=tmp_path)
    assert_one_line_error(result, *fragments)


def test_supernets_and_targets_are_listed(tmp_path):
    supernets = json.loads(run_nas("supernets", "list", "--json", cwd=tmp_path).stdout)
    assert {"hat", "nb201", "ofa", "sortednet", "matformer", "flexibert"} <= {
        row["name"] for row in supernets
    }
    shown = json.loads(run_nas("supernets", "show", "hat", "--json", cwd=tmp_path).stdout)
    assert shown["family"] == "hat" and shown["task"] == "g2p-cmudict"
    assert shown["subnets"] == nas.get_supernet("hat").space.cardinality() > 10**9
    assert 0 < shown["params_smallest"] < shown["params_largest"]
    assert shown["scheme"] == "sandwich" and 0.85 < shown["accuracy_smallest"] < 1
    targets = json.loads(run_nas("hw", "list", "--json", cwd=tmp_path).stdout)
    assert {"rpi4", "xeon", "titanxp", "local-cpu"} <= {row["name"] for row in targets}
    by_name = {row["name"]: row for row in targets}
    assert by_name["local-cpu"]["kind"] == "measured"
    assert by_name["local-cpu"]["heldout_mape"] is None
    assert by_name["xeon"]["kind"] == "predicted" and 0 < by_name["xeon"]["heldout_mape"] < 0.1
    shown = json.loads(run_nas("hw", "show", "rpi4", "--json", cwd=tmp_path).stdout)
    assert shown["method"] == "predicted" and 0 < shown["error"]["mape"] < 0.05
    assert any("extrapolates" in note for note in shown["notes"])


def test_missing_or_corrupt_checkpoint_gives_one_line_error(tmp_path):
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    env = {"NAS_ZOO_DIR": str(zoo)}
    missing = run_nas(*MAIN_JOB, "--storage", f"sqlite:///{tmp_path / 's.db'}", cwd=tmp_path,
                      env=env)
    assert_one_line_error(missing, "hat-g2p")
    shipped = nas.supernets.zoo_dir()
    (zoo / "hat-g2p.json").write_text((shipped / "hat-g2p.json").read_text())
    (zoo / "hat-g2p.safetensors").write_bytes(b"\x00" * 64)
    corrupt = run_nas(*MAIN_JOB, "--storage", f"sqlite:///{tmp_path / 's.db'}", cwd=tmp_path,
                      env=env)
    assert_one_line_error(corrupt, "hat-g2p.safetensors")
    assert not (tmp_path / "s.db").exists() or trial_count(tmp_path / "s.db") == 0


def test_study_of_another_target_is_refused_and_left_intact(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    first = run_nas(*MAIN_JOB, "--evals", "2", *FAST, "--study", "mine", "--storage", storage,
                    "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    other = run_nas("search", "--supernet", "hat", "--hw", "xeon", "--budget", "1s",
                    "--study", "mine", "--storage", storage, cwd=tmp_path)
    assert_one_line_error(other, "mine")
    assert trial_count(tmp_path / "s.db") == 2


@pytest.mark.slow
def test_main_job_json_front_meets_the_budget(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    result = run_nas(*MAIN_JOB, "--evals", "24", *FAST, "--storage", storage, "--json",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert {"study", "storage", "evaluations", "pareto", "hypervolume"} <= set(document)
    assert document["study"] == "hat-rpi4" and document["evaluations"] == 24
    assert document["pareto"], "the front is empty"
    supernet = nas.get_supernet("hat")
    for point in document["pareto"]:
        assert point["latency_ms"] <= 50.0
        assert 0.0 <= point["accuracy"] <= 1.0
        supernet.activate(point["config"])  # the dict that activate takes
    latencies = [p["latency_ms"] for p in document["pareto"]]
    accuracies = [p["accuracy"] for p in document["pareto"]]
    assert latencies == sorted(latencies) and accuracies == sorted(accuracies)
    assert 0.0 < document["hypervolume"] <= 1.0

    listed = json.loads(run_nas("studies", "list", "--storage", storage, "--json",
                                cwd=tmp_path).stdout)
    assert [s["name"] for s in listed] == ["hat-rpi4"]
    shown = json.loads(run_nas("studies", "show", "hat-rpi4", "--storage", storage, "--json",
                               cwd=tmp_path).stdout)
    assert shown["trials"] == 24
    assert [p["trial"] for p in shown["pareto"]] == [p["trial"] for p in document["pareto"]]

    # Rerunning the finished study evaluates nothing new.
    again = json.loads(run_nas(*MAIN_JOB, "--evals", "24", *FAST, "--storage", storage,
                               "--json", cwd=tmp_path).stdout)
    assert again["new_evaluations"] == 0 and again["pareto"] == document["pareto"]


@pytest.mark.slow
def test_export_reload_equals_the_activated_supernet(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    search = run_nas(*MAIN_JOB, "--evals", "6", *FAST, "--storage", storage, "--json",
                     cwd=tmp_path)
    assert search.returncode == 0, search.stderr
    point = json.loads(search.stdout)["pareto"][-1]
    out = tmp_path / "subnet"
    result = run_nas("export", "--study", "hat-rpi4", "--trial", str(point["trial"]),
                     "--out", str(out), "--storage", storage, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["MODEL_CARD.md", "config.json",
                                                     "model.safetensors"]

    dense = nas.load_subnet(out)
    supernet = nas.get_supernet("hat")
    supernet.activate(point["config"])
    generator = torch.Generator().manual_seed(0)
    src = torch.randint(4, 30, (3, 9), generator=generator)
    prev = torch.randint(4, 70, (3, 7), generator=generator)
    with torch.inference_mode():
        expected = supernet(src, prev)
        actual = dense(src, prev)
    assert torch.allclose(actual, expected, atol=1e-5)

    front = json.loads(search.stdout)["pareto"]
    exported = run_nas("export", "--study", "hat-rpi4", "--pareto", "--out",
                       str(tmp_path / "front"), "--storage", storage, "--json", cwd=tmp_path)
    rows = json.loads(exported.stdout)["exports"]
    assert len(rows) == len(front)
    assert all(row["params"] > 0 and row["macs"] > 0 for row in rows)
    assert rows[-1]["params"] == sum(p.numel() for p in dense.parameters())

    # A second export to the same place keeps the first one.
    again = run_nas("export", "--study", "hat-rpi4", "--trial", str(point["trial"]),
                    "--out", str(out), "--storage", storage, cwd=tmp_path)
    assert_one_line_error(again, "already holds")


@pytest.mark.slow
def test_sigkill_half_way_then_resume_loses_no_finished_trial(tmp_path):
    db = tmp_path / "s.db"
    command = [*MAIN_JOB, "--evals", "30", *FAST, "--storage", f"sqlite:///{db}", "--json"]
    process = subprocess.Popen(
        [sys.executable, "-m", "nas.cli", *command], cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if db.exists() and _safe_count(db) >= 10:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = _trials(db)
    assert 10 <= len(finished) < 30

    result = run_nas(*command, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["evaluations"] == 30
    assert document["new_evaluations"] == 30 - len(finished)
    after = _trials(db)
    assert all(after[number] == config for number, config in finished.items())


def _safe_count(db: Path) -> int:
    try:
        return trial_count(db)
    except sqlite3.Error:
        return 0


def _trials(db: Path) -> dict[int, str]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT t.number, a.value_json FROM trials t JOIN trial_user_attributes a "
            "ON a.trial_id = t.trial_id WHERE a.key = 'config' AND t.state = 'COMPLETE'"
        ).fetchall()
    return dict(rows)


@pytest.mark.parametrize(
    ("config", "summary"),
    [
        ({"encoder.embed_dim": 128, "encoder.layers": 4, "decoder.embed_dim": 96,
          "decoder.layers": 2, "decoder.0.heads": 4}, "enc 128/4, dec 96/2"),
        ({"resolution": 16, "stage0.depth": 2, "stage0.block0.kernel": 5,
          "stage0.block1.kernel": 7, "stage1.depth": 3},
         "resolution 16 · depth 2,3 · kernel 5,7"),
        ({"width": 0.5, "depth": 2}, "width 0.5 · depth 2"),
        ({"edge.1<-0": "none", "edge.2<-0": "skip_connect"}, "none, skip_connect"),
    ],
)
def test_front_table_summarises_each_family(config, summary):
    from nas.cli._search import _summary

    assert _summary(config) == summary
