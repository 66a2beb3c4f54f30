"""Evaluators: the metrics of one subnet, computed once and cached.

:class:`Evaluator` scores a subnet of a supernet: accuracy on the task's validation
split with the subnet activated, latency from a hardware target. It only relies on the
duck-typed parts of the contracts (``supernet.activate``, ``supernet.checkpoint_hash``,
``task.evaluate``, ``target.latency_ms``, ``target.fingerprint``), so tests and users can
pass light stand-ins. :class:`FunctionEvaluator` wraps a plain function instead.

Every result is cached under a key that changes whenever the figures could: the
checkpoint hash, the task and evaluation limit, the target fingerprint and the config.
The search fills the cache from the study, so a resumed search never re-evaluates.
"""

from __future__ import annotations

import abc
import hashlib
import inspect
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from nas._space import Config, SearchSpace

logger = logging.getLogger(__name__)

Metrics = dict[str, float]
MEMORY_METRIC = "memory_mb"
"""The metric of ``--objective memory`` and ``--memory-budget``: weights plus the
activation peak (KV cache included) of one batch-1 inference, MB."""
BYTES_PER_MB = 10**6


class BaseEvaluator(abc.ABC):
    """Maps a config to its metrics, with a cache keyed by :meth:`cache_key`.

    ``evaluate`` validates the config, serves it from the cache or calls the protected
    hook ``_evaluate``, and stores the result. Metric values are plain floats. Not thread
    safe (supernets are stateful).

    Attributes:
        space: the search space configs must belong to.
    """

    space: SearchSpace

    def __init__(self) -> None:
        self._cache: dict[str, Metrics] = {}
        self._last_key: tuple[Config, str, str] | None = None

    @property
    @abc.abstractmethod
    def fingerprint(self) -> str:
        """Everything but the config that the metrics depend on (part of the cache key)."""

    @abc.abstractmethod
    def _evaluate(self, config: Config) -> Mapping[str, float]: ...

    def cache_key(self, config: Config | Mapping[str, Any]) -> str:
        """A stable 20-hex-digit key of (fingerprint, config): equal keys, equal metrics."""
        canonical = self.space.config(config)
        fingerprint = self.fingerprint
        last = self._last_key
        if last is not None and last[0] is canonical and last[1] == fingerprint:
            return last[2]  # the search asks for the key, then evaluates the same config
        payload = f"{fingerprint}\x00{canonical.key}".encode()
        key = hashlib.sha256(payload).hexdigest()[:20]
        self._last_key = (canonical, fingerprint, key)
        return key

    def cached(self, config: Config | Mapping[str, Any]) -> Metrics | None:
        """The cached metrics of ``config``, or None."""
        hit = self._cache.get(self.cache_key(config))
        return dict(hit) if hit is not None else None

    def remember(self, cache_key: str, metrics: Mapping[str, float]) -> None:
        """Fill the cache with metrics computed earlier (e.g. read back from a study)."""
        self._cache[cache_key] = _clean(metrics)

    def evaluate(self, config: Config | Mapping[str, Any]) -> Metrics:
        """The metrics of ``config``, computed at most once per cache key.

        Raises:
            ValueError: ``config`` is not a valid config of :attr:`space`, or the hook
                returned something that is not a mapping of metric names to numbers.
        """
        canonical = self.space.config(config)
        key = self.cache_key(canonical)
        hit = self._cache.get(key)
        if hit is not None:
            return dict(hit)
        metrics = _clean(self._evaluate(canonical))
        self._cache[key] = metrics
        return dict(metrics)


