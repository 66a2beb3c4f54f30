"""A small fully connected network in torch, trained full-batch with Adam.

Weights are saved as safetensors; initialisation and training draw from the model's own
seeded RNG (the global torch RNG is forked, not disturbed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nas.predictors._base import PREDICTORS, Predictor


def _network(n_in: int, hidden: tuple[int, ...]) -> Any:
    from torch import nn

    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers).double()


@PREDICTORS.register("mlp", description="small torch MLP, no uncertainty")
class MLPPredictor(Predictor):
    """ReLU MLP ``d -> hidden... -> 1`` with MSE loss and weight decay.

    Args:
        hidden: widths of the hidden layers.
        epochs: full-batch Adam steps.
        lr: Adam's learning rate.
        weight_decay: L2 penalty (AdamW-style decoupled decay).
        log_target: see :class:`~nas.predictors.Predictor`.
        seed: seeds the initial weights.
    """

    name = "mlp"

    def __init__(self, *, hidden: tuple[int, ...] = (64, 64), epochs: int = 400,
                 lr: float = 0.01, weight_decay: float = 1e-3, log_target: bool = False,
                 seed: int = 0) -> None:
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.log_target = log_target
        self.seed = seed

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = _network(X.shape[1], tuple(int(h) for h in self.hidden))
        xt, yt = torch.from_numpy(X), torch.from_numpy(y)[:, None]  # (n, d), (n, 1)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        for _ in range(self.epochs):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(xt), yt)
            loss.backward()
            opt.step()
        self.net_ = net.eval()

    def _predict(self, X: np.ndarray, return_std: bool) -> tuple[np.ndarray, None]:
        import torch

        with torch.no_grad():
            return self.net_(torch.from_numpy(X))[:, 0].numpy().copy(), None

    def _state(self, directory: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {}, {f"net.{k}": v.numpy() for k, v in self.net_.state_dict().items()}

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                   directory: Path) -> None:
        import torch

        net = _network(self.n_features_in_, tuple(int(h) for h in self.hidden))
        state = {k[len("net."):]: torch.from_numpy(v) for k, v in arrays.items()
                 if k.startswith("net.")}
        try:
            net.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"MLP weights do not match the saved shape: {err}") from None
        self.net_ = net.eval()
