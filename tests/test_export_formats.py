"""`nas export --format`: ONNX and TorchScript files that run without our package, a
config with figures and input spec, a model card, BatchNorm recalibration, refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from nas.cli import app
from nas.studies._export import parse_formats, recalibrate_batchnorm

pytest.importorskip("onnxruntime")

ALL = "safetensors,onnx,torchscript"

FRESH_PROCESS_CHECK = """
import json, sys
from pathlib import Path
import numpy as np, onnxruntime as ort, torch

folder = Path(sys.argv[1])
spec = json.loads((folder / "config.json").read_text())["inputs"]
saved = np.load(folder / "example_inputs.npz")
expected = list(np.load(folder / "expected_outputs.npz").values())
inputs = [saved[i["name"]] for i in spec]
for i, x in zip(spec, inputs):
    assert list(x.shape) == i["shape"] and str(x.dtype) == i["dtype"], (i, x.shape, x.dtype)
session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
onnx_out = session.run(None, {i["name"]: x for i, x in zip(spec, inputs)})
model = torch.jit.load(str(folder / "model.torchscript.pt")).eval()
with torch.no_grad():
    script_out = model(*[torch.from_numpy(x) for x in inputs])
script_out = [script_out] if isinstance(script_out, torch.Tensor) else list(script_out)
for outputs in (onnx_out, [t.numpy() for t in script_out]):
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
assert not any(name == "nas" or name.startswith("nas.") for name in sys.modules)
print("ok")
"""


def nas_cli(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 's.db'}"
    for search in (
        ["--supernet", "nb201", "--hw", "pixel3", "--budget", "5ms", "--evals", "6"],
        ["--supernet", "hat", "--hw", "rpi4", "--budget", "50ms", "--evals", "2",
         "--eval-limit", "20"],
    ):
        result = nas_cli("search", *search, "--algorithm", "random", "--storage", url)
        assert result.exit_code == 0, result.output
    return url


@pytest.mark.parametrize(("study", "batchnorm"), [("nb201-pixel3", "not recalibrated: "),
                                                  ("hat-rpi4", "none")])
def test_graph_formats_run_in_a_fresh_process_without_nas(storage, tmp_path, study, batchnorm):
    out = tmp_path / "subnet"
    result = nas_cli("export", "--study", study, "--trial", "0", "--out", str(out),
                     "--storage", storage, "--format", ALL)
    assert result.exit_code == 0, result.output
    decoding = ["decoder_step.onnx", "decoder_step.torchscript.pt", "encoder.onnx",
                "encoder.torchscript.pt", "vocab.json"] if study.startswith("hat") else []
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "MODEL_CARD.md", "config.json", "example_inputs.npz", "expected_outputs.npz",
        "model.onnx", "model.safetensors", "model.torchscript.pt", *decoding])

    config = json.loads((out / "config.json").read_text())
    assert config["metadata"]["trial"] == 0 and "accuracy" in config["metrics"]
    assert config["hardware"]["name"] == study.split("-")[1]
    assert config["hardware"]["latency_method"] in ("measured", "predicted", "calibrated")
    assert len(config["supernet_hash"]) == 64 and config["seed"] == 0
    assert config["batchnorm"].startswith(batchnorm)
    for name in ("onnx", "torchscript"):
        assert config["formats"][name]["max_abs_diff"] <= 1e-4

    card = (out / "MODEL_CARD.md").read_text()
    for needle in ("model.onnx", "model.torchscript.pt", "onnxruntime", "torch.jit.load",
                   "latency_ms", config["hardware"]["latency_method"], "BatchNorm"):
        assert needle in card
    if study.startswith("hat"):
        assert "greedy decoding deploys as the encoder and decoder-step graphs" in card

    fresh = subprocess.run([sys.executable, "-c", FRESH_PROCESS_CHECK, str(out)],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.strip() == "ok"


def test_an_existing_folder_is_refused_without_force(storage, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["export", "--study", "nb201-pixel3", "--trial", "1", "--out", str(out),
            "--storage", storage]
    refused = nas_cli(*args)
    assert refused.exit_code == 2
    assert "already holds files" in refused.output and "--force" in refused.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]

    assert nas_cli(*args, "--force", "--format", "onnx").exit_code == 0
    assert nas_cli(*args, "--overwrite").exit_code == 0  # the old name still works
    # The earlier export's ONNX files are gone; the user's own file stays.
    assert sorted(p.name for p in out.iterdir()) == [
        "MODEL_CARD.md", "config.json", "model.safetensors", "notes.txt"]


def test_an_unknown_format_is_a_one_line_error(storage, tmp_path):
    result = nas_cli("export", "--study", "nb201-pixel3", "--trial", "0", "--out",
                     str(tmp_path / "x"), "--storage", storage, "--format", "onnx,tflite")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "'tflite'" in lines[0]
    assert "safetensors, onnx, torchscript" in lines[0]
    assert not (tmp_path / "x").exists()


def test_parse_formats_keeps_the_canonical_order() -> None:
    assert parse_formats(" torchscript,ONNX ") == ("onnx", "torchscript")
    with pytest.raises(ValueError, match="no export format given"):
        parse_formats(",")


class BatchTask:
    """A stand-in task with training batches of mean 3 and variance 4."""

    name = "fake"

    def train_batches(self, *, batch_size, generator):
        return lambda: (3.0 + 2.0 * torch.randn(batch_size, 4, generator=generator),)

    def loss(self, model, batch):
        return model(batch[0]).sum()


class NoDataTask(BatchTask):
    def train_batches(self, *, batch_size, generator):
        raise ValueError("task fake ships no data\nsecond line")


def test_batchnorm_statistics_are_re_estimated_on_task_batches() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(4))
        model[0].bias.zero_()
    done = recalibrate_batchnorm(model, BatchTask(), batches=50, batch_size=64)
    assert done.startswith("recalibrated: ") and not model.training
    bn = model[1]
    assert bn.momentum == 0.1  # restored after the cumulative average
    torch.testing.assert_close(bn.running_mean, torch.full((4,), 3.0), atol=0.1, rtol=0)
    torch.testing.assert_close(bn.running_var, torch.full((4,), 4.0), atol=0.3, rtol=0)

    assert recalibrate_batchnorm(model, NoDataTask()) == (
        "not recalibrated: task fake ships no data")
    assert recalibrate_batchnorm(nn.Linear(2, 2), BatchTask()) == "none"
