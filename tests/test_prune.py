"""Global structural pruning: targets, validation, distillation, and Hessian-aware against
magnitude pruning at equal parameter count."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.compress._cost import ENCODER_PARAMS, PARAMS, Cost
from nas.compress._prune import (
    NVIT_GROUPS,
    PruneStep,
    count_params,
    normalise,
    prune,
    prune_once,
    savings,
    smallest_config,
)
from nas.compress._saliency import random_probe_loss
from nas.compress._structures import StructureIndex
from nas.compress._transformer import DenseTransformer, Keep, param_count
from nas.supernets._export import load_subnet, save_subnet
from tests.markers import needs_minilm


def tiny(seed: int = 0) -> DenseTransformer:
    torch.manual_seed(seed)
    return DenseTransformer(
        vocab_size=40, max_positions=16, type_vocab_size=1, embed_dim=24,
        layers=[{"heads": 4, "qk_dim": 6, "v_dim": 6, "ffn_dim": 48}] * 2,
    ).eval()


def pooled(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    ids, mask = batch
    hidden = model(ids, mask)
    weights = mask[..., None].to(hidden.dtype)
    return F.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1)  # (B, C)


def random_data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)

    def next_batch() -> tuple[Tensor, Tensor]:
        ids = torch.randint(0, 40, (8, 12), generator=g)
        return ids, torch.ones_like(ids)

    return next_batch


def self_distillation(teacher: nn.Module):
    """``1 - cosine`` of the student's pooled output to the (frozen) teacher's."""

    def loss(student: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        with torch.no_grad():
            target = pooled(teacher, batch)
        return 1.0 - (pooled(student, batch) * target).sum(-1).mean()

    return loss


def test_prune_reaches_the_target_with_fewer_units_everywhere(tmp_path) -> None:
    model = tiny()
    steps: list[PruneStep] = []
    small = prune(model, random_data(), target=0.6, cost=ENCODER_PARAMS,
                  saliency_loss=random_probe_loss(pooled), steps=3, saliency_batches=2,
                  on_step=steps.append, progress=False)
    start = count_params(model, which="encoder")
    assert [s.step for s in steps] == [1, 2, 3]
    assert all(a.encoder_params > b.encoder_params for a, b in zip(steps, steps[1:]))
    assert 0.55 * start <= count_params(small, which="encoder") <= 0.6 * start
    assert steps[-1].encoder_params == count_params(small, which="encoder")
    kept = Keep.full(small)
    assert all(len(units) >= 1 for kind in ("heads", "qk", "v", "ffn")
               for units in getattr(kept, kind))
    assert count_params(model, which="encoder") == start  # the teacher is untouched
    ids, mask = random_data(5)()
    loaded = load_subnet(save_subnet(small, tmp_path / "pruned", family="transformer"))
    with torch.inference_mode():
        assert torch.equal(loaded(ids, mask), small(ids, mask))
        assert small(ids, mask).shape == model(ids, mask).shape


def test_distillation_recovers_part_of_the_loss() -> None:
    model = tiny(seed=1)
    loss = self_distillation(model)
    probe = random_data(9)
    common = dict(target=0.5, steps=1, saliency_batches=2, progress=False)
    plain = prune(model, random_data(), saliency_loss=random_probe_loss(pooled), **common)
    records: list[PruneStep] = []
    tuned = prune(model, random_data(), saliency_loss=random_probe_loss(pooled),
                  distil_loss=loss, distil_steps=30, lr=3e-3, on_step=records.append, **common)
    assert count_params(plain) == count_params(tuned)  # one step: the same structures go
    batch = probe()
    with torch.no_grad():
        assert float(loss(tuned, batch)) < float(loss(plain, batch))
    assert all(r.distil_loss is not None for r in records)


def test_normalise_divides_each_layer_by_its_norm() -> None:
    index = StructureIndex(tiny())
    scores = torch.rand(len(index), dtype=torch.float64) * 100
    out = normalise(scores, index.items)
    for key in {s.layer_key for s in index.items}:
        members = torch.tensor([i for i, s in enumerate(index.items) if s.layer_key == key])
        assert torch.isclose(out[members].norm(), torch.tensor(1.0, dtype=torch.float64))
        assert torch.allclose(out[members] * scores[members].norm(), scores[members])


def test_prune_once_removes_the_lowest_scores() -> None:
    model = tiny()
    index = StructureIndex(model)
    scores = torch.ones(len(index), dtype=torch.float64)
    ffn0 = [i for i, s in enumerate(index.items) if s.kind == "ffn" and s.block == 0]
    scores[ffn0[:10]] = 0.0
    per_unit = 2 * 24 + 1  # an FFN unit: its input row, bias and output column
    target = count_params(model) - 10 * per_unit
    small = prune_once(model, scores, target=target, index=index)
    assert Keep.full(small).ffn[0] == tuple(range(38))
    assert count_params(small) == target
    assert Keep.full(small).heads == Keep.full(model).heads


def test_latency_term_moves_the_choice() -> None:
    """With ``eta`` large, the structures whose removal saves the most latency go first
    (here a stand-in latency: 1 ms per FFN unit of block 1, nothing else costs)."""
    model = tiny()
    latency = Cost("stand-in latency", "ms",
                   lambda config: float(config["layers"][1]["ffn_dim"]))
    common = dict(target=0.8, criterion="magnitude", steps=1, progress=False)
    plain = Keep.full(prune(model, random_data(), **common))
    aware = Keep.full(prune(model, random_data(), latency=latency, eta=10.0, **common))
    full = Keep.full(model)
    assert len(aware.ffn[1]) < len(full.ffn[1])  # only block 1's FFN units went
    assert (aware.embed, aware.heads, aware.qk, aware.v, aware.ffn[0]) == (
        full.embed, full.heads, full.qk, full.v, full.ffn[0])
    assert (plain.embed, plain.heads, plain.qk, plain.v, plain.ffn[0]) != (
        full.embed, full.heads, full.qk, full.v, full.ffn[0])
    with pytest.raises(ValueError, match="latency"):
        prune(model, random_data(), eta=1.0, **common)


def test_nvit_groups_remove_whole_runs_of_the_lowest_units() -> None:
    """Groups of NViT's sizes (16 FFN units, 2 heads, 8 qk/v dims, 16 embedding dims):
    each layer loses a multiple of its group size, or all it may (all but one unit), and
    within a layer the lowest-scoring units go first."""
    model = tiny()
    index = StructureIndex(model)
    scores = torch.rand(len(index), generator=torch.Generator().manual_seed(3),
                        dtype=torch.float64)
    scores[[i for i, s in enumerate(index.items) if s.kind == "ffn"]] *= 0.2
    small = prune_once(model, scores, target=0.7 * count_params(model), index=index,
                       group_sizes=NVIT_GROUPS)
    assert count_params(small) <= 0.7 * count_params(model)
    before, after = Keep.full(model), Keep.full(small)
    for kind, group in {"heads": 2, "qk": 8, "v": 8, "ffn": 16}.items():
        for old, new in zip(getattr(before, kind), getattr(after, kind)):
            assert (len(old) - len(new)) % group == 0 or len(new) == 1, kind
    assert (len(before.embed) - len(after.embed)) % 16 == 0 or len(after.embed) == 1
    assert sum(map(len, after.ffn)) < sum(map(len, before.ffn))
    for i, block in enumerate(small.blocks):  # the kept FFN units are the top-scoring ones
        ffn = {s.index: float(scores[j]) for j, s in enumerate(index.items)
               if (s.kind, s.block) == ("ffn", i)}
        top = sorted(sorted(ffn, key=ffn.get)[-block.ffn_in.out_features:])
        assert torch.equal(block.ffn_in.bias, model.blocks[i].ffn_in.bias[top])


def test_savings_are_the_cost_difference_of_removing_one_unit() -> None:
    model = tiny()
    index = StructureIndex(model)
    saved = savings(model, index.items, PARAMS)
    for i, s in enumerate(index.items):
        if s.kind == "ffn":
            assert saved[i] == 2 * 24 + 1  # its input row, bias and output column
        if s.kind == "head":
            assert saved[i] == 3 * (24 * 6 + 6) + 24 * 6  # q, k, v rows; output columns
    smallest = smallest_config(model)
    assert smallest["embed_dim"] == 1
    assert all(spec[k] == 1 for spec in smallest["layers"]
               for k in ("heads", "qk_dim", "v_dim", "ffn_dim"))
    assert param_count(smallest) < count_params(model)


def test_bad_arguments_are_refused() -> None:
    model = tiny()
    data = random_data()
    with pytest.raises(ValueError, match="target must be a fraction"):
        prune(model, data, target=0.0, criterion="magnitude")
    with pytest.raises(ValueError, match="criterion"):
        prune(model, data, target=0.5, criterion="random")
    with pytest.raises(ValueError, match="saliency_loss"):
        prune(model, data, target=0.5)
    with pytest.raises(ValueError, match="distil_steps"):
        prune(model, data, target=0.5, criterion="magnitude", distil_steps=3)
    with pytest.raises(ValueError, match="steps"):
        prune(model, data, target=0.5, criterion="magnitude", steps=0)
    with pytest.raises(ValueError, match="below the smallest model pruning can reach"):
        prune(model, data, target=0.001, cost=ENCODER_PARAMS, criterion="magnitude")
    with pytest.raises(ValueError, match="scores must have shape"):
        prune_once(model, torch.zeros(3), target=10)


def two_block_minilm() -> tuple[DenseTransformer, object]:
    """MiniLM's embeddings and first two blocks as a small DenseTransformer (and its tokenizer)."""
    from nas.compress._convert import bert_from_minilm
    from nas.supernets.tasks._minilm import load_minilm

    minilm, tokenizer = load_minilm()
    full = bert_from_minilm(minilm)
    cfg = full.subnet_config()
    cfg["layers"] = cfg["layers"][:2]
    small = DenseTransformer(**cfg)
    state = {k: v for k, v in full.state_dict().items()
             if not k.startswith("blocks.") or int(k.split(".")[1]) < 2}
    small.load_state_dict(state, strict=True)
    return small.eval(), tokenizer


