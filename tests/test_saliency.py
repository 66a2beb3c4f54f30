"""Hessian-aware saliency: the exact Fisher identity on a tiny model, and head ranking on
the pretrained MiniLM with real English text (Python's documentation paragraphs)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import Tensor, nn

from nas.compress._convert import bert_from_minilm
from nas.compress._saliency import magnitude, random_probe_loss, saliency
from nas.compress._structures import StructureIndex, structures
from nas.compress._transformer import DenseTransformer, Keep
from nas.supernets.tasks._minilm import mean_pool
from nas.supernets.tasks._pydoc_text import paragraphs
from tests.markers import needs_minilm


def tiny(seed: int = 0) -> DenseTransformer:
    torch.manual_seed(seed)
    return DenseTransformer(
        vocab_size=40, max_positions=16, type_vocab_size=1, embed_dim=16,
        layers=[{"heads": 3, "qk_dim": 4, "v_dim": 5, "ffn_dim": 24}] * 2,
    )


def sentence_embedding(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """L2-normalised mean-pooled output ``(B, C)``: the sentence embedding."""
    ids, mask = batch
    return F.normalize(mean_pool(model(ids, mask), mask), dim=-1)


def paragraph_batches(tokenizer, split: str, *, size: int, count: int, max_length: int,
                      seed: int) -> list[tuple[Tensor, Tensor]]:
    """``count`` batches of ``size`` random paragraphs of ``split``, tokenised (seeded)."""
    texts = paragraphs(split)
    g = torch.Generator().manual_seed(seed)
    return [tokenizer([texts[i] for i in torch.randint(len(texts), (size,), generator=g)],
                      max_length=max_length) for _ in range(count)]


def cosine_loss(model: nn.Module, batch: tuple[Tensor, Tensor], reference: Tensor) -> float:
    """``1 - mean cosine`` of ``model``'s sentence embeddings to ``reference``."""
    with torch.no_grad():
        return float(1.0 - (sentence_embedding(model, batch) * reference).sum(-1).mean())


def _flat(tensors: dict[str, Tensor], structure) -> Tensor:
    """The structure's entries of ``tensors`` as one vector (slice by slice)."""
    parts = [tensors[s.param].index_select(s.dim, torch.tensor(s.indices)).flatten()
             for s in structure.slices]
    return torch.cat(parts).double()


def test_saliency_equals_w_fisher_w() -> None:
    model = tiny(seed=3).eval()
    torch.manual_seed(4)
    data = [(torch.randint(3, model.vocab_size, (4, 16)), torch.randn(4, model.embed_dim))
            for _ in range(5)]

    def loss(m: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        ids, target = batch
        return ((m(ids, torch.ones_like(ids)).mean(1) - target) ** 2).mean()

    index = StructureIndex(model)
    scores = saliency(model, data, loss, index=index)
    params = dict(model.named_parameters())
    grads = []
    for batch in data:
        g = torch.autograd.grad(loss(model, batch), list(params.values()))
        grads.append(dict(zip(params, g)))
    weights = {n: p.detach() for n, p in params.items()}
    picked = {}
    for i, s in enumerate(index.items):
        picked.setdefault(s.kind, i)  # the first structure of each kind
    picked["head_last"] = max(i for i, s in enumerate(index.items) if s.kind == "head")
    assert set(picked) >= {"head", "qk", "v", "ffn", "embed"}
    for i in picked.values():
        w = _flat(weights, index.items[i])
        g = torch.stack([_flat(gb, index.items[i]) for gb in grads])  # (batches, |S|)
        fisher = g.T @ g / len(data)  # (|S|, |S|)
        expected = w @ fisher @ w
        assert index.sizes[i] == w.numel()
        assert expected > 0
        assert torch.isclose(scores[i], expected, rtol=1e-6), (index.items[i].kind,)


def test_frozen_model_gets_the_same_saliency_and_stays_frozen() -> None:
    model = tiny().eval()
    ids = torch.randint(3, model.vocab_size, (2, 8))

    def pooled(m: nn.Module, batch: Tensor) -> Tensor:
        return m(batch, torch.ones_like(batch)).mean(1)

    free = saliency(model, [ids], random_probe_loss(pooled, seed=1))
    model.requires_grad_(False)
    frozen = saliency(model, [ids], random_probe_loss(pooled, seed=1))
    assert torch.equal(free, frozen) and free.sum() > 0
    assert not any(p.requires_grad for p in model.parameters())


def test_saliency_needs_batches() -> None:
    model = tiny()
    with pytest.raises(ValueError, match="at least one batch"):
        saliency(model, [], lambda m, b: torch.zeros(()))


def test_random_probe_is_seeded() -> None:
    model = tiny().eval()
    ids = torch.randint(3, model.vocab_size, (2, 8))

    def pooled(m: nn.Module, batch: Tensor) -> Tensor:
        return m(batch, torch.ones_like(batch)).mean(1)

    a = saliency(model, [ids, ids], random_probe_loss(pooled, seed=5))
    b = saliency(model, [ids, ids], random_probe_loss(pooled, seed=5))
    c = saliency(model, [ids, ids], random_probe_loss(pooled, seed=6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def head_rankings() -> dict[str, float]:
    """Spearman of MiniLM's head saliency (Gauss-Newton probe of the sentence embedding,
    16 batches of 8 pydoc training paragraphs) and of head weight norm with the measured
    ``1 - cosine`` to the dense embeddings of 32 validation paragraphs when each head is
    removed (zeroed, which test_compress_bert shows equals removing it)."""
    from nas.supernets.tasks._minilm import load_minilm

    minilm, tokenizer = load_minilm()
    model = bert_from_minilm(minilm).eval()
    index = StructureIndex(model)
    train = paragraph_batches(tokenizer, "train", size=8, count=16, max_length=32, seed=0)
    scores = saliency(model, train, random_probe_loss(sentence_embedding, seed=0), index=index)
    norms = magnitude(model, index=index)
    val = tokenizer(list(paragraphs("validation")[:32]), max_length=32)
    with torch.no_grad():
        reference = sentence_embedding(model, val)
    params = dict(model.named_parameters())
    heads = [i for i, s in enumerate(index.items) if s.kind == "head"]
    increase = []
    for i in heads:
        saved = [(params[sl.param], params[sl.param].detach().clone())
                 for sl in index.items[i].slices]
        with torch.no_grad():
            for sl in index.items[i].slices:
                params[sl.param].index_fill_(sl.dim, torch.tensor(sl.indices), 0.0)
        increase.append(cosine_loss(model, val, reference))
        with torch.no_grad():
            for p, value in saved:
                p.copy_(value)
    return {
        "saliency": float(spearmanr(scores[heads], increase).statistic),
        "weight_norm": float(spearmanr(norms[heads], increase).statistic),
        "heads": float(len(heads)),
    }


@needs_minilm
@pytest.mark.slow
def test_head_saliency_predicts_loss_increase() -> None:
    result = head_rankings()
    assert result["heads"] == 72
    assert result["saliency"] >= 0.6, result
    assert result["saliency"] > result["weight_norm"], result


def test_structures_refuse_other_models() -> None:
    with pytest.raises(TypeError, match="DenseTransformer"):
        structures(nn.Linear(2, 2))  # type: ignore[arg-type]
    assert Keep.full(tiny()).heads == ((0, 1, 2),) * 2
