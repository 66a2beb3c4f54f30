"""``nas compress shed`` end to end on a tiny random Mamba-2 LM exported like ``nas
export``: counts with recovery, a parameter fraction and a latency budget derived from
what this machine measures; exports reload in a fresh process and their ONNX graphs run
in ONNX Runtime; bad input is one line with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nas.compress._lm_jobs import forward_ms
from nas.compress._mamba_latency import calibrate_mamba, reachable_counts
from nas.supernets.mamba import MambaLM
from nas.supernets.moe import MoELM
from tests.cli_helpers import nas as run_nas
from tests.cli_helpers import one_line_error
from tests.test_compress_experts_cli import (
    TINY,
    check_onnx,
    export_tiny,
    reload_logits,
    summary_of,
)

SIZES = dict(d_model=16, d_state=8, headdim=8, chunk_size=16)
LENGTH = 64


def tiny_mamba(blocks: list[str]) -> MambaLM:
    torch.manual_seed(0)
    return MambaLM(blocks=blocks, **SIZES).eval()


@pytest.fixture(scope="module")
def mamba_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("mamba") / "export", tiny_mamba(["full"] * 4),
                       "mamba-lm")


def test_counts_with_recovery_write_an_export_that_reloads_and_runs_in_onnx_runtime(
        mamba_export: Path, tmp_path: Path) -> None:
    out = tmp_path / "shed"
    summary = summary_of(run_nas("compress", "shed", "--model", str(mamba_export), "--remove",
                                 "blocks:1,ssm:2", "--recover-steps", "2",
                                 "--calibration-windows", "4", "--out", str(out), "--json"))
    assert (summary["method"], summary["task"]) == ("mamba-shedder", "pydoc-lm")
    removed = summary["removed"]
    assert [r.split(".")[0] for r in removed] == ["block", "ssm", "ssm"]
    kinds = summary["blocks_after"]
    assert (kinds.count("absent"), kinds.count("no_ssm"), kinds.count("full")) == (1, 2, 1)
    assert summary["params_after"] < summary["params_before"]
    for key in ("loss_before", "loss_before_recovery", "loss_after"):
        assert 4 < summary[key] < 7
    assert summary["recovery"]["steps"] == 2
    assert summary["ms_before"] > 0 and summary["ms_after"] > 0
    steps = summary["search"]["steps"]  # audited: every candidate's score per step
    assert [len(s["scores"]) for s in steps] == [4, 3, 2]
    assert summary["onnx"]["input"]["shape"] == [1, LENGTH]
    check_onnx(out, summary)
    tokens = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(0))
    name, logits = reload_logits(out, tokens, tmp_path)
    assert name == "MambaLM" and logits.shape == (2, 40, 256)
    config = json.loads((out / "config.json").read_text())
    assert config["family"] == "mamba-lm" and config["subnet_config"]["blocks"] == kinds
    assert config["metadata"]["removed"] == removed

    # the shed model sheds again (a folder nas compress wrote), to a parameter fraction
    again = tmp_path / "again"
    result = run_nas("compress", "shed", "--model", str(out), "--target-params", "0.8",
                     "--calibration-windows", "4", "--out", str(again))
    assert result.exit_code == 0, result.output
    assert "parameters" in result.output and "ONNX: model.onnx" in result.output
    metadata = json.loads((again / "config.json").read_text())["metadata"]
    assert metadata["params_fraction"] <= 0.8 and metadata["search"]["target_met"] is True


def test_latency_budget_stops_at_the_model_prediction_and_reports_measured(
        mamba_export: Path, tmp_path: Path) -> None:
    """The budget is halfway between the source and the smallest reachable model, as
    this machine's own latency model predicts them (never a fixed number of ms)."""
    model = tiny_mamba(["full"] * 4)
    calibration = calibrate_mamba(model, length=LENGTH, measure=lambda m: forward_ms(m, LENGTH),
                                  samples=8, progress=False)
    smallest = min(calibration.model.predict_counts(c) for c in reachable_counts(model.kinds))
    budget = (smallest + calibration.model.predict_counts((4, 0))) / 2
    summary = summary_of(run_nas("compress", "shed", "--model", str(mamba_export),
                                 "--target-latency", f"{budget:.4f}ms",
                                 "--calibration-windows", "4", "--out", str(tmp_path / "fast"),
                                 "--json"))
    latency = summary["latency"]
    assert latency["predicted_ms"] <= latency["budget_ms"] == pytest.approx(budget, abs=1e-4)
    assert latency["measured_ms"] == summary["ms_after"] > 0
    assert 0 <= latency["heldout_median_ape"] < 0.5
    samples = latency["calibration"]["samples"]
    assert len(samples) == 12 and sum(s["heldout"] for s in samples) >= 2
    assert summary["search"]["stopped"] == "target" and summary["removed"]
    assert 0 < summary["ms_after"] < summary["ms_before"]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--remove", "blocks:4"], ["cannot remove every block", "at most 3"]),
        (["--remove", "ssm:5"], ["more SSMs than the 4"]),
        (["--remove", "layers:1"], ["unknown structure kind 'layers'"]),
        ([], ["say what to remove", "--remove", "--target-latency", "--target-params"]),
        (["--target-params", "0.5", "--target-latency", "1ms"], ["not both"]),
        (["--target-params", "1.5"], ["--target-params", "(0, 1]"]),
        (["--target-params", "0.01"], ["below the smallest model"]),
        (["--target-latency", "fast"], ["latency budget", "'fast'"]),
        (["--remove", "blocks:1", "--recover-steps", "-1"], ["--recover-steps"]),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(mamba_export: Path, tmp_path: Path, args,
                                                  fragments) -> None:
    one_line_error(run_nas("compress", "shed", "--model", str(mamba_export), *args, "--out",
                           str(tmp_path / "out")), *fragments)
    assert not (tmp_path / "out").exists()


