"""HAT subnets in the compression IR: conversion computes what the source does, pruning
keeps every shape consistent (cross-attention, both embedding widths, the stored
positions), and the latency a budget counts is the search's own rpi4 figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nas import get_hardware, get_supernet, get_task
from nas.compress import _seq2seq_structures as seq2seq
from nas.compress._convert import to_transformer
from nas.compress._prune import (
    check_reachable,
    layout_of,
    prune_once,
    savings,
    smallest_config,
)
from nas.compress._seq2seq import DenseSeq2Seq, seq2seq_param_count
from nas.compress._seq2seq_cost import hat_latency_cost
from nas.compress._structures import StructureIndex
from nas.compress._task_data import TaskData
from nas.supernets.hat._dense import sinusoidal_table


@pytest.fixture(scope="module")
def hat():
    return get_supernet("hat")


@pytest.fixture(scope="module")
def task():
    return get_task("g2p-cmudict")


def subnet(hat, seed: int, **genes):
    config = dict(hat.space.sample(np.random.default_rng(seed)))
    config.update(genes)
    return hat.space.config(config), hat.extract(hat.space.config(config)).eval()


def batch(task, n: int = 8):
    src = task.encode_words(task.words("validation")[:n])
    prev = torch.randint(4, task.tgt_vocab_size, (n, 7), generator=torch.Generator().manual_seed(0))
    prev[:, 0] = 1
    prev[2, 5:] = 0  # a padded target row
    return src, prev


@pytest.mark.parametrize("seed, width", [(1, 96), (2, 128)])
def test_hat_subnet_converts_exactly_and_rebuilds(hat, task, seed, width) -> None:
    _, source = subnet(hat, seed, **{"encoder.embed_dim": width, "decoder.embed_dim": 64})
    ir = to_transformer(source)
    assert isinstance(ir, DenseSeq2Seq)
    src, prev = batch(task)
    with torch.no_grad():
        torch.testing.assert_close(ir(src, prev), source(src, prev), rtol=0, atol=1e-4)
        assert torch.equal(ir.greedy_decode(src, max_len=12), source.greedy_decode(src, max_len=12))
    # positions are the source's stored table: at width 96 HAT's slice of the widest table,
    # not a table computed at 96
    assert torch.equal(ir.encoder_positions, source.encoder_positions)
    assert torch.equal(source.encoder_positions, sinusoidal_table(64, width)) == (width == 128)
    config = ir.subnet_config()
    assert DenseSeq2Seq(**config).subnet_config() == config
    assert seq2seq_param_count(config) == sum(p.numel() for p in ir.parameters())


def zeroed(model: DenseSeq2Seq, removed) -> DenseSeq2Seq:
    copy = DenseSeq2Seq(**model.subnet_config())
    copy.load_state_dict(model.state_dict())
    params = dict(copy.named_parameters())
    with torch.no_grad():
        for s in removed:
            for sl in s.slices:
                index = torch.tensor(sl.indices)
                params[sl.param].index_fill_(sl.dim, index, 0.0)
    return copy.eval()


def test_removing_units_equals_zeroing_them_in_both_groups(hat, task) -> None:
    """Heads, query/key and value units, FFN units, cross-attention's own: shrinking is
    exactly zeroing (the temperature stays fixed), in encoder and decoder blocks."""
    _, source = subnet(hat, 3)
    ir = to_transformer(source)
    items = seq2seq.structures(ir)
    layers = layout_of(ir).layer_sizes(ir)
    rng = np.random.default_rng(0)
    removed = [s for s in items if "embed" not in s.kind and s.index < layers[s.layer_key] - 1
               and rng.random() < 0.4]
    assert {s.kind for s in removed} == {"head", "qk", "v", "ffn", "xhead", "xqk", "xv"}
    small = seq2seq.shrink(ir, seq2seq.keep_without(ir, removed))
    src, prev = batch(task)
    with torch.no_grad():
        torch.testing.assert_close(small(src, prev), zeroed(ir, removed)(src, prev),
                                   rtol=0, atol=1e-4)
    assert sum(p.numel() for p in small.parameters()) == seq2seq_param_count(
        small.subnet_config())


def test_pruning_both_widths_keeps_cross_attention_and_positions_consistent(hat, task) -> None:
    _, source = subnet(hat, 4, **{"encoder.embed_dim": 96, "decoder.embed_dim": 128})
    ir = to_transformer(source)
    enc_kept, dec_kept = tuple(range(0, 96, 3)), tuple(range(1, 128, 2))
    keep = dict(seq2seq.keep_full(ir))
    keep[("enc_embed", None)], keep[("dec_embed", None)] = enc_kept, dec_kept
    g = len(ir.encoder)  # decoder block 0
    keep[("xhead", g)] = keep[("xhead", g)][:1]
    keep[("xqk", g)] = keep[("xqk", g)][::2]
    small = seq2seq.shrink(ir, keep)
    config = small.subnet_config()
    assert (config["encoder_dim"], config["decoder_dim"]) == (32, 64)
    cross = small.decoder[0].cross_attn
    qk = config["decoder_layers"][0]["cross_qk_dim"]
    assert cross.key.weight.shape == (qk, 32) and cross.query.weight.shape == (qk, 64)
    assert cross.value.weight.shape[1] == 32 and cross.out.weight.shape[0] == 64
    assert config["decoder_layers"][0]["cross_temperature"] == pytest.approx(
        ir.subnet_config()["decoder_layers"][0]["cross_temperature"])
    # the source's position columns survive, not a table computed at the new width
    assert torch.equal(small.encoder_positions, source.encoder_positions[:, list(enc_kept)])
    assert torch.equal(small.decoder_positions, source.decoder_positions[:, list(dec_kept)])
    assert config["encoder_scale"] == pytest.approx(96 ** 0.5)
    src, prev = batch(task)
    assert small(src, prev).shape == (8, 7, task.tgt_vocab_size)
    assert small.greedy_decode(src, max_len=6).shape[0] == 8
    assert seq2seq.shrunk_config(ir, keep) == config


def test_rpi4_latency_of_the_ir_is_the_searchs_and_only_falls(hat, task) -> None:
    rpi4 = get_hardware("rpi4")
    cost = hat_latency_cost(rpi4, task)
    config, source = subnet(hat, 5)
    ir = to_transformer(source)
    assert cost(ir) == pytest.approx(rpi4.latency_ms(hat, config, task), rel=1e-12)
    items = seq2seq.structures(ir)
    saved = savings(ir, items, cost)
    assert (saved >= 0).all() and (saved > 0).any()
    floor = cost.of_config(smallest_config(ir))
    goal = (cost(ir) + floor) / 2
    scores = torch.rand(len(items), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    small = prune_once(ir, scores, target=goal, cost=cost, index=StructureIndex(ir, items))
    assert floor <= cost(small) <= goal
    assert len(small.encoder) == len(ir.encoder) and len(small.decoder) == len(ir.decoder)
    with pytest.raises(ValueError, match="below the smallest model.*fewer layers"):
        check_reachable(ir, 0.99 * floor, cost, 1)


def test_distillation_adds_the_teachers_soft_targets(hat, task) -> None:
    """For the teacher itself the loss is its own NLL plus the entropy of its predictions,
    over the non-pad target positions."""
    _, source = subnet(hat, 6)
    ir = to_transformer(source)
    data = TaskData(task, ir, language_model=False, seq2seq=True)
    src, prev, tgt = task.train_batches(batch_size=6, generator=torch.Generator().manual_seed(0))()
    with torch.no_grad():
        log_p = F.log_softmax(ir(src, prev), -1)[tgt != 0]  # (N, V)
        expected = F.nll_loss(log_p, tgt[tgt != 0]) - (log_p.exp() * log_p).sum(-1).mean()
        assert data.distil_loss(ir, (src, prev, tgt)) == pytest.approx(float(expected), rel=1e-5)
