"""The zoo of plain models: recipes, ``train_model``, the shipped exports, ``nas train --model``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from nas.supernets import (
    MODEL_RECIPES,
    ExtraLoss,
    MambaLM,
    ModelRecipe,
    MoELM,
    WarmStart,
    list_zoo_models,
    load_zoo_model,
    model_recipe,
    train_model,
)
from nas.supernets._export import load_subnet
from nas.supernets.moe import upcycle
from nas.supernets.tasks._lm import PydocLMTask
from nas.supernets.training._models import CHECK_WINDOWS
from nas.supernets.training._zoo import zoo_dir
from tests.cli_helpers import nas, one_line_error

TINY = "tiny-moe"


def _build_tiny(task: PydocLMTask) -> MoELM:
    return MoELM(d_model=16, n_heads=2, context=task.context, n_layers=1, ffn_dim=16,
                 n_experts=4, top_k=2)


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> ModelRecipe:
    """A registered MoE recipe small enough to train in a fraction of a second."""
    recipe = ModelRecipe(name=TINY, stem=TINY, task="pydoc-lm", task_options={"context": 32},
                         build=_build_tiny, family="moe-lm", steps=5, batch_size=4, lr=1e-2,
                         seed=3, warmup=1, eval_limit=16,
                         extra_loss=ExtraLoss("aux_loss", 0.01))
    monkeypatch.setitem(MODEL_RECIPES, TINY, recipe)
    return recipe


def test_a_few_steps_change_the_loss_and_write_a_loadable_export(
        tiny: ModelRecipe, tmp_path: Path) -> None:
    task = tiny.make_task()
    torch.manual_seed(tiny.seed)
    before = task.evaluate(tiny.build(task), limit=CHECK_WINDOWS)["loss"]
    summary = train_model(TINY, out=tmp_path / "out", progress=False, command="test")
    model = load_subnet(tmp_path / "out")
    assert isinstance(model, MoELM) and not model.training
    meta = json.loads((tmp_path / "out" / "config.json").read_text())["metadata"]
    assert meta == {k: v for k, v in summary.items() if k != "path"}
    recipe = meta["recipe"]
    assert {k: recipe[k] for k in ("steps", "batch_size", "lr", "seed", "warmup")} == {
        "steps": 5, "batch_size": 4, "lr": 1e-2, "seed": 3, "warmup": 1}
    assert recipe["extra_loss"] == {"attribute": "aux_loss", "weight": 0.01}
    assert recipe["torch"] == torch.__version__ and recipe["threads"] >= 1
    assert recipe["family"] == "moe-lm" and recipe["eval_limit"] == 16
    assert meta["command"] == "test" and meta["task"] == "pydoc-lm"
    assert meta["task_options"] == {"context": 32}
    check = meta["metrics"]["check"]
    assert check["loss"] != pytest.approx(before, abs=1e-3)  # training moved it
    again = task.evaluate(model, limit=CHECK_WINDOWS)
    assert again["loss"] == pytest.approx(check["loss"], abs=1e-5)
    assert meta["metrics"]["limit"] == 16


def test_same_seed_same_weights(tiny: ModelRecipe, tmp_path: Path) -> None:
    for name in ("a", "b"):
        train_model(TINY, steps=3, out=tmp_path / name, progress=False)
    a, b = (load_subnet(tmp_path / name).state_dict() for name in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert ((tmp_path / "a" / "model.safetensors").read_bytes()
            == (tmp_path / "b" / "model.safetensors").read_bytes())
    train_model(TINY, steps=3, seed=4, out=tmp_path / "c", progress=False)
    c = load_subnet(tmp_path / "c").state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_a_warm_start_trains_first_then_converts(
        tiny: ModelRecipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    converted = []

    def convert(first: torch.nn.Module) -> torch.nn.Module:
        converted.append({k: v.clone() for k, v in first.state_dict().items()})
        return upcycle(first, n_experts=4, top_k=2)

    def build_dense(task: PydocLMTask) -> MoELM:
        return MoELM(d_model=16, n_heads=2, context=task.context, n_layers=1, ffn_dim=16,
                     n_experts=1, top_k=1)

    stage = WarmStart("upcycling", build=build_dense, steps=4, convert=convert)
    monkeypatch.setitem(MODEL_RECIPES, TINY, dataclasses.replace(tiny, warm_start=stage))
    meta = train_model(TINY, out=tmp_path / "out", progress=False)
    warm = meta["recipe"]["warm_start"]
    assert warm["method"] == "upcycling" and warm["steps"] == 4 and warm["seed"] == tiny.seed
    assert meta["recipe"]["seed"] == tiny.seed + 1 and meta["recipe"]["steps"] == tiny.steps
    torch.manual_seed(tiny.seed)
    untrained = build_dense(tiny.make_task()).state_dict()
    assert len(converted) == 1 and not all(
        torch.equal(untrained[k], converted[0][k]) for k in untrained)  # it was trained
    model = load_subnet(tmp_path / "out")
    assert isinstance(model, MoELM) and model.experts_per_layer == [4]


def test_an_existing_target_is_refused_before_training(tiny: ModelRecipe, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("a user's file")
    with pytest.raises(FileExistsError, match="--force"):
        train_model(TINY, out=tmp_path / "out", progress=False)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


def test_unknown_names_list_the_known_ones() -> None:
    assert list_zoo_models() == ["mamba-pydoc", "moe-pydoc"]
    with pytest.raises(ValueError, match=r"\['mamba-pydoc', 'moe-pydoc'\].*'nope'"):
        model_recipe("nope")
    with pytest.raises(ValueError, match="'nope'"):
        load_zoo_model("nope")


@pytest.mark.parametrize("name, kind", [("moe-pydoc", MoELM), ("mamba-pydoc", MambaLM)])
def test_shipped_models_load_and_match_their_recorded_loss(name: str, kind: type) -> None:
    recipe = model_recipe(name)
    folder = zoo_dir() / recipe.stem
    model = load_zoo_model(name)
    assert isinstance(model, kind) and not model.training
    assert (folder / "model.safetensors").stat().st_size < 3.2e6
    meta = json.loads((folder / "config.json").read_text())["metadata"]
    assert meta["zoo_model"] == name and meta["recipe"]["steps"] == recipe.steps
    task = recipe.make_task()
    again = task.evaluate(model, limit=CHECK_WINDOWS)
    recorded = meta["metrics"]
    assert again["loss"] == pytest.approx(recorded["check"]["loss"], abs=1e-4)
    # the first windows estimate the whole split's loss, loosely
    assert again["loss"] == pytest.approx(recorded["loss"], abs=0.35)
    assert recorded["loss"] < 2.5  # nats per byte: far below a uniform byte's 5.55


def test_cli_refuses_an_existing_output_without_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("{}")
    result = nas("train", "--model", "moe-pydoc", "--steps", "1", "--out", str(out))
    one_line_error(result, "already holds files", "--force")
    assert (out / "config.json").read_text() == "{}"


def test_cli_refuses_an_unknown_model_and_both_options() -> None:
    one_line_error(nas("train", "--model", "nope"), "mamba-pydoc", "moe-pydoc", "'nope'")
    one_line_error(nas("train", "--model", "moe-pydoc", "--supernet", "hat"),
                   "--model and --supernet are mutually exclusive")


def test_cli_trains_a_model_with_force_and_prints_json(tiny: ModelRecipe, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("kept")
    result = nas("train", "--model", TINY, "--steps", "2", "--out", str(out), "--force",
                 "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["recipe"]["steps"] == 2 and summary["path"] == str(out)
    assert isinstance(load_subnet(out), MoELM)
