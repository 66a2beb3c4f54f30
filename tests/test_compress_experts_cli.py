"""``nas compress merge-experts`` end to end on a tiny random MoE LM exported like
``nas export``: the export reloads in a fresh process, its ONNX graph runs in ONNX
Runtime (or the summary says plainly why there is none), and bad input is one line with
nothing written."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nas
from nas.compress._experts_job import _every_expert_reached
from nas.supernets._export import save_subnet
from nas.supernets.mamba import MambaLM
from nas.supernets.moe import MoELM
from tests.cli_helpers import nas as run_nas
from tests.cli_helpers import one_line_error

TINY = dict(d_model=32, n_heads=2, context=32, n_layers=2, ffn_dim=32, n_experts=4, top_k=2)
LENGTH = 32
"""The tiny model's context: windows, timing and the ONNX graph's input length."""

RELOAD = """
import sys, torch, nas
model = nas.load_subnet(sys.argv[1])
tokens = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save(model(tokens), sys.argv[3])
print(type(model).__name__)
"""


def reload_logits(folder: Path, tokens: torch.Tensor, scratch: Path) -> tuple[str, torch.Tensor]:
    """The class name and logits of ``tokens`` from the export in ``folder``, loaded by a
    new Python process."""
    torch.save(tokens, scratch / "tokens.pt")
    run = subprocess.run([sys.executable, "-c", RELOAD, str(folder), str(scratch / "tokens.pt"),
                          str(scratch / "logits.pt")], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    return run.stdout.strip(), torch.load(scratch / "logits.pt")


def check_onnx(folder: Path, summary: dict) -> None:
    """model.onnx runs in ONNX Runtime on byte windows of the recorded shape and matches
    the torch export's logits."""
    import onnxruntime as ort

    record = summary["onnx"]
    shape = record["input"]["shape"]
    session = ort.InferenceSession(str(folder / record["file"]),
                                   providers=["CPUExecutionProvider"])
    model = nas.load_subnet(folder)
    for seed in range(2):
        tokens = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed))
        (logits,) = session.run(None, {"input0": tokens.numpy()})
        with torch.no_grad():
            expected = model(tokens).numpy()
        assert logits.shape == (*shape, 256)
        np.testing.assert_allclose(logits, expected, atol=1e-4)


