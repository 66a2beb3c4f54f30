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
from nas.algorithms._base import Algorithm
from nas.hardware._onnx import export_onnx
from nas.quant import QuantizedLayer, quantize_layers, size_bytes
from nas.quant._layers import pack_bits, pack_nibbles, unpack_bits, unpack_nibbles
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


@pytest.mark.parametrize("bits", [2, 3, 5, 6, 7])
@pytest.mark.parametrize("k", [1, 7, 16, 33])
def test_bitstreams_round_trip(bits, k):
    qmax = 2 ** (bits - 1) - 1
    q = torch.randint(-qmax - 1, qmax + 1, (5, k), dtype=torch.int8)
    packed = pack_bits(q, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (5, -(-k * bits // 8))
    assert torch.equal(unpack_bits(packed, bits, k), q)


@pytest.mark.parametrize("bits", [8, 6, 4, 3, 2])
def test_quantized_layer_stores_integers_and_keeps_its_output(bits):
    """Every width is stored at its width, so the size the search counts is the file's."""
    torch.manual_seed(0)
    linear = nn.Linear(15, 8)  # an odd row: padded to whole bytes
    layer = QuantizedLayer(linear, bits, GRIDS)
    state = layer.state_dict()
    stored = {8: "weight_int8", 4: "weight_int4"}.get(bits, "weight_packed")
    assert {stored, "weight_scale", "bias", "input_scale", "output_zero_point"} <= set(state)
    assert "weight" not in state
    # what ships is what the size counts: packed integers, scales, bias, two grids
    model = nn.Sequential(linear)
    assert size_bytes(model, {"0": bits}, calibrated=1) == sum(
        t.numel() * t.element_size() for t in state.values())
    rebuilt = QuantizedLayer(nn.Linear(15, 8), bits, GRIDS)
    rebuilt.load_state_dict(state)
    x = torch.randn(4, 15)
    assert torch.equal(rebuilt(x), layer(x))
    assert torch.equal(layer.integers.float() * layer.weight_scale[:, None], layer.weight)


def test_onnx_refuses_widths_it_cannot_hold(tmp_path):
    model = quantize_layers(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 4)),
                            {"0": 4, "2": 6}, None)
    with pytest.raises(ValueError, match=r"this subnet has 4-bit Conv2d, 6-bit Linear layers: "
                                         r"export it as safetensors$"):
        export_onnx(model, (torch.randn(1, 3, 4, 4),), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("static", [False, True])
def test_four_bit_linears_export_as_matmul_nbits_and_run_exactly(tmp_path, static):
    """MatMulNBits holds the packed nibbles; ONNX Runtime computes what the fake
    quantization does (weight-only: exactly; W4A8 beside an 8-bit layer: up to a grid
    step), for any batch (K = 40 is not a multiple of the block: padded)."""
    import onnx

    from nas.hardware._onnx import onnx_session, run_onnx

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 24), nn.ReLU(), nn.Linear(24, 8, bias=False))
    bits = {"0": 4, "2": 8} if static else {"0": 4, "2": 4}
    quantize_layers(model, bits, {"0": GRIDS, "2": GRIDS} if static else None)
    path = export_onnx(model, (torch.randn(1, 3, 40),), tmp_path / "m.onnx", dynamic=True)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("MatMulNBits") == (1 if static else 2)
    x = torch.randn(4, 3, 40)
    (out,) = run_onnx(onnx_session(path), (x,))
    with torch.no_grad():
        expected = model(x).numpy()
    if static:  # an integer kernel may round a value to the neighbouring grid step
        assert abs(out - expected).max() <= GRIDS[1].scale * 1.01
    else:
        assert abs(out - expected).max() < 1e-5


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
import inspect, json, sys
import nas
from nas.hardware._onnx import OnnxModule
folder = sys.argv[1]
document = json.load(open(folder + "/config.json"))
task = nas.get_task(document["metadata"]["task"])
options = {"limit": document["eval_limit"]}
if "per" in inspect.signature(task.evaluate).parameters:  # as the search scores (no PER)
    options["per"] = False
