"""Quantized subnets as shipped: safetensors with integer weights and scales, an int8
QDQ ONNX graph, ``nas.load_subnet`` rebuilding the quantized model, and each file
scored again in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import nas
from nas.hardware._onnx import export_onnx
from nas.quant import QuantizedLayer, quantize_layers, size_bytes
from nas.quant._layers import pack_nibbles, unpack_nibbles
from nas.quant._quantizers import ActivationQuant
from tests.budgets import feasible_budget
from tests.cli_helpers import nas as run
from tests.cli_helpers import one_line_error

GRIDS = (ActivationQuant.from_range(-3.0, 3.0), ActivationQuant.from_range(-2.0, 2.0))


def test_nibbles_round_trip_with_an_odd_row():
    q = torch.randint(-8, 8, (3, 7), dtype=torch.int8)
    packed = pack_nibbles(q)
    assert packed.dtype == torch.uint8 and packed.shape == (3, 4)
    assert torch.equal(unpack_nibbles(packed, 3)[:, :7], q)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_layer_stores_integers_and_keeps_its_output(bits):
    torch.manual_seed(0)
    linear = nn.Linear(16, 8)
    layer = QuantizedLayer(linear, bits, GRIDS)
    state = layer.state_dict()
    stored = "weight_int8" if bits == 8 else "weight_int4"
    assert {stored, "weight_scale", "bias", "input_scale", "output_zero_point"} <= set(state)
    assert "weight" not in state
    # what ships is what the size counts: packed integers, scales, bias, two grids
    model = nn.Sequential(linear)
    assert size_bytes(model, {"0": bits}, calibrated=1) == sum(
        t.numel() * t.element_size() for t in state.values())
    rebuilt = QuantizedLayer(nn.Linear(16, 8), bits, GRIDS)
    rebuilt.load_state_dict(state)
    x = torch.randn(4, 16)
    assert torch.equal(rebuilt(x), layer(x))


def test_onnx_refuses_widths_it_cannot_hold(tmp_path):
    model = quantize_layers(nn.Sequential(nn.Linear(8, 4)), {"0": 4}, None)
    with pytest.raises(ValueError, match="4-bit layers: export it as safetensors"):
        export_onnx(model, (torch.randn(1, 8),), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


@pytest.fixture(scope="module")
def quantized_export(tmp_path_factory):
    """A mixed-policy HAT search on local-cpu and one of its front's subnets exported."""
    root = tmp_path_factory.mktemp("qexport")
    storage = f"sqlite:///{root / 's.db'}"
    budget = feasible_budget("hat", factor=6.0)[1]
    result = run("search", "--supernet", "hat", "--hw", "local-cpu", "--budget", budget,
                 "--quantize", "mixed", "--evals", "5", "--eval-limit", "200",
                 "--storage", storage, "--json")
    assert result.exit_code == 0, result.output
    point = json.loads(result.stdout)["pareto"][0]
    out = root / "export"
    exported = run("export", "--study", "hat-local-cpu", "--trial", str(point["trial"]),
                   "--storage", storage, "--out", str(out), "--format", "safetensors,onnx")
    assert exported.exit_code == 0, exported.output
    return point, out, storage


_FRESH = """
import json, sys
import nas
from nas.hardware._onnx import OnnxModule
folder = sys.argv[1]
document = json.load(open(folder + "/config.json"))
task = nas.get_task(document["metadata"]["task"])
limit = document["eval_limit"]
models = {"onnx": OnnxModule(folder + "/model.onnx"), "safetensors": nas.load_subnet(folder)}
print(json.dumps({name: task.evaluate(m, limit=limit, per=False)["accuracy"]
                  for name, m in models.items()}))
"""


