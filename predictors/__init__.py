"""Learned predictors of accuracy, latency and memory (see the open issues)."""

__all__: list[str] = []
