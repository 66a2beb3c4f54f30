"""The predictor contract, its registry and its pickle-free save format.

A :class:`Predictor` maps a float feature matrix ``X`` (n, d) to one target per row
(accuracy, latency in ms, memory in MiB). It behaves like a scikit-learn estimator:
``__init__`` stores keyword arguments only, :meth:`Predictor.fit` returns ``self``,
fitted state ends in ``_`` and every model seeds its own RNG from ``seed``.

The public methods validate and scale; subclasses implement the protected hooks
``_fit`` / ``_predict`` on standardised features and targets, and ``_state`` /
``_set_state`` for saving. A saved predictor is a directory holding ``predictor.json``
(model name, hyper-parameters, scaling, small state) and ``arrays.safetensors`` (numpy
arrays), plus whatever native, code-free format a model has (XGBoost's UBJSON). Nothing
we load runs pickled code.

Uncertainty: models with ``has_std = True`` (``gp``, ``ensemble``, and ``auto`` when it
picked one of those) return ``(mean, std)`` from ``predict(X, return_std=True)``; the
others raise :class:`NoUncertaintyError` rather than return a made-up zero.
"""

from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Literal, overload

import numpy as np

from nas._registry import Registry

FORMAT = "nas-predictor"
FORMAT_VERSION = 1
META_FILE = "predictor.json"
ARRAYS_FILE = "arrays.safetensors"

PREDICTORS: Registry[Predictor] = Registry("predictor", plugins=("nas.predictors",))
"""Predictor classes by name: ``ridge``, ``quadratic``, ``svr``, ``xgb``, ``mlp``, ``gp``,
``ensemble``, ``auto``."""


class NoUncertaintyError(ValueError):
    """``predict(..., return_std=True)`` on a model that has no uncertainty estimate."""


def check_X(X: Any, *, n_features: int | None = None, name: str = "X") -> np.ndarray:
    """A finite float matrix (n, d) with n >= 1; a 1-D input is one feature per row."""
    arr = np.asarray(X, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (samples, features), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} has no rows")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise ValueError(f"{name} has {bad} row(s) with NaN or inf")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{name} has {arr.shape[1]} features, the predictor was fitted on {n_features}"
        )
    return arr


