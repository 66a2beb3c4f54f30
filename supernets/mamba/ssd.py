"""The selective scan of Mamba-2 with a scalar decay per head: chunked (SSD) and recurrent.

Both compute, for every head ``h`` with decay rate ``A[h] < 0`` and positive step sizes
``dt``, the state-space recurrence (state ``(P, N)`` per head, zero at ``t = 0``)::

    state_t = exp(dt_t * A) * state_{t-1} + dt_t * x_t B_t^T
    y_t     = state_t C_t

:func:`ssd_chunked` is the block decomposition of Dao & Gu, "Transformers are SSMs"
(ICML 2024, the SSD algorithm): the sequence is cut into chunks of ``chunk_size`` steps;
within a chunk the output is a masked, decay-weighted quadratic form (attention-like);
across chunks only the ``(P, N)`` state at each chunk boundary is passed on, by a
recurrence over chunks. It is what the model runs. :func:`ssd_recurrent` steps through
time one position at a time; it is slow and serves as the test oracle.

Shapes: ``x`` (batch, length, heads, P); ``dt`` (batch, length, heads); ``A`` (heads,);
``B``, ``C`` (batch, length, heads, N) (groups already broadcast to heads). Both return
``y`` (batch, length, heads, P) and the final state (batch, heads, P, N). The ``D`` skip
is the caller's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ssd_chunked", "ssd_recurrent"]


def ssd_chunked(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, *, chunk_size: int
) -> tuple[Tensor, Tensor]:
    """The scan by chunks (intra-chunk quadratic form + inter-chunk state passing).

    A length that is not a multiple of ``chunk_size`` is padded with steps of ``dt = 0``
    (decay 1, no input), which leave the state unchanged; their outputs are dropped.

    Raises:
        ValueError: ``chunk_size`` not a positive integer.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    batch, length, heads, p = x.shape
    n = B.shape[-1]
    pad = (-length) % chunk_size
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
    chunks, q = (length + pad) // chunk_size, chunk_size
    xs = (x * dt[..., None]).reshape(batch, chunks, q, heads, p)  # input dt_t * x_t
    Bc = B.reshape(batch, chunks, q, heads, n)
    Cc = C.reshape(batch, chunks, q, heads, n)
    log_decay = (dt * A).reshape(batch, chunks, q, heads).permute(0, 3, 1, 2)  # (b, h, c, q)
    cum = log_decay.cumsum(dim=-1)  # log of the decay from the chunk's start to step i

    # 1. Within a chunk: y_i = sum_{j <= i} (C_i . B_j) exp(cum_i - cum_j) xs_j.
    gaps = cum[..., :, None] - cum[..., None, :]  # (b, h, c, i, j)
    causal = torch.ones(q, q, dtype=torch.bool, device=x.device).tril()
    decay = torch.exp(gaps.masked_fill(~causal, float("-inf")))  # 0 above the diagonal
    scores = torch.einsum("bcihn,bcjhn->bhcij", Cc, Bc) * decay
    y_intra = torch.einsum("bhcij,bcjhp->bcihp", scores, xs)

    # 2. What each chunk adds to the state at its own end.
    to_end = torch.exp(cum[..., -1:] - cum)  # (b, h, c, q)
    added = torch.einsum("bcjhn,bhcj,bcjhp->bchpn", Bc, to_end, xs)  # (b, c, h, p, n)

    # 3. State passing across chunks: the state entering each chunk.
    chunk_decay = torch.exp(cum[..., -1])  # (b, h, c)
    state = x.new_zeros(batch, heads, p, n)
    entering = []
    for c in range(chunks):
        entering.append(state)
        state = chunk_decay[:, :, c, None, None] * state + added[:, c]
    starts = torch.stack(entering, dim=1)  # (b, c, h, p, n)

    # 4. The entering state, decayed to step i, read out by C_i.
    y_inter = torch.einsum("bcihn,bchpn,bhci->bcihp", Cc, starts, torch.exp(cum))
    y = (y_intra + y_inter).reshape(batch, chunks * q, heads, p)[:, :length]
    return y, state


def ssd_recurrent(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """The same scan one step at a time (the oracle for :func:`ssd_chunked`)."""
    batch, length, heads, p = x.shape
    state = x.new_zeros(batch, heads, p, B.shape[-1])
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * A)  # (b, h)
        inflow = (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]  # (b, h, p, n)
        state = decay[..., None, None] * state + inflow
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C[:, t]))
    return torch.stack(ys, dim=1), state
