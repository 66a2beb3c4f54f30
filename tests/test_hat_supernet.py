"""HAT SuperTransformer: weight slicing, extraction, decoding and the space's sizes."""

from __future__ import annotations

import ast
import inspect
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from nas._supernet import SUBNET_BUILDERS
from nas.supernets.hat import HATSuperTransformer
from nas.supernets.hat import _dense as _hat_dense
from nas.supernets.hat._dense import HATSubnet
from nas.supernets.hat._space import G2P_SPACE, WMT_SPACE

SRC_VOCAB, TGT_VOCAB = 31, 45
BOS, EOS, PAD = 1, 2, 0


@pytest.fixture(scope="module")
def supernet() -> HATSuperTransformer:
    torch.manual_seed(0)
    return HATSuperTransformer(G2P_SPACE, src_vocab=SRC_VOCAB, tgt_vocab=TGT_VOCAB).eval()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded sources and targets of different lengths."""
    gen = torch.Generator().manual_seed(1)
    src = torch.randint(4, SRC_VOCAB, (4, 11), generator=gen)
    src[0, 8:] = PAD
    src[2, 3:] = PAD
    tgt = torch.randint(4, TGT_VOCAB, (4, 9), generator=gen)
    tgt[:, 0] = BOS
    tgt[1, 6:] = PAD
    return src, tgt


def _configs(space, n: int = 6, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(n)]


@pytest.mark.parametrize("index", range(8))
def test_extract_equals_activated_supernet(supernet, batch, index) -> None:
    config = _configs(supernet.space)[index]
    src, tgt = batch
    supernet.activate(config)
    with torch.no_grad():
        expected = supernet(src, tgt)
        dense = supernet.extract(config).eval()
        got = dense(src, tgt)
    assert got.shape == (4, 9, TGT_VOCAB)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert torch.isfinite(got).all()
    assert torch.equal(
        dense.greedy_decode(src, max_len=10), supernet.greedy_decode(src, max_len=10)
    )
    assert torch.equal(
        dense.greedy_decode(src, max_len=10, steps=7),
        supernet.greedy_decode(src, max_len=10, steps=7),
    )


def test_incremental_decoding_matches_teacher_forcing(supernet, batch) -> None:
    """The key/value cache gives the same next-token choices as a full forward pass."""
    src, _ = batch
    for config in _configs(supernet.space, n=2, seed=3):
        dense = supernet.extract(config).eval()
        tokens = dense.greedy_decode(src, max_len=12, steps=12)  # (B, 12)
        prev = torch.cat([torch.full((4, 1), BOS), tokens[:, :-1]], dim=1)
        with torch.no_grad():
            choice = dense(src, prev).argmax(-1)  # (B, 12)
        for row in range(4):
            eos = (tokens[row] == EOS).nonzero()
            end = int(eos[0]) + 1 if len(eos) else 12
            assert torch.equal(choice[row, :end], tokens[row, :end])


def test_greedy_decode_lengths(supernet, batch) -> None:
    src, _ = batch
    supernet.activate(supernet.space.smallest())
    assert supernet.greedy_decode(src, max_len=5, steps=9).shape == (4, 9)
    assert supernet.greedy_decode(src, max_len=5, steps=0).shape == (4, 0)
    assert supernet.greedy_decode(src, max_len=5).shape[1] <= 5
    with pytest.raises(ValueError, match="max_positions"):
        supernet.greedy_decode(src, max_len=65)
    with pytest.raises(ValueError, match="src_tokens"):
        supernet.encode(src[0])


def test_gradients_reach_only_the_active_slices() -> None:
    torch.manual_seed(0)
    net = HATSuperTransformer(G2P_SPACE, src_vocab=SRC_VOCAB, tgt_vocab=TGT_VOCAB, dropout=0.0)
    values = net.space.smallest().to_dict()  # embed 64, ffn 128, 2 heads, 3 + 1 layers
    config = net.activate(values)
    assert config["encoder.layers"] == 3 and config["decoder.layers"] == 1
    src = torch.randint(4, SRC_VOCAB, (2, 7))
    tgt = torch.randint(4, TGT_VOCAB, (2, 5))
    net(src, tgt).logsumexp(-1).sum().backward()

    enc0 = net.encoder_layers[0]
    assert enc0.fc1.weight.grad[:128, :64].abs().sum() > 0
    assert enc0.fc1.weight.grad[128:].abs().sum() == 0
    assert enc0.fc1.weight.grad[:, 64:].abs().sum() == 0
    assert enc0.fc2.weight.grad[:, 128:].abs().sum() == 0
    width = 2 * G2P_SPACE.head_dim
    for proj in (enc0.attn.q_proj, enc0.attn.k_proj, enc0.attn.v_proj):
        assert proj.weight.grad[:width, :64].abs().sum() > 0
        assert proj.weight.grad[width:].abs().sum() == 0
    assert enc0.attn.out_proj.weight.grad[:, width:].abs().sum() == 0
    assert enc0.attn_norm.weight.grad[64:].abs().sum() == 0
    assert net.encoder_embed.weight.grad[:, :64].abs().sum() > 0
    assert net.encoder_embed.weight.grad[:, 64:].abs().sum() == 0
    assert net.decoder_embed.weight.grad[:, 64:].abs().sum() == 0
    # ende attention reads the (64-wide) encoder states into its k/v projections
    ende = net.decoder_layers[0].ende_attn
    assert ende.k_proj.weight.grad[:width, :64].abs().sum() > 0
    assert ende.k_proj.weight.grad[:, 64:].abs().sum() == 0
    # layers beyond the active depth take no part
    assert all(p.grad is None for p in net.encoder_layers[3].parameters())
    assert all(p.grad is None for layer in net.decoder_layers[1:] for p in layer.parameters())


def test_sandwich_training_step_updates_shared_weights() -> None:
    """Random + largest + smallest subnets each step, as HAT trains (smoke test)."""
    torch.manual_seed(0)
    net = HATSuperTransformer(G2P_SPACE, src_vocab=SRC_VOCAB, tgt_vocab=TGT_VOCAB).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    src = torch.randint(4, SRC_VOCAB, (4, 8))
    tgt = torch.randint(4, TGT_VOCAB, (4, 6))
    before = net.encoder_layers[0].fc1.weight.detach().clone()
    rng = np.random.default_rng(0)
    opt.zero_grad()
    for config in (net.space.sample(rng), net.space.largest(), net.space.smallest()):
        net.activate(config)
        logits = net(src, tgt[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten())
        loss.backward()
    opt.step()
    assert not torch.equal(before, net.encoder_layers[0].fc1.weight)


def test_activate_rejects_invalid_configs(supernet) -> None:
    good = supernet.space.largest().to_dict()
    with pytest.raises(ValueError, match="must be one of"):
        supernet.activate({**good, "encoder.0.ffn_dim": 100})
    with pytest.raises(ValueError, match="missing"):
        supernet.activate({k: v for k, v in good.items() if k != "decoder.0.heads"})
    with pytest.raises(ValueError, match="does not have"):
        supernet.activate({**good, "decoder.9.heads": 2})
    with pytest.raises(ValueError):
        supernet.extract({**good, "decoder.embed_dim": 100})


def test_describe_counts_layers(supernet) -> None:
    values = supernet.space.largest().to_dict()
    values.update({"encoder.layers": 3, "decoder.layers": 2, "decoder.1.ende_layers": 3})
    shape = supernet.describe(values)
    assert shape.family == "hat"
    assert shape.count("encoder") == 3 and shape.count("decoder") == 2
    dec = shape.layers[-1].dims
    assert {"embed_dim", "ffn_dim", "heads", "ende_heads", "ende_layers",
            "encoder_embed_dim", "head_dim"} <= set(dec)
    assert dec["ende_layers"] == 3 and dec["head_dim"] == G2P_SPACE.head_dim
    assert {"embed_dim", "ffn_dim", "heads", "head_dim"} <= set(shape.layers[0].dims)
    assert dict(shape.dims) == {"src_vocab": SRC_VOCAB, "tgt_vocab": TGT_VOCAB,
                                "encoder_embed_dim": 128, "decoder_embed_dim": 128}


def test_rebuilt_from_subnet_config_and_safetensors(supernet, batch) -> None:
    src, tgt = batch
    config = _configs(supernet.space, n=1, seed=5)[-1]
    dense = supernet.extract(config).eval()
    spec = json.loads(json.dumps(dense.subnet_config()))
    blob = st_save(dense.state_dict())  # fails on shared or non-contiguous tensors
    rebuilt = SUBNET_BUILDERS.create("hat", **spec)
    rebuilt.load_state_dict(st_load(blob))
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(src, tgt), dense(src, tgt), atol=0, rtol=0)


def test_extracted_weights_are_copies(supernet, batch) -> None:
    src, tgt = batch
    config = supernet.space.largest()
    dense = supernet.extract(config).eval()
    with torch.no_grad():
        before = dense(src, tgt)
        supernet.encoder_layers[0].fc1.weight.add_(1.0)
        try:
            assert torch.equal(dense(src, tgt), before)
        finally:
            supernet.encoder_layers[0].fc1.weight.sub_(1.0)


def test_dense_module_does_not_reference_the_supernet(supernet) -> None:
    dense = supernet.extract(supernet.space.smallest())
    assert type(dense).__module__ == "nas.supernets.hat._dense"
    assert isinstance(dense, HATSubnet)
    tree = ast.parse(inspect.getsource(_hat_dense))
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "math", "collections.abc", "typing", "torch",
                        "torch.nn.functional", "nas._supernet"}, imported
    assert all(p.device.type == "cpu" for p in dense.parameters())


def test_architecture_round_trip(supernet) -> None:
    arch = json.loads(json.dumps(supernet.architecture()))
    clone = HATSuperTransformer.from_architecture(arch)
    assert clone.architecture() == supernet.architecture()
    assert {k: v.shape for k, v in clone.state_dict().items()} == {
        k: v.shape for k, v in supernet.state_dict().items()
    }


def test_g2p_max_model_is_small(supernet) -> None:
    count = sum(p.numel() for p in supernet.parameters())
    largest = sum(p.numel() for p in supernet.extract(supernet.space.largest()).parameters())
    print(f"G2P supernet parameters: {count:,} (largest subnet {largest:,})")
    assert 1_000_000 <= count <= 2_500_000
    assert largest == count


def test_hat_fixed_qkv_mode(batch) -> None:
    """HAT's own head semantics: a fixed q/k/v width split into ``heads`` heads."""
    torch.manual_seed(0)
    net = HATSuperTransformer(G2P_SPACE, src_vocab=SRC_VOCAB, tgt_vocab=TGT_VOCAB,
                              qkv_dim=128).eval()
    src, tgt = batch
    config = net.activate(net.space.smallest())
    shape = net.describe(config)
    assert shape.layers[0].dims["head_dim"] == 64 and shape.layers[0].dims["qkv_dim"] == 128
    dense = net.extract(config).eval()
    assert dense.encoder[0].attn.qkv.weight.shape == (3 * 128, 64)
    with torch.no_grad():
        torch.testing.assert_close(dense(src, tgt), net(src, tgt), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="qkv_dim"):
        HATSuperTransformer(G2P_SPACE, src_vocab=8, tgt_vocab=8, qkv_dim=130)