def summary_of(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{"):])


def export_tiny(folder: Path, model: torch.nn.Module, family: str) -> Path:
    return save_subnet(model.eval(), folder, family=family, metadata={"task": "pydoc-lm"})


@pytest.fixture(scope="module")
def moe_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return export_tiny(tmp_path_factory.mktemp("moe") / "export", MoELM(**TINY), "moe-lm")


def unreachable_expert_model() -> MoELM:
    """Top-1 routing where layer 0's router row 0 is zero and rows 1 and 2 are v and -v:
    one of them is positive for any input, so expert 0 of layer 0 is never chosen."""
    torch.manual_seed(1)
    model = MoELM(**{**TINY, "n_experts": 3, "top_k": 1}).eval()
    router = model.moe_layers[0].router.weight
    with torch.no_grad():
        v = torch.randn(router.shape[1])
        router[0].zero_()
        router[1].copy_(v)
        router[2].copy_(-v)
    return model


def test_merge_writes_an_export_that_reloads_and_runs_in_onnx_runtime(
        moe_export: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged"
    summary = summary_of(run_nas("compress", "merge-experts", "--model", str(moe_export),
                                 "--experts", "3", "--calibration-windows", "8", "--out",
                                 str(out), "--json"))
    assert (summary["method"], summary["task"], summary["source"]) == (
        "sub-moe", "pydoc-lm", str(moe_export))
    assert (summary["experts_before"], summary["experts_after"]) == (8, 6)  # 3 a layer
    assert summary["params_after"] < summary["params_before"]
    for key in ("loss_before", "loss_after"):  # random weights: near ln 256 = 5.55
        assert 4 < summary[key] < 7 and math.isfinite(summary[key])
    assert summary["eval"] == {"split": "validation", "windows": 64, "length": LENGTH,
                               "unit": "nats per byte"}
    assert summary["ms_before"] > 0 and summary["ms_after"] > 0
    assert isinstance(summary["onnx"], dict), summary["onnx"]  # every expert reached
    assert summary["onnx"]["input"]["shape"] == [1, LENGTH]
    check_onnx(out, summary)

    config = json.loads((out / "config.json").read_text())
    assert config["family"] == "moe-lm" and config["metadata"]["params_after"] == summary[
        "params_after"]
    assert sum(config["subnet_config"]["experts_per_layer"]) == 6
    tokens = torch.randint(0, 256, (2, LENGTH), generator=torch.Generator().manual_seed(0))
    name, logits = reload_logits(out, tokens, tmp_path)
    assert name == "MoELM" and logits.shape == (2, LENGTH, 256)
    with torch.no_grad():
        torch.testing.assert_close(logits, nas.load_subnet(out)(tokens))

    # An unreachable expert: no graph, said plainly, and --force drops the stale one.
    unreachable = export_tiny(tmp_path / "unreachable", unreachable_expert_model(), "moe-lm")
    result = run_nas("compress", "merge-experts", "--model", str(unreachable), "--experts",
                     "3", "--method", "prune", "--rank", "8", "--calibration-windows", "4",
                     "--out", str(out), "--force")
    assert result.exit_code == 0, result.output
    assert "6 -> 6 experts (prune)" in result.output and "held-out loss" in result.output
    assert "ONNX: not exported: the MoE routing is data-dependent" in result.output
    assert not (out / "model.onnx").exists()
    metadata = json.loads((out / "config.json").read_text())["metadata"]
    assert metadata["onnx"].startswith("not exported: ") and "expert 0 of layer 0" in metadata[
        "onnx"]
    assert metadata["options"]["rank"] == 8
    name, logits = reload_logits(out, tokens, tmp_path)
    assert name == "MoELM" and logits.shape == (2, LENGTH, 256)


def test_the_trace_check_names_the_expert_a_window_misses() -> None:
    tokens = torch.randint(0, 256, (1, LENGTH), generator=torch.Generator().manual_seed(0))
    assert _every_expert_reached(unreachable_expert_model(), tokens).endswith(
        "routes no token to expert 0 of layer 0, so the graph would silently drop it")
    torch.manual_seed(0)
    assert _every_expert_reached(MoELM(**TINY).eval(), tokens) is None


@pytest.fixture(scope="module")
def mamba_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = MambaLM(blocks=["full", "full"], d_model=16, d_state=8, headdim=8, chunk_size=16)
    return export_tiny(tmp_path_factory.mktemp("mamba") / "export", model, "mamba-lm")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--experts", "5"], ["--experts 5 is more than the 4 experts per layer"]),
        (["--experts", "0"], ["--experts must be a positive integer"]),
        (["--experts", "2", "--rank", "33"], ["rank=33 is above the rank", "at most 32"]),
        (["--experts", "2", "--rank", "0"], ["--rank must be a positive integer"]),
        (["--experts", "2", "--method", "kmeans"], ["--method", "sub-moe", "'kmeans'"]),
        (["--experts", "2", "--calibration-windows", "0"], ["--calibration-windows"]),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(moe_export: Path, tmp_path: Path, args,
                                                  fragments) -> None:
    one_line_error(run_nas("compress", "merge-experts", "--model", str(moe_export), *args,
                           "--out", str(tmp_path / "out")), *fragments)
    assert not (tmp_path / "out").exists()


def test_a_model_without_experts_a_missing_model_and_an_existing_out_are_refused(
        mamba_export: Path, moe_export: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    one_line_error(run_nas("compress", "merge-experts", "--model", str(mamba_export),
                           "--experts", "2", "--out", str(out)),
                   "compresses a MoELM (family moe-lm)", "is a MambaLM")
    one_line_error(run_nas("compress", "merge-experts", "--model", str(tmp_path / "nowhere"),
                           "--experts", "2", "--out", str(out)),
                   "neither a folder nor a zoo model", "moe-pydoc")
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("a user's file")
    one_line_error(run_nas("compress", "merge-experts", "--model", str(moe_export),
                           "--experts", "4", "--out", str(out)), "already holds", "--force")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
