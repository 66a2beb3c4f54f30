"""OFA's published accuracy predictor and its one-hot encoding of a subnet.

Once-for-All (Cai et al., ICLR 2020, https://arxiv.org/abs/1908.09791) ships an accuracy
predictor for its MobileNetV3 space (``ofa/acc_predictor.pth`` in han-cai/files, used by
OFA's tutorial): an MLP ``128 -> 400 -> 400 -> 400 -> 1`` with ReLU between the linear
layers, saved as the state dict of an ``nn.Sequential`` (keys ``0.``, ``2.``, ``4.``,
``6.`` ``weight``/``bias``). Its output is ImageNet top-1 accuracy as a fraction; no
offset is added (the tutorial's predictor has no ``base_acc``, unlike the later
``ofa/nas/accuracy_predictor`` class, whose checkpoints this module does not read).

The 128 inputs (:class:`OFAOneHotFeatures`), facts from OFA's tutorial code:

- 60 kernel entries: 3 per block slot (20 slots, stage-major), one-hot over (3, 5, 7);
- 60 expand entries: 3 per block slot, one-hot over (3, 4, 6);
- 8 resolution entries: one-hot at ``(r - 112) // 16``, i.e. 112, 128, ..., 224.

A slot beyond its stage's depth is all zeros in both groups; the depths are implied by
which slots are set. The predictor is read with ``torch.load(weights_only=True)`` (no
code runs) and evaluated in numpy: one config costs a few tens of microseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas._files import file_sha256
from nas._messages import one_line
from nas._space import Config, SearchSpace

__all__ = ["OFA_RESOLUTIONS", "OFAAccuracyPredictor", "OFAOneHotFeatures", "OFA_STATE_SHAPES"]

OFA_KERNELS = (3, 5, 7)
OFA_EXPANDS = (3, 4, 6)
OFA_DEPTHS = (2, 3, 4)
OFA_STAGES, OFA_MAX_DEPTH = 5, 4
OFA_RESOLUTIONS = tuple(range(112, 225, 16))
"""The resolutions OFA's one-hot encodes (112..224 in steps of 16)."""
N_FEATURES = 2 * 3 * OFA_STAGES * OFA_MAX_DEPTH + len(OFA_RESOLUTIONS)  # 128
OFA_STATE_SHAPES: dict[str, tuple[int, ...]] = {
    "0.weight": (400, N_FEATURES), "0.bias": (400,),
    "2.weight": (400, 400), "2.bias": (400,),
    "4.weight": (400, 400), "4.bias": (400,),
    "6.weight": (1, 400), "6.bias": (1,),
}
"""The state dict of OFA's tutorial predictor: name -> shape."""