class Evaluator(BaseEvaluator):
    """Accuracy from the task and latency from the hardware target, for one supernet.

    Args:
        supernet: has ``space``, ``activate(config)`` and ``checkpoint_hash``.
        task: has ``evaluate(model, *, split, limit)`` returning a dict with
            ``"accuracy"`` (any other numeric metrics it returns are kept too).
        target: has ``latency_ms(supernet, config, task)`` and ``fingerprint`` (with
            ``memory``: ``memory(supernet, config, task)`` and
            ``memory_fingerprint(family)`` too).
        eval_limit: score on the first ``eval_limit`` validation examples only (faster
            searches; part of the cache key since it changes the accuracy).
        memory: also give ``memory_mb``, the target's peak memory of one batch-1
            inference (``target.memory``; MB = 10**6 bytes).

    Raises:
        ValueError: ``eval_limit`` is not a positive integer or None.
    """

    def __init__(
        self, supernet: Any, task: Any, target: Any, *, eval_limit: int | None = None,
        memory: bool = False,
    ) -> None:
        super().__init__()
        if eval_limit is not None and (
            isinstance(eval_limit, bool) or not isinstance(eval_limit, int) or eval_limit <= 0
        ):
            raise ValueError(f"eval_limit must be a positive integer or None, got {eval_limit!r}")
        self.supernet = supernet
        self.task = task
        self.target = target
        self.eval_limit = eval_limit
        self.memory = memory
        self.space = supernet.space
        self._task_takes_per = accepts_keyword(task.evaluate, "per")

    @property
    def fingerprint(self) -> str:
        checkpoint = str(getattr(self.supernet, "checkpoint_hash", "untrained"))
        task_name = str(getattr(self.task, "name", "") or type(self.task).__name__)
        target = str(getattr(self.target, "fingerprint", "") or getattr(self.target, "name", ""))
        memory = (f"|memory={self.target.memory_fingerprint(self.supernet.family)}"
                  if self.memory else "")
        return f"{checkpoint}|{task_name}|limit={self.eval_limit}|{target}{memory}"

    def _evaluate(self, config: Config) -> Mapping[str, float]:
        self.supernet.activate(config)
        metrics = self._score(self.supernet)
        metrics["latency_ms"] = float(self.target.latency_ms(self.supernet, config, self.task))
        if self.memory:
            metrics[MEMORY_METRIC] = self.memory_mb(config)
        return metrics

    def memory_mb(self, config: Config) -> float:
        """The target's peak memory of subnet ``config``, MB (10**6 bytes)."""
        peak = self.target.memory(self.supernet, config, self.task).peak_bytes
        return peak / BYTES_PER_MB

    def _score(self, model: Any) -> dict[str, float]:
        """The task's numeric metrics of ``model`` on the validation sample."""
        kwargs: dict[str, Any] = {"split": "validation", "limit": self.eval_limit}
        if self._task_takes_per:
            kwargs["per"] = False
        scores = self.task.evaluate(model, **kwargs)
        if not isinstance(scores, Mapping) or "accuracy" not in scores:
            raise ValueError(
                f"task {getattr(self.task, 'name', self.task)!r}.evaluate must return a dict "
                f"with 'accuracy', got {scores!r}"
            )
        metrics = {str(k): v for k, v in ((k, _scalar(v)) for k, v in scores.items())
                   if v is not None}
        if "accuracy" not in metrics:
            raise ValueError(f"task accuracy must be a number, got {scores['accuracy']!r}")
        return metrics


class FunctionEvaluator(BaseEvaluator):
    """Metrics from a plain function ``fn(config) -> {"accuracy": ..., ...}``.

    For tests, benchmarks on synthetic landscapes and predictor-only searches.

    Args:
        space: the search space.
        fn: returns the metrics of a canonical config.
        fingerprint: names what the function computes; change it when its figures
            change, so that stale cached results are not reused.
    """

    def __init__(
        self,
        space: SearchSpace,
        fn: Callable[[Config], Mapping[str, float]],
        *,
        fingerprint: str = "function",
    ) -> None:
        super().__init__()
        self.space = space
        self.fn = fn
        self._fingerprint = fingerprint

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def _evaluate(self, config: Config) -> Mapping[str, float]:
        return self.fn(config)


class PredictedEvaluator(BaseEvaluator):
    """Predicted accuracy and the target's latency, for a space without weights.

    Light per call (a feature row, a small model and the target's figure): the
    evaluator of ``nas search --space ... --accuracy-predictor ...``.

    Args:
        model: what the target reads of a supernet (a :class:`~nas.SpaceModel`: ``space``
            and the family's ``design``).
        predictor: has ``accuracy(config) -> float`` and ``sha256`` (the files it read).
        target: has ``latency_ms(model, config, task)`` and ``fingerprint``.
    """

    def __init__(self, model: Any, predictor: Any, target: Any) -> None:
        super().__init__()
        self.supernet = model
        self.space = model.space
        self.predictor = predictor
        self.target = target
        self.task = None
        self.eval_limit = None
        target = str(getattr(target, "fingerprint", "") or getattr(target, "name", ""))
        self._fingerprint = f"predicted:{predictor.sha256}|{target}"

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def _evaluate(self, config: Config) -> Mapping[str, float]:
        return {
            "accuracy": float(self.predictor.accuracy(config)),
            "latency_ms": float(self.target.latency_ms(self.supernet, config, self.task)),
        }


def _scalar(value: Any) -> float | None:
    """A task metric as a float; None for what is not one number (lists, strings)."""
    if isinstance(value, bool | str | bytes):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        return None


def _clean(metrics: Mapping[str, float]) -> Metrics:
    if not isinstance(metrics, Mapping):
        raise ValueError(f"metrics must be a dict of metric name -> number, got {metrics!r}")
    clean: Metrics = {}
    for name, value in metrics.items():
        try:
            clean[str(name)] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"metric {name!r} must be a number, got {value!r}") from None
        if math.isnan(clean[str(name)]):
            logger.warning("metric %r is NaN", name)
    return clean


def accepts_keyword(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        (p.name == name and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        or p.kind == p.VAR_KEYWORD
        for p in params
    )
