"""The Mamba-2 byte LM: chunked scan against the recurrent oracle, removable structures,
config round trips and export/reload in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nas._supernet import SUBNET_BUILDERS
from nas.supernets._export import save_subnet
from nas.supernets.mamba import (
    FAMILY,
    AbsentBlock,
    Mamba2Mixer,
    MambaBlock,
    MambaLM,
    ssd_chunked,
    ssd_recurrent,
)

TINY = dict(d_model=16, d_state=8, d_conv=4, expand=2, headdim=8, chunk_size=8)


def tiny(blocks: list[str], **sizes: int) -> MambaLM:
    torch.manual_seed(0)
    return MambaLM(blocks=blocks, **{**TINY, **sizes}).eval()


def scan_inputs(length: int, *, batch: int = 2, heads: int = 3, p: int = 4, n: int = 5,
                seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, heads, p, generator=gen)
    dt = F.softplus(torch.randn(batch, length, heads, generator=gen) - 1.0)
    A = -torch.exp(torch.rand(heads, generator=gen) * 2.8)  # rates in [1, 16]
    B = torch.randn(batch, length, heads, n, generator=gen)
    C = torch.randn(batch, length, heads, n, generator=gen)
    return x, dt, A, B, C


@pytest.mark.parametrize(("length", "chunk"), [(1, 8), (7, 8), (37, 8), (64, 16), (50, 64),
                                               (129, 32)])
def test_chunked_scan_equals_recurrent_scan(length: int, chunk: int) -> None:
    x, dt, A, B, C = scan_inputs(length, seed=length)
    y_chunk, state_chunk = ssd_chunked(x, dt, A, B, C, chunk_size=chunk)
    y_rec, state_rec = ssd_recurrent(x, dt, A, B, C)
    assert y_chunk.shape == x.shape
    torch.testing.assert_close(y_chunk, y_rec, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(state_chunk, state_rec, atol=1e-4, rtol=1e-4)


def test_chunked_scan_is_stable_with_strong_decay() -> None:
    x, dt, A, B, C = scan_inputs(45, seed=3)
    y_chunk, _ = ssd_chunked(x, dt * 20.0, A, B, C, chunk_size=16)  # decays to exp(-hundreds)
    y_rec, _ = ssd_recurrent(x, dt * 20.0, A, B, C)
    assert torch.isfinite(y_chunk).all()
    torch.testing.assert_close(y_chunk, y_rec, atol=1e-4, rtol=1e-4)


def test_chunked_scan_rejects_bad_chunk_size() -> None:
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        ssd_chunked(*scan_inputs(4), chunk_size=0)


@pytest.mark.parametrize("length", [5, 19, 24])
def test_model_chunked_equals_recurrent(length: int) -> None:
    model = tiny(["full", "no_ssm", "full"], ngroups=2)
    tokens = torch.randint(0, 256, (2, length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(tokens)
        oracle = model(tokens, scan="recurrent")
    assert logits.shape == (2, length, 256)
    torch.testing.assert_close(logits, oracle, atol=1e-4, rtol=1e-4)


def test_model_is_causal_and_trains() -> None:
    model = tiny(["full", "full"]).train()
    tokens = torch.randint(0, 256, (1, 20), generator=torch.Generator().manual_seed(2))
    changed = tokens.clone()
    changed[0, 12:] = (changed[0, 12:] + 1) % 256
    with torch.no_grad():
        torch.testing.assert_close(model(tokens)[:, :12], model(changed)[:, :12])
    loss = F.cross_entropy(model(tokens)[0, :-1], tokens[0, 1:])
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.blocks[0].mixer.A_log.grad.abs().sum() > 0


def test_removed_structures_hold_no_parameters() -> None:
    model = tiny(["full", "no_ssm", "absent"])
    full, no_ssm, absent = model.blocks
    assert isinstance(full, MambaBlock) and isinstance(absent, AbsentBlock)
    assert not list(absent.parameters())
    names = {name for name, _ in no_ssm.named_parameters()}
    assert names == {"norm.weight", "mixer.in_proj.weight", "mixer.conv1d.weight",
                     "mixer.conv1d.bias", "mixer.norm.weight", "mixer.out_proj.weight"}
    d_inner = 2 * TINY["d_model"]
    assert no_ssm.mixer.in_proj.out_features == 2 * d_inner  # z and x only
    assert no_ssm.mixer.conv1d.in_channels == d_inner  # x only
    heads = d_inner // TINY["headdim"]
    assert full.mixer.in_proj.out_features == 2 * d_inner + 2 * TINY["d_state"] + heads
    assert {"A_log", "D", "dt_bias"} <= {n for n, _ in full.mixer.named_parameters()}


def test_masked_ssm_equals_physically_removed_ssm() -> None:
    torch.manual_seed(0)
    mixer = Mamba2Mixer(d_model=16, d_state=8, d_conv=4, expand=2, headdim=8, ngroups=1,
                        chunk_size=8)
    u = torch.randn(2, 11, 16)
    mixer.mask_ssm = True
    with torch.no_grad():
        masked = mixer(u)
        removed = mixer.without_ssm()(u)
        # what remains: norm(x * silu(z)) of the conv'd x, projected; no scan, no D
        zx = mixer.in_proj(u)
        z, x = zx[..., :32], zx[..., 32:64]
        conv = F.conv1d(x.transpose(1, 2), mixer.conv1d.weight[:32], mixer.conv1d.bias[:32],
                        padding=3, groups=32)[..., :11]
        by_hand = mixer.out_proj(mixer.norm(F.silu(conv.transpose(1, 2)), z))
    torch.testing.assert_close(masked, removed, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(masked, by_hand, atol=1e-6, rtol=1e-6)


def test_masked_block_is_identity() -> None:
    block = tiny(["full"]).blocks[0]
    x = torch.randn(2, 9, 16)
    block.mask_block = True
    assert torch.equal(block(x), x)


def test_config_is_json_and_rebuilds() -> None:
    model = tiny(["full", "absent", "no_ssm"])
    config = json.loads(json.dumps(model.subnet_config()))
    rebuilt = SUBNET_BUILDERS.entry(FAMILY).factory(**config)
    rebuilt.load_state_dict(model.state_dict())
    tokens = torch.randint(0, 256, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(tokens), model(tokens))
    assert rebuilt.subnet_config() == config


@pytest.mark.parametrize(("change", "message"), [
    ({"blocks": []}, "at least one block"),
    ({"blocks": ["full", "gone"]}, r"blocks\[1\] must be one of"),
    ({"blocks": ["absent", "absent"]}, "not 'absent'"),
    ({"blocks": "full"}, "list of block kinds"),
    ({"headdim": 12}, "multiple of headdim"),
    ({"ngroups": 3}, "multiple of ngroups"),
    ({"d_model": 0}, "d_model must be a positive integer"),
    ({"chunk_size": True}, "chunk_size must be a positive integer"),
])
def test_bad_configs_raise_one_line(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        MambaLM(**{**TINY, "blocks": ["full"], **change})
    assert "\n" not in str(info.value)


def test_unknown_scan_raises() -> None:
    with pytest.raises(ValueError, match="scan must be one of"):
        tiny(["full"])(torch.zeros(1, 3, dtype=torch.long), scan="parallel")


RELOAD = textwrap.dedent("""
    import sys, torch
    import nas.supernets.mamba  # registers the family (until nas.supernets imports it)
    from nas.supernets._export import load_subnet
    model = load_subnet(sys.argv[1])
    tokens = torch.load(sys.argv[2])
    with torch.no_grad():
        torch.save(model(tokens), sys.argv[3])
""")


def reload_in_fresh_process(folder: Path, tokens: torch.Tensor) -> torch.Tensor:
    """The logits of ``tokens`` from the export in ``folder``, loaded by a new Python."""
    torch.save(tokens, folder / "tokens.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", RELOAD, str(folder / "export"),
                    str(folder / "tokens.pt"), str(folder / "logits.pt")],
                   check=True, env=env, capture_output=True, timeout=120)
    return torch.load(folder / "logits.pt")


def test_export_reloads_in_a_fresh_process(tmp_path: Path) -> None:
    model = tiny(["full", "no_ssm", "absent", "full"])
    save_subnet(model, tmp_path / "export", family=FAMILY)
    tokens = torch.randint(0, 256, (2, 13))
    with torch.no_grad():
        expected = model(tokens)
    torch.testing.assert_close(reload_in_fresh_process(tmp_path, tokens), expected)
