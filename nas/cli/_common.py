"""What every command shares: error reporting, JSON output and study options."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

F = TypeVar("F", bound=Callable[..., Any])

console = Console(stderr=True)
"""Progress and messages go to stderr so that ``--json`` output on stdout stays clean."""

STORAGE_HELP = "Optuna storage URL (default: $NAS_STORAGE or sqlite:///nas-studies.db)."
STUDY_HELP = "Study name."
JSON_HELP = "Print one JSON document on stdout instead of tables."

# Errors that users cause; everything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FileExistsError)


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit non-zero."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def user_errors(command: F) -> F:
    """Turn the library's user-facing exceptions into a one-line error and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as err:
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            fail(message)
        except KeyboardInterrupt:
            console.print("interrupted; finished trials are saved in the study")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
