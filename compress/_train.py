"""The short training loop compression methods end with (distillation after pruning or
subcloning): AdamW on a loss of the model and a batch."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from nas._progress import progress_bar


def train(
    model: nn.Module,
    loss: Callable[[nn.Module, tuple[Tensor, ...]], Tensor],
    next_batch: Callable[[], tuple[Tensor, ...]],
    *,
    steps: int,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    progress: bool = False,
) -> list[float]:
    """AdamW for ``steps`` steps (the paper's "then train"); returns the loss per step.

    Raises:
        ValueError: ``steps`` below 0 or ``lr`` not positive.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    model.train()
    history = []
    for _ in progress_bar(range(steps), desc="train", disable=not progress):
        value = loss(model, next_batch())
        optimiser.zero_grad(set_to_none=True)
        value.backward()
        optimiser.step()
        history.append(float(value.detach()))
    return history
