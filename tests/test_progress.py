"""Progress bars (nas/_progress.py): redrawn on a terminal, one line at a time in a log."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

import nas._progress as progress
from nas._progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_log_each_redraw_is_its_own_line(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
    for _ in progress_bar(range(3), desc="work", unit="step"):
        pass
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) >= 2 and all(line.startswith("work:") for line in lines)
    assert "3/3" in lines[-1]


def test_in_a_log_lines_are_rate_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    for _ in progress_bar(range(1000), desc="work"):
        pass
    assert len(log.getvalue().splitlines()) <= 3  # the first, maybe one more, the last


def test_on_a_terminal_the_bar_redraws_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    for _ in progress_bar(range(3), desc="work", mininterval=0):
        pass
    assert "\r" in terminal.getvalue()


def test_a_disabled_bar_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    for _ in progress_bar(range(3), desc="work", disable=True):
        pass
    assert log.getvalue() == ""


def test_a_search_logged_to_a_file_has_no_carriage_returns(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nas.cli", "search", "--supernet", "sortednet", "--hw",
         "local-cpu", "--budget", "1000ms", "--evals", "3", "--eval-limit", "50",
         "--storage", f"sqlite:///{tmp_path / 's.db'}"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "search:" in done.stderr and "\r" not in done.stderr