@pytest.mark.slow
def test_exported_files_score_the_search_accuracy_in_a_fresh_process(quantized_export):
    point, folder, _ = quantized_export
    document = json.loads((folder / "config.json").read_text())
    layers = document["quantization"]["layers"]
    assert layers and {layer["bits"] for layer in layers.values()} == {8}
    assert sum(1 for b in point["bits"].values() if b == 8) >= 1
    # the size the search recorded is the weights file's, within 2%
    file_mb = (folder / "model.safetensors").stat().st_size / 1e6
    assert abs(point["size_mb"] - file_mb) <= 0.02 * file_mb
    done = subprocess.run([sys.executable, "-c", _FRESH, str(folder)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    scores = json.loads(done.stdout.strip().splitlines()[-1])
    for runtime, accuracy in scores.items():
        assert abs(accuracy - point["accuracy"]) <= 0.002, (runtime, accuracy, point)
    assert document["formats"]["onnx"]["cosine"] >= 0.999


@pytest.mark.slow
def test_the_onnx_graph_runs_integer_kernels(quantized_export):
    onnx = pytest.importorskip("onnx")
    _, folder, _ = quantized_export
    graph = onnx.load(str(folder / "model.onnx")).graph
    int8_weights = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert int8_weights, "the graph holds no int8 weights"
    assert any(n.op_type == "DequantizeLinear" for n in graph.node)
    assert not any(i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2
                   and i.name.startswith("onnx::QuantizeLinear") for i in graph.initializer)


def _tamper(folder: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "tampered"
    copy.mkdir()
    for name in ("config.json", "model.safetensors"):
        (copy / name).write_bytes((folder / name).read_bytes())
    document = json.loads((copy / "config.json").read_text())
    change(document["quantization"]["layers"])
    (copy / "config.json").write_text(json.dumps(document))
    return copy


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda layers: layers.update({next(iter(layers)): {"bits": 9, "static": True}}),
         "must be {\"bits\": 2 to 8"),
        (lambda layers: layers.update({"encoder.0.nope": {"bits": 8, "static": True}}),
         "is not a linear or convolution layer"),
        (lambda layers: layers.pop(next(iter(layers))), "does not match config.json"),
    ],
)
def test_a_tampered_quantization_is_refused_in_one_line(quantized_export, tmp_path, change,
                                                        message):
    _, folder, _ = quantized_export
    with pytest.raises(ValueError, match=message.replace("{", r"\{")):
        nas.load_subnet(_tamper(folder, tmp_path, change))


def test_quantize_on_a_task_without_calibration_data_is_refused(tmp_path, monkeypatch):
    from nas.supernets._g2p import G2PTask

    def no_data(self, *, batch_size, generator):
        raise NotImplementedError

    monkeypatch.setattr(G2PTask, "train_batches", no_data)
    result = run("search", "--supernet", "hat", "--hw", "local-cpu", "--budget", "500ms",
                 "--quantize", "int8", "--storage", f"sqlite:///{tmp_path / 's.db'}")
    one_line_error(result, "no training data to calibrate", "--quantize none")
    listed = run("studies", "list", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--json")
    assert json.loads(listed.stdout) == []  # refused before the study was created


@pytest.mark.slow
def test_the_report_shows_each_subnets_bits_and_size(quantized_export, tmp_path):
    point, _, storage = quantized_export
    page = tmp_path / "report.html"
    result = run("report", "--study", "hat-local-cpu", "--storage", storage, "--out", str(page))
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert "<th>size (MB)</th><th>bits</th>" in html and "<th>quantize</th><td>mixed</td>" in html
    row = html.split(f'<tr data-trial="{point["trial"]}">')[1].split("</tr>")[0]
    eights = sum(1 for b in point["bits"].values() if b == 8)
    assert f"8x{eights}" in row and f"{point['size_mb']:.3f}" in row
    assert "could not be rebuilt" not in html  # counts work on joint configs


@pytest.mark.slow
def test_the_dashboard_front_shows_bits_and_size(quantized_export):
    from nas.studies import load_study
    from nas.studies._dashboard import _pareto_table
    from nas.studies._html_report import StudyData

    point, _, storage = quantized_export
    table = _pareto_table(StudyData.of(load_study("hat-local-cpu", storage)), storage)
    assert "<th>size (MB)</th><th>bits</th><th>export</th>" in table
    row = table.split(f'<tr data-trial="{point["trial"]}">')[1].split("</tr>")[0]
    assert f"{point['size_mb']:.3f}" in row and "8x" in row