def test_share_all_embeddings(batch) -> None:
    torch.manual_seed(0)
    net = HATSuperTransformer(G2P_SPACE, src_vocab=TGT_VOCAB, tgt_vocab=TGT_VOCAB,
                              share_all_embeddings=True).eval()
    assert net.encoder_embed is net.decoder_embed
    src, tgt = batch
    config = _configs(net.space, n=1, seed=2)[-1]
    net.activate(config)
    with torch.no_grad():
        torch.testing.assert_close(net.extract(config)(src, tgt), net(src, tgt),
                                   atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="share_all_embeddings"):
        HATSuperTransformer(G2P_SPACE, src_vocab=10, tgt_vocab=12, share_all_embeddings=True)


def test_wmt_space_size_is_of_hat_order() -> None:
    """HAT's WMT'14 En-De SuperTransformer: 640 embed, 3072 FFN, 6 + 6 layers, q/k/v 512.

    HAT counts model size without embeddings; its searched WMT'14 En-De SubTransformers
    are ~30-60M parameters and Transformer-Big is 176M, so the largest SubTransformer,
    counted the same way, must fall between those.
    """
    with torch.device("meta"):  # shapes only: no memory, no init time
        net = HATSuperTransformer(WMT_SPACE, src_vocab=32768, tgt_vocab=32768,
                                  max_positions=256, share_all_embeddings=True)
        dense = net.extract(net.space.largest())
    total = sum(p.numel() for p in dense.parameters())
    embeddings = dense.encoder_embed.weight.numel() + dense.decoder_embed.weight.numel()
    body = total - embeddings
    shared = sum(p.numel() for p in net.parameters())
    print(f"WMT largest SubTransformer: {body:,} params without embeddings, "
          f"{shared:,} with one shared 32768-token table")
    assert 60_000_000 <= body <= 176_000_000
    assert shared == body + 32768 * 640