class OFAOneHotFeatures:
    """OFA's 128-float one-hot of a config of an ``ofa-mbv3`` space (module docstring).

    Args:
        space: a space with OFA's MobileNetV3 genes (``resolution``, ``stage{s}.depth``,
            ``stage{s}.block{b}.kernel`` / ``.expand``) whose choices the one-hot covers.

    Raises:
        ValueError: the space does not match the encoding (a missing gene, or a choice
            it cannot encode); the message names what would be right.
    """

    name = "ofa-onehot"

    def __init__(self, space: SearchSpace) -> None:
        check_space(space)
        self.space = space
        self.n_features = N_FEATURES
        self._kernel = {k: i for i, k in enumerate(OFA_KERNELS)}
        self._expand = {e: i for i, e in enumerate(OFA_EXPANDS)}
        self._slots = [(s, b, f"stage{s}.depth", f"stage{s}.block{b}.kernel",
                        f"stage{s}.block{b}.expand")
                       for s in range(OFA_STAGES) for b in range(OFA_MAX_DEPTH)]

    def encode(self, config: Config | Mapping[str, Any]) -> np.ndarray:
        """The (128,) one-hot of one config of :attr:`space`."""
        row = np.zeros(N_FEATURES)
        half = 3 * OFA_STAGES * OFA_MAX_DEPTH
        for i, (_, b, depth, kernel, expand) in enumerate(self._slots):
            if b < int(config[depth]):
                row[3 * i + self._kernel[int(config[kernel])]] = 1.0
                row[half + 3 * i + self._expand[int(config[expand])]] = 1.0
        row[2 * half + (int(config["resolution"]) - OFA_RESOLUTIONS[0]) // 16] = 1.0
        return row

    def transform_configs(self, configs: Sequence[Config | Mapping[str, Any]]) -> np.ndarray:
        """(n, 128) features of configs of :attr:`space`."""
        if not configs:
            return np.zeros((0, N_FEATURES))
        return np.stack([self.encode(self.space.config(c)) for c in configs])

    @staticmethod
    def from_ofa(encoding: Mapping[str, Any]) -> np.ndarray:
        """The one-hot of OFA's own ``{"ks", "e", "d", "r"}`` dict (tests, notebooks)."""
        row = np.zeros(N_FEATURES)
        half = 3 * OFA_STAGES * OFA_MAX_DEPTH
        r = encoding["r"]
        resolution = int(r[0] if isinstance(r, Sequence) else r)
        for i in range(OFA_STAGES * OFA_MAX_DEPTH):
            if i % OFA_MAX_DEPTH < int(encoding["d"][i // OFA_MAX_DEPTH]):
                row[3 * i + OFA_KERNELS.index(int(encoding["ks"][i]))] = 1.0
                row[half + 3 * i + OFA_EXPANDS.index(int(encoding["e"][i]))] = 1.0
        row[2 * half + (resolution - OFA_RESOLUTIONS[0]) // 16] = 1.0
        return row


def check_space(space: SearchSpace) -> None:
    """Refuse a space that OFA's one-hot cannot encode (see :class:`OFAOneHotFeatures`).

    Raises:
        ValueError: naming the space, what is wrong and what would be right.
    """
    wanted = {"resolution": OFA_RESOLUTIONS}
    for s in range(OFA_STAGES):
        wanted[f"stage{s}.depth"] = OFA_DEPTHS
        for b in range(OFA_MAX_DEPTH):
            wanted[f"stage{s}.block{b}.kernel"] = OFA_KERNELS
            wanted[f"stage{s}.block{b}.expand"] = OFA_EXPANDS
    names = set(space.names)
    missing = [n for n in wanted if n not in names]
    extra = sorted(names - set(wanted))
    if missing or extra:
        shown = (missing or extra)[:3]
        raise ValueError(
            f"OFA's one-hot encoder does not match space {space.name!r}: it "
            f"{'lacks' if missing else 'has extra'} gene(s) {shown}; the encoder needs OFA's "
            f"MobileNetV3 space (--space ofa-mbv3: 5 stages x 4 blocks, kernels 3/5/7, "
            f"expand 3/4/6, depths 2/3/4)"
        )
    for name, allowed in wanted.items():
        bad = [c for c in space.gene(name).choices if c not in allowed]
        if bad:
            raise ValueError(
                f"OFA's one-hot encoder does not match space {space.name!r}: gene {name!r} "
                f"has choice(s) {bad[:4]}{' ...' if len(bad) > 4 else ''} it cannot encode; it "
                f"encodes {list(allowed)}"
            )


class OFAAccuracyPredictor:
    """OFA's accuracy predictor (``acc_predictor.pth``), evaluated in numpy.

    A fixed, loaded model: it has ``predict`` but no ``fit``. Build it with
    :meth:`from_file` (or :meth:`from_state_dict`).

    Attributes:
        sha256: of the file it was read from (empty when built from a dict).
        n_features_in_: 128.
    """

    n_features_in_ = N_FEATURES

    def __init__(self, layers: Sequence[tuple[np.ndarray, np.ndarray]], *, sha256: str = "",
                 source: str = "") -> None:
        self.layers_ = [(np.ascontiguousarray(w.T, dtype=np.float64),
                         np.asarray(b, dtype=np.float64)) for w, b in layers]
        self.sha256 = sha256
        self.source = source

    @classmethod
    def from_state_dict(cls, state: Any, *, sha256: str = "", source: str = "the state dict"
                        ) -> OFAAccuracyPredictor:
        """Build from OFA's state dict (name -> tensor or array).

        Raises:
            ValueError: not a dict of exactly :data:`OFA_STATE_SHAPES`; the message names
                the first difference and the expected layout.
        """
        expected = ", ".join(f"{k} {tuple(v)}" for k, v in OFA_STATE_SHAPES.items())
        if not isinstance(state, Mapping):
            raise ValueError(f"{source} is not a state dict (got {type(state).__name__}); "
                             f"OFA's accuracy predictor is a state dict of {expected}")
        arrays: dict[str, np.ndarray] = {}
        for key in state:
            value = state[key]
            if hasattr(value, "detach"):
                value = value.detach().cpu().numpy()
            arrays[str(key)] = np.asarray(value)
        problem = None
        missing = [k for k in OFA_STATE_SHAPES if k not in arrays]
        extra = [k for k in arrays if k not in OFA_STATE_SHAPES]
        if missing:
            problem = f"it lacks {missing[:3]}"
        elif extra:
            problem = f"it has unexpected entries {extra[:3]}"
        else:
            for key, shape in OFA_STATE_SHAPES.items():
                if tuple(arrays[key].shape) != shape:
                    problem = f"{key} has shape {tuple(arrays[key].shape)}, not {shape}"
                    break
                if not np.issubdtype(arrays[key].dtype, np.floating) \
                        or not np.isfinite(arrays[key]).all():
                    problem = f"{key} is not finite floats"
                    break
        if problem:
            raise ValueError(f"{source} is not OFA's accuracy predictor (MLP 128-400-400-400-1):"
                             f" {problem}; expected a state dict of {expected}")
        layers = [(arrays[f"{i}.weight"], arrays[f"{i}.bias"]) for i in (0, 2, 4, 6)]
        return cls(layers, sha256=sha256, source=source)

    @classmethod
    def from_file(cls, path: str | Path) -> OFAAccuracyPredictor:
        """Read OFA's ``acc_predictor.pth`` with ``torch.load(weights_only=True)``.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: a file torch cannot read as weights, or not the expected state dict.
        """
        import torch

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no OFA accuracy predictor file at {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for a file that is not weights
            raise ValueError(f"{path} is not a torch state dict readable with "
                             f"weights_only=True: {one_line(err)[:200]}") from None
        return cls.from_state_dict(state, sha256=file_sha256(path), source=str(path))

    def predict(self, X: Any) -> np.ndarray:
        """Predicted top-1 accuracy (a fraction) of each row of ``X`` (n, 128)."""
        x = np.asarray(X, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != N_FEATURES:
            raise ValueError(f"X must have shape (n, {N_FEATURES}), got {x.shape}")
        for i, (w, b) in enumerate(self.layers_):
            x = x @ w + b
            if i < len(self.layers_) - 1:
                np.maximum(x, 0.0, out=x)
        return x[:, 0]
