"""`nas report`: one self-contained HTML file about real studies, and its bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import plotly.offline
import pytest
from test_cli import assert_one_line_error, run_nas

from nas.studies import (
    describe_study,
    load_study,
    open_storage,
    search_hypervolume,
    study_problem,
)
from nas.studies._html_report import hypervolume_curve

PIXEL = "pixel3"
GOLD = "gold<&>"  # a name that must be escaped everywhere
SEARCHES = {
    PIXEL: ["--hw", "pixel3", "--budget", "5ms"],
    GOLD: ["--hw", "gold6226", "--budget", "20ms"],
}


class _Page(HTMLParser):
    """The parts of a report the tests read: link targets and tables as text rows."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.tables: list[tuple[dict[str, str | None], list[list[str]]]] = []
        self.row_trials: dict[str, list[int]] = {}
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.links += [v or "" for k, v in attrs if k in ("src", "href")]
        if tag == "table":
            self.tables.append((found, []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
            study = self.tables[-1][0].get("data-study")
            if study is not None and "data-trial" in found:
                self.row_trials.setdefault(study, []).append(int(found["data-trial"] or -1))
        elif tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][1][-1].append("".join(self._cell))
            self._cell = None

    def settings(self) -> dict[str, list[str]]:
        """The settings table (the one whose first header cell is empty), row by row."""
        rows = next(rows for attrs, rows in self.tables if rows and rows[0][0] == "")
        return {row[0]: row[1:] for row in rows}


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    """Two small real searches (random, tabular accuracy: seconds, no training), run at
    once; returns their directory, holding the study database ``s.db``."""
    root = tmp_path_factory.mktemp("report")
    storage = f"sqlite:///{root / 's.db'}"
    open_storage(storage)  # create the schema first: two processes creating it would race
    procs = []
    for name, target in SEARCHES.items():
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "nas.cli", "search", "--supernet", "nb201", *target,
             "--evals", "12", "--algorithm", "random", "--study", name, "--storage", storage],
            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "COLUMNS": "200"},
        ))
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    return root


def _storage(root: Path) -> str:
    return f"sqlite:///{root / 's.db'}"


def test_report_of_two_studies_is_self_contained_and_complete(studies):
    out = studies / "r.html"
    result = run_nas("report", "--study", PIXEL, "--study", GOLD, "--out", str(out),
                     "--storage", _storage(studies), cwd=studies)
    assert result.returncode == 0, result.stderr
    html = out.read_text(encoding="utf-8")
    page = _Page()
    page.feed(html)

    assert not [link for link in page.links if link.startswith(("http://", "https://", "//"))]
    assert html.count(plotly.offline.get_plotlyjs()[:500]) == 1
    assert "gold&lt;&amp;&gt;" in html and GOLD not in html
    for name in SEARCHES:
        shown = json.loads(run_nas("studies", "show", name, "--json",
                                   "--storage", _storage(studies), cwd=studies).stdout)
        assert page.row_trials.get(name, []) == [p["trial"] for p in shown["pareto"]]
    settings = page.settings()
    assert settings["supernet"] == ["nb201", "nb201"]
    assert settings["hardware"] == ["pixel3", "gold6226"]
    assert settings["budget"] == ["latency_ms \u2264 5", "latency_ms \u2264 20"]
    assert settings["algorithm"] == ["random", "random"]
    assert settings["trials"] == ["12", "12"]


def test_hypervolume_curve_ends_at_the_search_figure(studies):
    study = load_study(GOLD, _storage(studies))
    trials, problem = study.trials(), study_problem(study)
    curve = hypervolume_curve(trials, problem)
    assert len(curve) == len(trials)
    assert all(a <= b for a, b in zip(curve, curve[1:]))
    for k in (1, len(trials) // 2, len(trials)):
        assert curve[k - 1] == pytest.approx(search_hypervolume(trials[:k], problem))
    assert curve[-1] == pytest.approx(describe_study(study)["hypervolume"])


def test_existing_out_is_refused_unchanged_unless_forced(studies):
    out = studies / "old.html"
    out.write_text("keep me")
    args = ["report", "--study", PIXEL, "--out", str(out), "--storage", _storage(studies)]
    assert_one_line_error(run_nas(*args, cwd=studies), "exists", "--force")
    assert out.read_text() == "keep me"
    result = run_nas(*args, "--force", cwd=studies)
    assert result.returncode == 0, result.stderr
    assert "<h1>NAS report: pixel3</h1>" in out.read_text(encoding="utf-8")
    assert not list(studies.glob(".old.html.*"))  # no temporary file left behind


@pytest.mark.parametrize(
    ("storage", "study", "fragments"),
    [
        (None, "nope", ["no study 'nope'", PIXEL]),
        ("bad.db", PIXEL, ["cannot open study storage", "not an SQLite database"]),
        ("not a url", PIXEL, ["storage must be a database URL"]),
    ],
)
def test_bad_input_gives_one_line_error_and_writes_nothing(studies, storage, study, fragments):
    (studies / "bad.db").write_text("not a database")
    url = _storage(studies) if storage is None else (
        f"sqlite:///{studies / storage}" if storage.endswith(".db") else storage
    )
    out = studies / "never.html"
    result = run_nas("report", "--study", study, "--out", str(out), "--storage", url,
                     cwd=studies)
    assert_one_line_error(result, *fragments)
    assert not out.exists()


def test_counts_that_cannot_be_made_show_a_dash_and_say_why(studies):
    from types import SimpleNamespace

    from nas.studies._html_report import build_report

    study = load_study(PIXEL, _storage(studies))
    other = SimpleNamespace(checkpoint_hash="0" * 64)  # another checkpoint of nb201
    html = build_report([study], supernets={"nb201": other})
    assert "\u2014<sup>[1]</sup>" in html
    assert "[1] the available nb201 checkpoint (000000000000) is not the study" in html


def test_a_postgres_study_reports_like_the_sqlite_one(studies, postgres_url, tmp_path):
    """The same search written to PostgreSQL: the same report, but for the URL."""
    result = run_nas("search", "--supernet", "nb201", *SEARCHES[PIXEL], "--evals", "12",
                     "--algorithm", "random", "--study", PIXEL, "--storage", postgres_url,
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    html = {}
    for url in (_storage(studies), postgres_url):
        out = tmp_path / f"{len(html)}.html"
        result = run_nas("report", "--study", PIXEL, "--out", str(out), "--storage", url,
                         cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        text = out.read_text(encoding="utf-8").replace(url, "URL")
        text = re.sub(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", "ID", text)  # plotly divs
        html[url] = re.sub(r"Created [^ ]+ by", "Created TIME by", text)
    page = _Page()
    page.feed(html[postgres_url])
    shown = json.loads(run_nas("studies", "show", PIXEL, "--json", "--storage", postgres_url,
                               cwd=tmp_path).stdout)
    assert page.row_trials[PIXEL] == [p["trial"] for p in shown["pareto"]]
    assert page.settings()["trials"] == ["12"]
    assert html[postgres_url] == html[_storage(studies)]
