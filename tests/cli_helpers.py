"""Running the ``nas`` command in-process, and the one-line error check, for test modules."""

from __future__ import annotations

from typer.testing import CliRunner

from nas.cli import app

runner = CliRunner()


def nas(*args: str):
    """``nas ARGS`` through typer's runner (stdout and stderr in ``result.output``)."""
    return runner.invoke(app, list(args))


def one_line_error(result, *fragments: str) -> None:
    """The command failed with exit code 2 and one line naming every fragment."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
