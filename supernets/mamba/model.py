"""A small Mamba-2 byte-level language model in pure PyTorch (subnet family ``mamba-lm``).

Layout (Dao & Gu, "Transformers are SSMs", ICML 2024; the facts checked against
``mamba_ssm/modules/mamba2_simple.py`` of state-spaces/mamba): byte embedding, pre-norm
residual blocks ``x + mixer(rmsnorm(x))``, a final RMSNorm and an untied LM head. The
mixer projects the input once into ``[z, x, B, C, dt]`` (widths ``d_inner, d_inner,
ngroups * d_state, ngroups * d_state, nheads``), runs a causal depthwise conv1d with SiLU
over ``[x, B, C]``, the selective scan with one scalar ``A = -exp(A_log)`` per head and
``dt = softplus(dt + dt_bias)``, adds the ``D`` skip (``D * x``), applies the gated
RMSNorm ``norm(y * silu(z))`` and projects back with ``out_proj``.

Removed structures are part of the architecture (``blocks``, one kind per block, so
``MambaLM(**model.subnet_config())`` rebuilds a pruned model from its JSON alone):

- ``"full"``: the block above;
- ``"no_ssm"``: the block with its SSM removed as Mamba-Shedder removes it (official
  code: ``Mamba-Shedder/patches/mamba-62db608.patch``, ``Mamba2.forward`` with
  ``mask_ssm``, sets ``y = x``, the scan's input, skipping the scan *and* the ``D`` skip).
  What remains: norm, ``in_proj`` rows of ``z`` and ``x`` only, the conv1d channels of
  ``x`` only (+ SiLU), the gated RMSNorm ``norm(x * silu(z))`` and ``out_proj``;
  ``A_log``, ``dt_bias``, ``D`` and the ``B``/``C``/``dt`` projections and conv channels
  are gone (the official extraction deletes only ``D`` and ``dt_bias``; the rest is dead
  weight there, which this layout drops);
- ``"absent"``: the whole block removed (official ``Block.forward`` with
  ``mask_mamba_block`` returns its input): no parameters, the residual stream passes
  through. The place is kept so that block ``i`` keeps its index after extraction.

Each present block also carries run-time flags (``mask_block``, ``mixer.mask_ssm``) that
make it compute as if removed without copying the model (``nas.compress._shedder``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas._supernet import SUBNET_BUILDERS
from nas.supernets.mamba.ssd import ssd_chunked, ssd_recurrent
from nas.supernets.tasks._lm import VOCAB_SIZE

__all__ = [
    "ABSENT",
    "BLOCK_KINDS",
    "FAMILY",
    "FULL",
    "NO_SSM",
    "SCANS",
    "AbsentBlock",
    "GatedRMSNorm",
    "Mamba2Mixer",
    "MambaBlock",
    "MambaLM",
]

FAMILY = "mamba-lm"
FULL, NO_SSM, ABSENT = "full", "no_ssm", "absent"
BLOCK_KINDS = (FULL, NO_SSM, ABSENT)
"""The kinds of block a ``blocks`` list may name."""
SCANS = ("chunked", "recurrent")
"""``chunked``: the SSD block decomposition (default); ``recurrent``: the step-by-step
oracle."""
A_INIT_RANGE = (1.0, 16.0)
DT_RANGE = (1e-3, 1e-1)
DT_FLOOR = 1e-4
"""Initialisation as ``Mamba2Simple``: ``A`` uniform in ``A_INIT_RANGE``, the initial
``dt`` log-uniform in ``DT_RANGE`` (at least ``DT_FLOOR``), ``D`` ones."""


class GatedRMSNorm(nn.Module):
    """``rmsnorm(y * silu(z)) * weight`` over the last dim (Mamba-2's gate-then-norm)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        h = y * F.silu(z)
        return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Mamba2Mixer(nn.Module):
    """The Mamba-2 mixer, with (``ssm=True``) or without its selective SSM.

    Args:
        d_model: the residual width.
        d_state: ``N``, the state size per head.
        d_conv: the causal conv1d's kernel width.
        expand: ``d_inner = expand * d_model``.
        headdim: ``P``, channels per head (divides ``d_inner``).
        ngroups: groups sharing ``B`` and ``C`` (divides the heads).
        chunk_size: the SSD scan's chunk length.
        ssm: build the SSM (``A_log``, ``dt_bias``, ``D``, the ``B``/``C``/``dt``
            projections and conv channels); without it the mixer is what
            Mamba-Shedder's SSM removal leaves (module docstring).
    """

    def __init__(self, *, d_model: int, d_state: int, d_conv: int, expand: int, headdim: int,
                 ngroups: int, chunk_size: int, ssm: bool = True) -> None:
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state, self.headdim, self.ngroups = d_state, headdim, ngroups
        self.nheads = self.d_inner // headdim
        self.chunk_size = chunk_size
        self.has_ssm = ssm
        self.mask_ssm = False
        """Run-time flag: compute as if the SSM were removed (the scan and ``D`` skipped)."""
        bc = 2 * ngroups * d_state if ssm else 0
        # [z, x, B, C, dt] as Mamba2Simple orders them; without the SSM only [z, x].
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + bc + (self.nheads if ssm else 0),
                                 bias=False)
        conv_dim = self.d_inner + bc
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim, padding=d_conv - 1)
        if ssm:
            low, high = math.log(DT_RANGE[0]), math.log(DT_RANGE[1])
            dt = torch.exp(torch.rand(self.nheads) * (high - low) + low).clamp(min=DT_FLOOR)
            self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
            a = torch.empty(self.nheads).uniform_(*A_INIT_RANGE)
            self.A_log = nn.Parameter(torch.log(a))
            self.D = nn.Parameter(torch.ones(self.nheads))
        self.norm = GatedRMSNorm(self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, u: Tensor, *, scan: str = "chunked") -> Tensor:
        b, t, _ = u.shape  # (B, T, C)
        zxbcdt = self.in_proj(u)  # (B, T, d_in_proj)
        z, xbc = zxbcdt[..., :self.d_inner], zxbcdt[..., self.d_inner:]
        if self.has_ssm:
            xbc, dt = xbc[..., :-self.nheads], xbc[..., -self.nheads:]
        xbc = F.silu(self.conv1d(xbc.transpose(1, 2))[..., :t].transpose(1, 2))  # causal
        x = xbc[..., :self.d_inner]  # (B, T, d_inner)
        if not self.has_ssm or self.mask_ssm:
            return self.out_proj(self.norm(x, z))  # y = x: no scan, no D skip
        n, g = self.d_state, self.ngroups
        B = xbc[..., self.d_inner:self.d_inner + g * n].reshape(b, t, g, n)
        C = xbc[..., self.d_inner + g * n:].reshape(b, t, g, n)
        per_group = self.nheads // g
        B = B.repeat_interleave(per_group, dim=2)  # (B, T, H, N)
        C = C.repeat_interleave(per_group, dim=2)
        dt = F.softplus(dt + self.dt_bias)  # (B, T, H)
        A = -torch.exp(self.A_log.float())  # (H,)
        xh = x.reshape(b, t, self.nheads, self.headdim)  # (B, T, H, P)
        if scan == "chunked":
            y, _ = ssd_chunked(xh, dt, A, B, C, chunk_size=self.chunk_size)
        elif scan == "recurrent":
            y, _ = ssd_recurrent(xh, dt, A, B, C)
        else:
            raise ValueError(f"scan must be one of {list(SCANS)}, got {scan!r}")
        y = y + self.D[:, None] * xh  # the D skip
        return self.out_proj(self.norm(y.reshape(b, t, self.d_inner), z))

    def without_ssm(self) -> Mamba2Mixer:
        """A new mixer with the SSM physically removed and the remaining weights copied:
        its output equals this mixer's with ``mask_ssm`` set."""
        d_conv = self.conv1d.kernel_size[0]
        new = Mamba2Mixer(d_model=self.out_proj.out_features, d_state=self.d_state,
                          d_conv=d_conv, expand=self.d_inner // self.out_proj.out_features,
                          headdim=self.headdim, ngroups=self.ngroups,
                          chunk_size=self.chunk_size, ssm=False)
        with torch.no_grad():
            new.in_proj.weight.copy_(self.in_proj.weight[:2 * self.d_inner])  # z, x rows
            new.conv1d.weight.copy_(self.conv1d.weight[:self.d_inner])  # x channels
            new.conv1d.bias.copy_(self.conv1d.bias[:self.d_inner])
            new.norm.weight.copy_(self.norm.weight)
            new.out_proj.weight.copy_(self.out_proj.weight)
        return new.to(self.out_proj.weight)


