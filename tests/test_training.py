"""The sandwich-rule trainer, checkpoints and the shipped zoo checkpoint."""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nas
from nas import Config, Gene, SearchSpace, SubnetShape, Supernet
from nas.supernets.tasks._g2p import BOS, EOS, PAD, G2PTask
from nas.supernets.training._loop import (
    SUPERNET_FAMILIES,
    Execution,
    _accumulate,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
    train_supernet,
)
from nas.supernets.training._schemes import SandwichRule, TrainingScheme

TOY_SPACE = SearchSpace("toy", [Gene("width", (8, 16, 32)), Gene("depth", (1, 2))])


class ToySeq2Seq(Supernet):
    """A tiny weight-sharing seq2seq stand-in: mean-pooled letters plus the previous
    phoneme feed an MLP whose width and depth are elastic. Output tied to the target
    embedding, so checkpoints must handle tied tensors."""

    family = "toy"

    def __init__(self, *, src_vocab: int, tgt_vocab: int, dim: int = 32) -> None:
        super().__init__()
        self.space = TOY_SPACE
        self.src_vocab, self.tgt_vocab, self.dim = src_vocab, tgt_vocab, dim
        self.src_embed = nn.Embedding(src_vocab, dim)
        self.tgt_embed = nn.Embedding(tgt_vocab, dim)
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(2))
        self.out = nn.Linear(dim, tgt_vocab)
        self.out.weight = self.tgt_embed.weight  # tied
        self.activate(self.space.largest())

    def _activate(self, config: Config) -> None:
        self.width, self.depth = int(config["width"]), int(config["depth"])

    def _extract(self, config: Config) -> nn.Module:
        dense = copy.deepcopy(self)
        dense.activate(config)
        return dense

    def _describe(self, config: Config) -> SubnetShape:
        return SubnetShape("toy", ())

    def _architecture(self) -> dict[str, Any]:
        return {"src_vocab": self.src_vocab, "tgt_vocab": self.tgt_vocab, "dim": self.dim}

    @classmethod
    def from_architecture(cls, architecture: dict[str, Any]) -> ToySeq2Seq:
        return cls(**architecture)

    def forward(self, src: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        w = self.width
        mask = (src != PAD).float()[..., None]  # (B, S, 1)
        ctx = (self.src_embed(src)[..., :w] * mask).sum(1) / mask.sum(1)  # (B, w)
        h = self.tgt_embed(prev)[..., :w] + ctx[:, None]  # (B, T, w)
        for layer in self.layers[: self.depth]:
            h = h + torch.tanh(F.linear(h, layer.weight[:w, :w], layer.bias[:w]))
        return F.linear(h, self.out.weight[:, :w], self.out.bias)  # (B, T, V)

    @torch.no_grad()
    def greedy_decode(
        self, src: torch.Tensor, *, max_len: int, steps: int | None = None
    ) -> torch.Tensor:
        tokens = torch.full((src.shape[0], 1), BOS, dtype=torch.long)
        finished = torch.zeros(src.shape[0], dtype=torch.bool)
        for _ in range(max_len if steps is None else steps):
            nxt = self(src, tokens)[:, -1].argmax(-1).masked_fill(finished, PAD)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            finished |= nxt == EOS
            if steps is None and bool(finished.all()):
                break
        return tokens[:, 1:]


SUPERNET_FAMILIES.register("toy")(ToySeq2Seq.from_architecture)


@pytest.fixture(scope="module")
def task() -> G2PTask:
    return nas.get_task("g2p-cmudict")


def _toy(task: G2PTask) -> ToySeq2Seq:
    torch.manual_seed(0)
    return ToySeq2Seq(src_vocab=task.src_vocab_size, tgt_vocab=task.tgt_vocab_size)


def _train(task: G2PTask, model: Supernet, steps: int = 40, **kwargs: Any) -> dict[str, Any]:
    options: dict[str, Any] = dict(
        steps=steps, batch_size=64, lr=1e-2, seed=0, progress=False, eval_limit=50
    )
    return train_supernet(model, task, **(options | kwargs))


def test_sandwich_rule_and_loss_decreases(task: G2PTask) -> None:
    model = _toy(task)
    seen: list[tuple[int, list[Config], float]] = []
    activated: list[Config] = []
    original = model.activate

    def spy(config: Any) -> Config:
        activated.append(original(config))
        return activated[-1]

    model.activate = spy  # type: ignore[method-assign]
    recipe = _train(
        task, model, on_step=lambda s, c, loss: seen.append((s, c, loss)), random_subnets=2
    )
    assert [s for s, _, _ in seen] == list(range(1, 41))
    largest, smallest = TOY_SPACE.largest(), TOY_SPACE.smallest()
    for _, configs, _ in seen:
        assert configs[:2] == [largest, smallest] and len(configs) == 4
    assert activated[:4] == seen[0][1]  # each config of a step was activated
    first, last = sum(x[2] for x in seen[:5]) / 5, sum(x[2] for x in seen[-5:]) / 5
    assert last < first - 0.5
    assert recipe["scheme"] == {
        "name": "sandwich", "largest": True, "smallest": True, "random_subnets": 2
    }
    assert {"steps", "batch_size", "lr", "seed", "torch", "date", "wall_s"} <= set(recipe)
    assert set(recipe["metrics"]) == {"largest", "smallest"}
    assert not model.training


def _same(xs: Iterable[torch.Tensor], ys: Iterable[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(xs, ys, strict=True))


def test_training_is_deterministic(task: G2PTask) -> None:
    a, b, c = _toy(task), _toy(task), _toy(task)
    _train(task, a, steps=8)
    _train(task, b, steps=8)
    _train(task, c, steps=8, seed=1)
    assert _same(a.state_dict().values(), b.state_dict().values())
    assert not _same(a.state_dict().values(), c.state_dict().values())


class _OnlyLargest(TrainingScheme):
    """A scheme that trains the largest subnet twice with weights 0.25 and 0.75 and
    scales the task loss by 3: the step's gradient must be 3x the plain one."""

    name = "only-largest"

    def plan(self, step, steps, supernet, rng):  # type: ignore[no-untyped-def]
        largest = supernet.space.largest()
        return [(largest, 0.25), (largest, 0.75)]

    def loss(self, supernet, task, batch, config):  # type: ignore[no-untyped-def]
        return 3.0 * task.loss(supernet, batch)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


def test_a_scheme_chooses_the_subnets_their_weights_and_the_loss(task: G2PTask) -> None:
    seen: list[list[Config]] = []
    model = _toy(task)
    recipe = _train(
        task, model, steps=3, scheme=_OnlyLargest(), on_step=lambda s, c, _: seen.append(c)
    )
    assert recipe["scheme"] == {"name": "only-largest"}
    assert seen == [[TOY_SPACE.largest()] * 2] * 3

    batch = task.train_batches(batch_size=8, generator=torch.Generator().manual_seed(0))()
    plain, scaled = _toy(task), _toy(task)
    plain.activate(TOY_SPACE.largest())
    task.loss(plain, batch).backward()
    _accumulate(scaled, scaled, task, _OnlyLargest(), [batch],
                _OnlyLargest().plan(1, 1, scaled, None), Execution(), torch.device("cpu"), None)
    for p, q in zip(plain.parameters(), scaled.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, 3.0 * p.grad)


def test_sandwich_rule_weights_are_a_mean() -> None:
    plan = SandwichRule(3).plan(1, 10, _toy_any(), np.random.default_rng(0))
    assert len(plan) == 5 and sum(w for _, w in plan) == pytest.approx(1.0)
    assert [c for c, _ in plan[:2]] == [TOY_SPACE.largest(), TOY_SPACE.smallest()]
    with pytest.raises(ValueError, match="random_subnets"):
        SandwichRule(-1)


def _toy_any() -> ToySeq2Seq:
    return ToySeq2Seq(src_vocab=8, tgt_vocab=8)


@pytest.mark.parametrize(
    "bad",
    [{"steps": 0}, {"batch_size": -1}, {"lr": 0.0}, {"random_subnets": -1}, {"schedule": "linear"}],
)
def test_invalid_options(task: G2PTask, bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        _train(task, _toy(task), **bad)


@pytest.fixture(scope="module")
def trained(task: G2PTask) -> tuple[ToySeq2Seq, dict[str, Any]]:
    model = _toy(task)
    return model, _train(task, model, steps=20)


def _outputs(model: Supernet, task: G2PTask) -> list[torch.Tensor]:
    src, prev = task.example_inputs()
    outs = []
    for config in (model.space.largest(), model.space.smallest()):
        model.activate(config)
        outs.append(model(src, prev))
    return outs


def test_checkpoint_round_trip(
    tmp_path: Path, task: G2PTask, trained: tuple[ToySeq2Seq, dict]
) -> None:
    model, recipe = trained
    doc = save_checkpoint(
        model, tmp_path / "toy", recipe, task=task, dtype="float32", eval_limit=50, command="pytest"
    )
    loaded = load_checkpoint(tmp_path / "toy")
    assert isinstance(loaded, ToySeq2Seq) and not loaded.training
    assert loaded.out.weight is loaded.tgt_embed.weight  # ties survive
    assert _same(_outputs(model, task), _outputs(loaded, task))
    assert loaded.task_name == "g2p-cmudict" and len(loaded.checkpoint_hash) == 64
    assert loaded.checkpoint_hash == doc["weights_sha256"]
    meta = read_checkpoint_meta(tmp_path / "toy")
    assert meta["architecture"] == model.architecture() and meta["command"] == "pytest"
    assert meta["recipe"]["seed"] == 0 and meta["metrics"]["limit"] == 50
    loaded.activate(loaded.space.largest())
    assert task.evaluate(loaded, limit=50)["accuracy"] == meta["metrics"]["largest"]["accuracy"]


def test_float16_when_accuracy_allows(
    tmp_path: Path, task: G2PTask, trained: tuple[ToySeq2Seq, dict]
) -> None:
    model, recipe = trained
    doc = save_checkpoint(model, tmp_path / "toy16", recipe, task=task, eval_limit=50)
    assert doc["dtype"] == "float16"  # a toy's accuracy does not move
    float32 = save_checkpoint(model, tmp_path / "toy32", recipe, dtype="float32")
    assert doc["weights_bytes"] < 0.6 * float32["weights_bytes"]
    loaded = load_checkpoint(tmp_path / "toy16")
    for x, y in zip(_outputs(model, task), _outputs(loaded, task), strict=False):
        torch.testing.assert_close(x, y, atol=2e-2, rtol=2e-2)


def _saved(tmp_path: Path, trained: tuple[ToySeq2Seq, dict]) -> Path:
    model, recipe = trained
    save_checkpoint(model, tmp_path / "toy", recipe, dtype="float32")
    return tmp_path / "toy"


_SAVE_IN_A_FRESH_PROCESS = """
import sys, torch
from torch import nn
from nas.supernets.training._loop import save_checkpoint
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
model.family, model.architecture = "toy", lambda: {}
print(save_checkpoint(model, sys.argv[1], {"task": "none"})["weights_sha256"])
"""


def test_identical_weights_give_identical_files_across_processes(tmp_path: Path) -> None:
    """safetensors orders metadata keys per process: the stored file must not depend on it."""
    import subprocess
    import sys

    digests = {
        subprocess.run(
            [sys.executable, "-c", _SAVE_IN_A_FRESH_PROCESS, str(tmp_path / f"run{i}")],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        for i in range(4)
    }
    assert len(digests) == 1 and len(next(iter(digests))) == 64


def test_missing_files(tmp_path: Path, trained: tuple[ToySeq2Seq, dict]) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing\.json"):
        load_checkpoint(tmp_path / "nothing")
    stem = _saved(tmp_path, trained)
    stem.with_suffix(".safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"toy\.safetensors"):
        load_checkpoint(stem)


def test_corrupt_weights(tmp_path: Path, trained: tuple[ToySeq2Seq, dict]) -> None:
    stem = _saved(tmp_path, trained)
    weights = stem.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"toy\.safetensors: not a valid safetensors file"):
        load_checkpoint(stem)


def test_tampered_weights(tmp_path: Path, trained: tuple[ToySeq2Seq, dict]) -> None:
    stem = _saved(tmp_path, trained)
    model, recipe = trained
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.layers[0].weight.add_(1.0)
    save_checkpoint(other, tmp_path / "other", recipe, dtype="float32")
    stem.with_suffix(".safetensors").write_bytes((tmp_path / "other.safetensors").read_bytes())
    with pytest.raises(ValueError, match=r"does not match the .* recorded in toy\.json"):
        load_checkpoint(stem)


def _edit_json(stem: Path, edit: Any) -> None:
    path = stem.with_suffix(".json")
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def test_bad_json(tmp_path: Path, trained: tuple[ToySeq2Seq, dict]) -> None:
    stem = _saved(tmp_path, trained)
    _edit_json(stem, lambda m: m.pop("architecture"))
    with pytest.raises(ValueError, match=r"toy\.json: missing keys \['architecture'\]"):
        load_checkpoint(stem)
    _edit_json(stem, lambda m: m.update(architecture={"src_vocab": 33, "tgt_vocab": 73, "dim": 16}))
    with pytest.raises(
        ValueError,
        match=r"toy\.safetensors: tensor '.*' has shape \[.*\], the "
        r"architecture in toy.json expects",
    ):
        load_checkpoint(stem)
    _edit_json(stem, lambda m: m.update(family="nope"))
    with pytest.raises(ValueError, match=r"unknown supernet family 'nope'"):
        load_checkpoint(stem)
    stem.with_suffix(".json").write_text("{not json")
    with pytest.raises(ValueError, match=r"toy\.json: not valid JSON"):
        load_checkpoint(stem)


# -- the shipped checkpoint ----------------------------------------------------------------


SHIPPED_LIMIT = 500


def test_shipped_hat_checkpoint(task: G2PTask) -> None:
    supernet = nas.get_supernet("hat")
    meta = read_checkpoint_meta(Path(nas.supernets.zoo_dir()) / "hat-g2p")
    assert supernet.family == "hat" and supernet.task_name == "g2p-cmudict"
    assert supernet.checkpoint_hash == meta["weights_sha256"] and not supernet.training
    assert meta["weights_bytes"] < 8_000_000
    recorded = meta["metrics"]["check"]
    assert recorded["limit"] == SHIPPED_LIMIT
    supernet.activate(supernet.space.largest())
    got = task.evaluate(supernet, limit=SHIPPED_LIMIT, per=False)["accuracy"]
    assert abs(got - recorded["largest_accuracy"]) < 0.01


# -- how a training runs: micro-batches, worker processes, precision ---------------------


def _weights(model: Supernet) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


def test_micro_batches_add_up_to_the_whole_batch(task: G2PTask) -> None:
    """Three micro-batches of unequal token counts, each weighted by its share of the
    batch's tokens, accumulate the gradient of the whole batch."""
    keys = task.train_keys(batch_size=64, generator=torch.Generator().manual_seed(0))()
    parts = [task.load_batch(keys[lo:hi]) for lo, hi in ((0, 21), (21, 42), (42, 64))]
    assert len({task.loss_units(part) for part in parts}) == 3
    plan = SandwichRule(1).plan(1, 1, _toy(task), np.random.default_rng(0))
    grads = []
    for batches in ([task.load_batch(keys)], parts):
        model = _toy(task)
        _accumulate(model, model, task, SandwichRule(1), batches, plan, Execution(),
                    torch.device("cpu"), None)
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_micro_batches_train_the_weights_of_whole_batches(task: G2PTask) -> None:
    """After a few AdamW steps every tensor agrees to 0.1 % of its norm: Adam divides
    by the gradient's own scale, so the rounding of a near-zero gradient can move one
    element by a fraction of a step, nothing more."""
    whole, parts = _toy(task), _toy(task)
    _train(task, whole, steps=6)
    recipe = _train(task, parts, steps=6, execution=Execution(accumulate=3))
    for a, b in zip(_weights(whole), _weights(parts), strict=True):
        assert torch.linalg.norm(a.float() - b.float()) <= 1e-3 * torch.linalg.norm(a.float())
    assert recipe["execution"]["accumulate"] == 3


def test_worker_processes_load_the_same_batches(task: G2PTask) -> None:
    here, workers = _toy(task), _toy(task)
    _train(task, here, steps=5, execution=Execution(accumulate=2))
    _train(task, workers, steps=5, execution=Execution(accumulate=2, workers=2))
    assert _same(_weights(here), _weights(workers))


def test_bf16_autocast_trains_close_to_fp32(task: G2PTask) -> None:
    full, half = _toy(task), _toy(task)
    _train(task, full, steps=5)
    recipe = _train(task, half, steps=5, execution=Execution(precision="bf16"))
    assert math.isfinite(recipe["final_loss"])
    assert recipe["execution"]["precision"] == "bf16"
    assert not _same(_weights(full), _weights(half))  # autocast did change the arithmetic
    for a, b in zip(_weights(full), _weights(half), strict=True):
        torch.testing.assert_close(a, b, rtol=0.05, atol=0.02)


@pytest.mark.parametrize(("execution", "message"), [
    (Execution(precision="fp16"), "fp16 training needs a CUDA device"),
    (Execution(precision="int8"), "precision must be one of"),
    (Execution(device="tpu"), "device must be one of"),
    (Execution(accumulate=0), "accumulate must be a positive integer"),
    (Execution(accumulate=65), "batch size 64 cannot be split into 1 rank(s) x 65"),
    (Execution(workers=10_000), "workers must be"),
])
def test_executions_this_machine_cannot_run(
    task: G2PTask, execution: Execution, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        _train(task, _toy(task), steps=2, execution=execution)