models = {"onnx": OnnxModule(folder + "/model.onnx"), "safetensors": nas.load_subnet(folder)}
print(json.dumps({name: task.evaluate(m, **options)["accuracy"] for name, m in models.items()}))
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
    from nas.supernets.tasks._g2p import G2PTask

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


class _Fixed(Algorithm):
    """Asks one given config: a study holding exactly the policy a test needs."""

    name = "fixed"

    def _ask(self):
        return [self.options["config"]]

    def _tell(self, configs, results):
        pass


def _export_one(tmp_path, supernet, hardware, quantize, policy, *, which="largest",
                eval_limit=200):
    """A study of ``supernet`` on ``hardware`` holding its ``which`` subnet under
    ``policy(units)`` (unit -> bits), exported to safetensors and ONNX; returns the
    trial's metrics and the export folder."""
    from nas._job import SearchRequest, prepare_search
    from nas._search import run_search

    storage = f"sqlite:///{tmp_path / 's.db'}"
    prepared = prepare_search(SearchRequest(
        supernet=supernet, hardware=hardware, budget_ms=10_000.0, evals=1, storage=storage,
        quantize=quantize, eval_limit=eval_limit))
    units = [u.name for u in prepared.supernet.quant_units()]
    bits = {f"bits.{u}": b for u, b in policy(units).items()} if quantize == "mixed" else {}
    arch = getattr(prepared.supernet.space, which)()
    config = prepared.evaluator.space.config({**arch, **bits})
    run_search(prepared.problem, _Fixed(prepared.problem, seed=0, config=config),
               prepared.evaluator, prepared.study, n_evals=1, progress=False)
    out = tmp_path / "export"
    exported = run("export", "--study", f"{supernet}-{hardware}", "--trial", "0",
                   "--storage", storage, "--out", str(out), "--format", "safetensors,onnx")
    assert exported.exit_code == 0, exported.output
    return prepared.study.trials()[0].metrics, out


def _fresh_scores(folder):
    done = subprocess.run([sys.executable, "-c", _FRESH, str(folder)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_four_bit_subnet_exports_as_matmul_nbits_and_scores_the_same_fresh(tmp_path):
    """HAT's largest subnet, units alternately 4- and 8-bit (W4A8 and W8A8), from a study
    on a modelled target: ONNX Runtime (MatMulNBits beside QGemm) and ``load_subnet`` in a
    fresh process give back the search's accuracy."""
    onnx = pytest.importorskip("onnx")
    metrics, out = _export_one(tmp_path, "hat", "xeon", "mixed",
                               lambda units: {u: (4, 8)[i % 2] for i, u in enumerate(units)})
    document = json.loads((out / "config.json").read_text())
    assert {layer["bits"] for layer in document["quantization"]["layers"].values()} == {4, 8}
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert "MatMulNBits" in ops and "DequantizeLinear" in ops
    file_mb = (out / "model.safetensors").stat().st_size / 1e6
    assert abs(metrics["size_mb"] - file_mb) <= 0.02 * file_mb
    scores = _fresh_scores(out)
    print(f"search {metrics['accuracy']:.4f}, fresh {scores}, size {metrics['size_mb']:.3f} MB, "
          f"file {file_mb:.3f} MB")
    for runtime, score in scores.items():
        assert abs(score - metrics["accuracy"]) <= 0.002, (runtime, score, metrics)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["ofa", "matformer", "flexibert", "sortednet"])
def test_every_family_exports_int8_that_scores_the_same_fresh(tmp_path, family):
    """Each family's smallest subnet at uniform int8, exported and scored by ONNX Runtime
    and ``load_subnet`` in a fresh process: the search's accuracy within 0.2 points (HAT:
    the tests above)."""
    metrics, out = _export_one(tmp_path, family, "local-cpu", "int8", lambda units: {},
                               which="smallest", eval_limit=100)
    scores = _fresh_scores(out)
    print(f"{family}: search {metrics['accuracy']:.4f}, fresh {scores}")
    for runtime, score in scores.items():
        assert abs(score - metrics["accuracy"]) <= 0.002, (runtime, score, metrics)