class MambaBlock(nn.Module):
    """A pre-norm residual block ``x + mixer(rmsnorm(x))``; ``mask_block`` makes it the
    identity (as if removed)."""

    def __init__(self, d_model: int, mixer: Mamba2Mixer) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(d_model, eps=1e-5)
        self.mixer = mixer
        self.mask_block = False
        """Run-time flag: compute as if the block were removed (return the input)."""

    def forward(self, x: Tensor, *, scan: str = "chunked") -> Tensor:
        if self.mask_block:
            return x
        return x + self.mixer(self.norm(x), scan=scan)


class AbsentBlock(nn.Module):
    """The place of a removed block: no parameters, returns its input."""

    def forward(self, x: Tensor, *, scan: str = "chunked") -> Tensor:
        return x


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@SUBNET_BUILDERS.register(FAMILY, description="Mamba-2 byte LM (blocks and SSMs removable)")
class MambaLM(nn.Module):
    """A Mamba-2 language model over bytes: ``model(tokens)`` -> next-token logits.

    Args:
        blocks: one kind per block (its length is the depth): ``"full"``, ``"no_ssm"``
            (SSM removed) or ``"absent"`` (block removed); see the module docstring.
        vocab_size: token ids ``0 .. vocab_size - 1`` (256 for bytes).
        d_model: the residual width.
        d_state: the SSM state size per head (``N``).
        d_conv: the causal conv1d's kernel width.
        expand: ``d_inner = expand * d_model``.
        headdim: channels per head (divides ``d_inner``).
        ngroups: groups of heads sharing ``B`` and ``C`` (divides the number of heads).
        chunk_size: the SSD scan's chunk length (any input length works).

    Raises:
        ValueError: a non-positive size, sizes that do not divide, an empty ``blocks``, an
            unknown block kind or every block absent.
    """

    def __init__(self, *, blocks: Sequence[str], vocab_size: int = VOCAB_SIZE,
                 d_model: int = 64, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 headdim: int = 16, ngroups: int = 1, chunk_size: int = 64) -> None:
        super().__init__()
        sizes = {"vocab_size": vocab_size, "d_model": d_model, "d_state": d_state,
                 "d_conv": d_conv, "expand": expand, "headdim": headdim, "ngroups": ngroups,
                 "chunk_size": chunk_size}
        for name, value in sizes.items():
            _check_positive(name, value)
        d_inner = expand * d_model
        if d_inner % headdim:
            raise ValueError(f"expand * d_model ({d_inner}) must be a multiple of headdim "
                             f"({headdim})")
        if (d_inner // headdim) % ngroups:
            raise ValueError(f"the number of heads ({d_inner // headdim}) must be a multiple "
                             f"of ngroups ({ngroups})")
        if isinstance(blocks, str) or not isinstance(blocks, Sequence):
            raise ValueError(f"blocks must be a list of block kinds, got {blocks!r:.80}")
        kinds = list(blocks)
        if not kinds:
            raise ValueError("blocks must name at least one block, got []")
        for i, kind in enumerate(kinds):
            if kind not in BLOCK_KINDS:
                raise ValueError(f"blocks[{i}] must be one of {list(BLOCK_KINDS)}, "
                                 f"got {kind!r:.80}")
        if all(kind == ABSENT for kind in kinds):
            raise ValueError("blocks must keep at least one block that is not 'absent'")
        self.sizes = sizes
        self.kinds = kinds
        mixer = dict(d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand,
                     headdim=headdim, ngroups=ngroups, chunk_size=chunk_size)
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(
            AbsentBlock() if kind == ABSENT
            else MambaBlock(d_model, Mamba2Mixer(**mixer, ssm=kind == FULL))
            for kind in kinds
        )
        self.norm_f = nn.RMSNorm(d_model, eps=1e-5)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, tokens: Tensor, *, scan: str = "chunked") -> Tensor:
        """Logits ``(B, T, vocab)`` of int64 token ids ``(B, T)`` (``scan``: one of
        :data:`SCANS`; a model without SSMs ignores it)."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (batch, length), got shape {tuple(tokens.shape)}")
        x = self.embedding(tokens)  # (B, T, C)
        for block in self.blocks:
            x = block(x, scan=scan)
        return self.lm_head(self.norm_f(x))  # (B, T, V)

    def subnet_config(self) -> dict[str, Any]:
        """The JSON-able constructor arguments: ``MambaLM(**subnet_config())``."""
        return {**self.sizes, "blocks": list(self.kinds)}