def test_models_it_cannot_shed_and_an_existing_out_are_refused(mamba_export: Path,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "out"
    torch.manual_seed(0)
    moe = export_tiny(tmp_path / "moe", MoELM(**TINY), "moe-lm")
    one_line_error(run_nas("compress", "shed", "--model", str(moe), "--remove", "blocks:1",
                           "--out", str(out)), "compresses a MambaLM", "is a MoELM")
    no_ssm = export_tiny(tmp_path / "no_ssm", tiny_mamba(["no_ssm", "full", "absent"]),
                         "mamba-lm")
    one_line_error(run_nas("compress", "shed", "--model", str(no_ssm), "--remove",
                           "blocks:1,ssm:1", "--out", str(out)), "ssm:1 after blocks:1")
    without = export_tiny(tmp_path / "without", tiny_mamba(["no_ssm", "no_ssm"]), "mamba-lm")
    one_line_error(run_nas("compress", "shed", "--model", str(without), "--remove", "ssm:1",
                           "--out", str(out)), "no SSMs to remove")
    one_line_error(run_nas("compress", "shed", "--model", str(tmp_path / "nowhere"),
                           "--remove", "blocks:1", "--out", str(out)), "mamba-pydoc")
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("a user's file")
    one_line_error(run_nas("compress", "shed", "--model", str(mamba_export), "--remove",
                           "blocks:1", "--out", str(out)), "already holds", "--force")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_the_latency_model_recovers_a_linear_cost_and_covers_each_kind_removed() -> None:
    """With a measure that is exactly linear in the kinds, the fit is exact (held-out
    error 0); the configurations timed start with the source and one of each removal."""
    model = tiny_mamba(["full", "full", "no_ssm", "absent"])
    assert reachable_counts(model.kinds)[0] == (2, 1)
    assert len(reachable_counts(model.kinds)) == 2 + 3 + 3  # f = 2, 1, 0 with f + n >= 1

    def measure(m: MambaLM) -> float:
        return 0.1 + 0.5 * m.kinds.count("full") + 0.2 * m.kinds.count("no_ssm")

    calibration = calibrate_mamba(model, length=LENGTH, measure=measure, samples=8,
                                  progress=False)
    counts = [(s["full_blocks"], s["no_ssm_blocks"]) for s in calibration.samples]
    assert counts[:4] == [(2, 1), (1, 1), (1, 2), (2, 0)] and len(set(counts)) == 8
    assert calibration.heldout["median_ape"] < 1e-9 and calibration.heldout["n"] == 2
    assert calibration.model.predict_ms(["full", "no_ssm"]) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="needs 5 configurations"):
        calibrate_mamba(tiny_mamba(["full"]), length=LENGTH, measure=measure)