def hessian_vs_magnitude() -> dict[str, float]:
    """Both criteria prune the two-block MiniLM to half its encoder parameters (2 steps, no
    distillation); ``1 - cosine`` of sentence embeddings to the dense model's on 48 pydoc
    validation paragraphs."""
    from nas.supernets.tasks._pydoc_text import paragraphs

    model, tokenizer = two_block_minilm()
    texts = paragraphs("train")
    g = torch.Generator().manual_seed(0)

    def data() -> tuple[Tensor, Tensor]:
        pick = torch.randint(len(texts), (8,), generator=g).tolist()
        return tokenizer([texts[i] for i in pick], max_length=48)

    val = tokenizer(list(paragraphs("validation")[:48]), max_length=48)
    with torch.no_grad():
        reference = pooled(model, val)
    out: dict[str, float] = {}
    for criterion in ("hessian", "magnitude"):
        small = prune(model, data, target=0.5, cost=ENCODER_PARAMS, criterion=criterion,
                      saliency_loss=random_probe_loss(pooled), steps=2, saliency_batches=12,
                      progress=False)
        with torch.no_grad():
            out[criterion] = float(1.0 - (pooled(small, val) * reference).sum(-1).mean())
        out[f"{criterion}_encoder_params"] = float(count_params(small, which="encoder"))
    out["dense_encoder_params"] = float(count_params(model, which="encoder"))
    return out


@needs_minilm
@pytest.mark.slow
def test_hessian_pruning_keeps_lower_loss_than_magnitude() -> None:
    result = hessian_vs_magnitude()
    half = result["dense_encoder_params"] / 2
    for criterion in ("hessian", "magnitude"):
        assert 0.98 * half <= result[f"{criterion}_encoder_params"] <= half, result
    assert result["hessian"] < result["magnitude"], result