def check_y(y: Any, n: int) -> np.ndarray:
    arr = np.asarray(y, dtype=float)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"y must be 1-D (one target per row), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"X has {n} rows but y has {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise ValueError(f"y has {int((~np.isfinite(arr)).sum())} NaN or inf value(s)")
    return arr


class Predictor(ABC):
    """A regressor from features to one target, with optional uncertainty.

    Args (shared by every model, keyword-only in subclasses):
        log_target: fit ``log(y)`` instead of ``y`` (latencies and memory are positive and
            spread over decades, so errors are relative rather than absolute); requires
            ``y > 0``.
        seed: seeds the model's own RNG (bootstrap, initialisation, restarts).

    Thread safety: a fitted predictor's ``predict`` does not mutate it; ``fit`` does.
    """

    name: ClassVar[str] = ""
    has_std: ClassVar[bool] = False
    # ``auto`` delegates to a predictor that scales by itself; it opts out of ours.
    _scales: ClassVar[bool] = True

    log_target: bool
    seed: int

    # -- parameters (scikit-learn style) -------------------------------------------------

    def get_params(self) -> dict[str, Any]:
        """The ``__init__`` arguments, read back from the attributes of the same name."""
        sig = inspect.signature(type(self).__init__)
        return {
            p: _jsonable(getattr(self, p))
            for p in sig.parameters
            if p != "self" and sig.parameters[p].kind is not inspect.Parameter.VAR_KEYWORD
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- fit / predict -------------------------------------------------------------------

    def fit(self, X: Any, y: Any) -> Predictor:
        """Fit on features ``X`` (n, d) and targets ``y`` (n,); returns ``self``.

        Raises:
            ValueError: wrong shapes, NaN/inf, fewer than 2 rows, or ``y <= 0`` with
                ``log_target``.
        """
        X = check_X(X)
        y = check_y(y, X.shape[0])
        if X.shape[0] < 2:
            raise ValueError(f"fit needs at least 2 rows, got {X.shape[0]}")
        self.n_features_in_ = X.shape[1]
        if self._scales:
            if self.log_target:
                if (y <= 0).any():
                    raise ValueError("log_target=True needs every y > 0")
                y = np.log(y)
            self.x_mean_ = X.mean(axis=0)
            scale = X.std(axis=0)
            self.x_scale_ = np.where(scale > 0, scale, 1.0)
            self.y_mean_ = float(y.mean())
            self.y_scale_ = float(y.std()) or 1.0
        else:
            self.x_mean_ = np.zeros(X.shape[1])
            self.x_scale_ = np.ones(X.shape[1])
            self.y_mean_, self.y_scale_ = 0.0, 1.0
        self._fit((X - self.x_mean_) / self.x_scale_, (y - self.y_mean_) / self.y_scale_)
        return self

    @overload
    def predict(self, X: Any, return_std: Literal[False] = ...) -> np.ndarray: ...
    @overload
    def predict(self, X: Any, return_std: Literal[True]) -> tuple[np.ndarray, np.ndarray]: ...

    def predict(
        self, X: Any, return_std: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Predicted targets (n,), and their standard deviations (n,) with ``return_std``.

        With ``log_target`` the mean is ``exp`` of the log-space mean (the median) and the
        std is propagated to first order (``mean * std_log``).

        Raises:
            NoUncertaintyError: ``return_std=True`` on a model with ``has_std`` False.
            ValueError: unfitted, or ``X`` with the wrong number of features or NaN.
        """
        if not hasattr(self, "n_features_in_"):
            raise ValueError(f"{type(self).__name__} is not fitted; call fit(X, y) first")
        if return_std and not self.has_std:
            raise NoUncertaintyError(
                f"predictor {self.name!r} has no uncertainty; use gp, ensemble or auto "
                "with one of them for return_std=True"
            )
        X = check_X(X, n_features=self.n_features_in_)
        mean, std = self._predict((X - self.x_mean_) / self.x_scale_, return_std)
        mean = mean * self.y_scale_ + self.y_mean_
        if self._scales and self.log_target:
            mean = np.exp(mean)
        if not return_std:
            return mean
        assert std is not None, "a has_std model returned no std"
        std = std * self.y_scale_
        if self._scales and self.log_target:
            std = mean * std
        return mean, std

    @abstractmethod
    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        """Fit on standardised features (n, d) and standardised targets (n,)."""

    @abstractmethod
    def _predict(self, X: np.ndarray, return_std: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Standardised mean (n,) and, if asked and available, std (n,)."""

    # -- save / load ---------------------------------------------------------------------

    def _state(self, directory: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The fitted state: a JSON-able dict and named numpy arrays. ``directory`` is
        where a model with its own file format may write it."""
        return {}, {}

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                   directory: Path) -> None:
        """Inverse of :meth:`_state` (a stateless model has nothing to restore)."""
        return None

    def save(self, path: str | Path) -> Path:
        """Write the fitted predictor to the directory ``path`` (created); returns it."""
        from safetensors.numpy import save_file

        if not hasattr(self, "n_features_in_"):
            raise ValueError(f"{type(self).__name__} is not fitted; nothing to save")
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        state, arrays = self._state(directory)
        arrays = {"x_mean": self.x_mean_, "x_scale": self.x_scale_, **arrays}
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model": self.name,
            "params": self.get_params(),
            "n_features_in": self.n_features_in_,
            "y_mean": self.y_mean_,
            "y_scale": self.y_scale_,
            "state": state,
        }
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                  str(directory / ARRAYS_FILE))
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, path: str | Path) -> Predictor:
        """Read a predictor written by :meth:`save` (any model, whatever ``cls`` is).

        Raises:
            FileNotFoundError: no predictor at ``path``.
            ValueError: the files are not a readable predictor.
        """
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        directory = Path(path)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"no predictor at {directory} (missing {META_FILE})")
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{meta_path} is not a predictor file: {err}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path} is not a predictor file (format != {FORMAT!r})")
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path} has format version {meta.get('version')}, "
                             f"this code reads {FORMAT_VERSION}")
        try:
            arrays = load_file(str(directory / ARRAYS_FILE))
        except (FileNotFoundError, SafetensorError, OSError) as err:
            raise ValueError(f"cannot read {directory / ARRAYS_FILE}: {err}") from None
        try:
            klass = PREDICTORS.entry(meta["model"]).factory
            model: Predictor = klass(**meta["params"])
            model.n_features_in_ = int(meta["n_features_in"])
            model.y_mean_ = float(meta["y_mean"])
            model.y_scale_ = float(meta["y_scale"])
            model.x_mean_ = arrays.pop("x_mean")
            model.x_scale_ = arrays.pop("x_scale")
            model._set_state(meta["state"], arrays, directory)
        except (KeyError, TypeError) as err:
            raise ValueError(f"{meta_path} is not a readable predictor: {err!r}") from None
        return model


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def create_predictor(name: str, **kwargs: Any) -> Predictor:
    """A new, unfitted predictor by registry name, e.g. ``create_predictor("gp", seed=1)``.

    Raises:
        UnknownNameError: an unknown name (the message lists the known ones).
    """
    return PREDICTORS.create(name, **kwargs)


def list_predictors() -> list[str]:
    """The registered predictor names, sorted."""
    return PREDICTORS.names()
