"""What every command shares: error reporting, JSON output and study options."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
import typer.core
from rich.console import Console
from rich.markup import escape

from nas._messages import one_line

F = TypeVar("F", bound=Callable[..., Any])

console = Console(stderr=True)
"""Progress and messages go to stderr so that ``--json`` output on stdout stays clean."""

STORAGE_HELP = "Optuna storage URL (default: $NAS_STORAGE or sqlite:///nas-studies.db)."
STUDY_HELP = "Study name."
JSON_HELP = "Print one JSON document on stdout instead of tables."
FORCE_HELP = "Replace (or write into) an existing OUT; without it an existing OUT is refused."

# Errors that users cause; everything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FileExistsError)


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit non-zero."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


# click's base of usage errors, wherever this typer takes click from (newer releases
# vendor it as typer._click): the base class of typer.BadParameter of that name.
_CLICK_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


class OneLineErrors(typer.core.TyperGroup):
    """The ``nas`` group: a usage error (a missing option, a value of the wrong type or
    out of range) is one line on stderr and exit code 2, like every other user error,
    instead of click's usage box."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _CLICK_ERROR as err:
            command = err.ctx.command_path if getattr(err, "ctx", None) else "nas"
            console.print(f"[bold red]error:[/] {escape(one_line(err.format_message()))} "
                          f"(see `{escape(command)} --help`)", highlight=False, soft_wrap=True)
            sys.exit(err.exit_code)
        except typer.Abort:
            console.print("aborted", highlight=False)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def user_errors(command: F) -> F:
    """Turn the library's user-facing exceptions into a one-line error and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as err:
            fail(one_line(err))
        except KeyboardInterrupt:
            console.print("interrupted; finished trials are saved in the study")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def force_option(help: str = FORCE_HELP) -> Any:
    """The ``--force`` flag of every command that writes a file or folder: the one way
    to replace what is there (see :func:`nas._files.check_output`)."""
    return typer.Option(False, "--force", help=help)


def threads_option(default: int | None, help: str) -> Any:
    """A ``--threads`` option bounded by this machine's cores (:func:`check_threads`)."""
    return typer.Option(default, "--threads", help=f"{help} (1 to the machine's cores).",
                        callback=_threads_callback)


def _threads_callback(value: int | None) -> int | None:
    from nas._limits import check_threads

    if value is None:
        return None
    try:
        return check_threads(value, name="--threads")
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


def study_name(value: Any) -> Any:
    """``--study`` (and study argument) callback: every name given, one or a list, must
    hold more than white space."""
    for name in value if isinstance(value, list | tuple) else [value]:
        if name is not None and not name.strip():
            raise typer.BadParameter(f"a study name must not be empty or white space, got "
                                     f"{name!r}")
    return value


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
