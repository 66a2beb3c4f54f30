"""The documentation site builds, and every code block of every page runs.

How a page's code blocks run (write pages to these rules; ``tests/docs_blocks.py``
implements them):

- Every fenced block whose language is ``bash`` or ``python`` in ``docs/**/*.md`` runs.
  Other languages (``text`` for output shown to the reader, ``json``, ``toml``, ``csv``,
  ...) do not.
- Per page: a fresh temporary directory is the working directory and ``HOME``;
  ``NAS_STORAGE`` (and ``NAS_CONFIG``) are unset, so the default study database is
  ``nas-studies.db`` in the working directory, and user targets (``~/.config/nas``) and
  calibrations (``~/.cache/nas``) start empty; the repo's ``examples/`` folder is
  copied into it (``python examples/foo.py`` works); ``OMP_NUM_THREADS=1``;
  ``NAS_DOCS_REPO`` names the checkout (for data files such as
  ``$NAS_DOCS_REPO/supernets/data/...``).
- All blocks of a page run in order as ONE bash script under ``set -euo pipefail``, so
  ``cd``, variables and files carry over from block to block. A ``python`` block is
  written to a file and run with the test's own interpreter (the working directory is on
  its path); ``nas`` on ``PATH`` is that interpreter's. Each python block is a process
  of its own: share values through files (or a module a bash block writes), not
  variables. Under ``pipefail``, ``cmd | head`` fails when ``head`` closes the pipe
  early: show whole outputs instead.
- Inside a block, a line ``--8<-- "path"`` (pymdownx.snippets; the path relative to the
  repo root; ``"path:START:END"`` selects lines, 1-based) is replaced by that file's
  text, as the built site shows it.
- ``<!-- docs: serve PORT -->`` on the line before a block: the block runs in the
  background; the next block starts once 127.0.0.1:PORT accepts a TCP connection (the
  page fails after 60 s, or at once if the block ends first), and the block's process
  group is killed when the page ends.
- ``<!-- docs: setup -->`` on the line before a bash block: the block installs software
  and is NOT run. Instead each ``pip install`` argument is checked against this
  environment: ``torch==X`` must be the installed torch's version; ``-e .``,
  ``-e '.[a,b]'`` and ``'nas-platform[a,b]'`` must name extras that pyproject.toml
  defines and whose packages are installed; any other requirement must be installed (and
  match its version). Other lines may only be ``python3 -m venv ...``,
  ``. .venv/bin/activate``, ``git clone ...`` and ``cd ...``; anything else fails. A
  ``pip install`` or ``python3 -m venv`` in a block NOT marked setup fails the page (run,
  it would change the test's own environment).
- A page that mentions ``$NAS_POSTGRES_URL`` gets a fresh, empty database on the server
  of ``NAS_TEST_POSTGRES_URL`` (``source .ci/postgres.sh``) in that variable, dropped
  afterwards. Without a server the page is skipped, saying how to start one, or fails
  where PostgreSQL is required (CI, ``NAS_REQUIRE_POSTGRES=1``), as the ``postgres``
  tests do.
- A page's script has 300 s. On failure the test prints the page, the failing block's
  line and first line, and the tail of the output.

Each page is one ``slow`` test case (``-k getting-started`` runs one).
"""

from __future__ import annotations

import ast
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import pg_server
from tests.docs_blocks import check_setup, extract_blocks, run_page, unmarked_installs

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
POSTGRES_VAR = "$NAS_POSTGRES_URL"
OUTPUT_TAIL_LINES = 60


def _page_id(page: Path) -> str:
    return str(page.relative_to(DOCS).with_suffix(""))


def _page_params() -> list:
    params = []
    for page in PAGES:
        marks = [pytest.mark.slow]
        if POSTGRES_VAR in page.read_text():
            marks.append(pytest.mark.postgres)
        params.append(pytest.param(page, marks=marks, id=_page_id(page)))
    return params


@pytest.mark.slow
def test_site_builds_strict(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
         str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-6000:]}"
    assert (tmp_path / "site" / "benchmarks" / "index.html").is_file()
    for page in REFERENCE_PAGES:
        html = (tmp_path / "site" / "reference" / page / "index.html").read_text()
        shown = {anchor.rsplit(".", 1)[1] for anchor in re.findall(r'<h2 id="([^"]+)"', html)}
        missing = sorted(_documentable(REPO / page / "__init__.py") - shown)
        assert not missing, f"reference/{page}.md does not show {missing} of __all__"


REFERENCE_PAGES = ("nas", "supernets", "hardware", "predictors", "compress", "studies", "quant")
"""Reference pages, each named after the folder of the package it documents
(``reference/hardware.md``: ``nas.hardware``, ``hardware/``)."""


def _documentable(init: Path) -> set[str]:
    """The names of ``__all__`` that the source binds at module level: imported (under
    ``if TYPE_CHECKING:`` too), assigned or defined, sub-packages left out. A name that
    only a module ``__getattr__`` resolves is invisible to a static reader until it is
    also imported under ``TYPE_CHECKING``."""
    exported: list[str] = []
    bound: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        nonlocal exported
        for node in body:
            if isinstance(node, ast.If | ast.Try):
                visit(node.body + node.orelse)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                bound.update(alias.asname or alias.name for alias in node.names)
            elif isinstance(node, ast.FunctionDef | ast.ClassDef):
                bound.add(node.name)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = {t.id for t in targets if isinstance(t, ast.Name)}
                if "__all__" in names:
                    exported = [element.value for element in node.value.elts]
                bound.update(names)

    visit(ast.parse(init.read_text()).body)
    packages = {entry.name for entry in init.parent.iterdir() if (entry / "__init__.py").exists()}
    return {name for name in exported if name in bound and name not in packages}


@pytest.mark.parametrize("page", _page_params())
def test_page_blocks_run(page: Path, tmp_path: Path) -> None:
    assert_page_runs(page, tmp_path)


def assert_page_runs(page: Path, tmp_path: Path, *, repo: Path = REPO) -> None:
    """Check the page's setup blocks, then run its other blocks (the rules above)."""
    text = page.read_text()
    try:
        blocks = extract_blocks(text, repo=repo)
    except ValueError as error:
        pytest.fail(f"{page}: {error}", pytrace=False)
    problems = [
        f"setup block at line {block.line}: {problem}"
        for block in blocks if block.directive == "setup"
        for problem in check_setup(block, pyproject=repo / "pyproject.toml")
    ] + [
        f"block at line {block.line}: {command!r} installs software; put it in a block "
        "marked <!-- docs: setup --> (checked, not run)"
        for block in blocks for command in unmarked_installs(block)
    ]
    if problems:
        pytest.fail(f"{page}:\n" + "\n".join(problems), pytrace=False)
    if not any(block.directive != "setup" for block in blocks):
        return
    env: dict[str, str] = {}
    databases = None
    if POSTGRES_VAR in text:
        databases = pg_server.Databases(pg_server.server_url())
        env["NAS_POSTGRES_URL"] = databases.create()
    try:
        result = run_page(page, repo=repo, workdir=tmp_path, env=env)
    finally:
        if databases is not None:
            databases.close()
    if not result.ok:
        where = (f"the block at line {result.failed.line}: {result.failed.first_line}"
                 if result.failed else "no block (the script itself)")
        tail = "\n".join(result.output.splitlines()[-OUTPUT_TAIL_LINES:])
        pytest.fail(f"{page} failed ({result.message}) in {where}\n"
                    f"--- output (last {OUTPUT_TAIL_LINES} lines) ---\n"
                    f"{textwrap.indent(tail, '  ')}", pytrace=False)


# --- the runner itself, on fake pages --------------------------------------------------


def _fake_page(tmp_path: Path, body: str) -> Path:
    page = tmp_path / "page.md"
    page.write_text(textwrap.dedent(body))
    return page


def _fail_message(page: Path, tmp_path: Path) -> str:
    with pytest.raises(pytest.fail.Exception) as info:
        assert_page_runs(page, tmp_path / "run")
    return str(info.value)


def test_runner_carries_state_and_skips_other_languages(tmp_path: Path) -> None:
    page = _fake_page(tmp_path, """\
        # Page

        ```bash
        mkdir sub && cd sub
        export GREETING=hi
        test -z "${NAS_STORAGE:-}" && test "$HOME" = "$(cd .. && pwd)"
        ```

        ```text
        this is output, not a command: exit 1
        ```

        ```python
        import os, pathlib
        assert os.environ["GREETING"] == "hi" and os.environ["OMP_NUM_THREADS"] == "1"
        pathlib.Path("from_python.txt").write_text("ok")
        ```

        ```bash
        test "$(cat from_python.txt)" = ok
        ```
        """)
    assert [b.language for b in extract_blocks(page.read_text(), repo=REPO)] == [
        "bash", "python", "bash"]
    assert_page_runs(page, tmp_path / "run")


def test_runner_fails_on_a_failing_block(tmp_path: Path) -> None:
    page = _fake_page(tmp_path, """\
        ```bash
        echo first
        ```

        ```python
        raise SystemExit("boom from block two")
        ```

        ```bash
        echo never
        ```
        """)
    message = _fail_message(page, tmp_path)
    assert "line 5" in message and "raise SystemExit" in message
    assert "boom from block two" in message and "never" not in message.split("---")[-1]


def test_runner_expands_snippets(tmp_path: Path) -> None:
    (tmp_path / "snippet.py").write_text("print('from the snippet')\n")
    page = _fake_page(tmp_path, """\
        ```python
        --8<-- "snippet.py"
        ```
        """)
    blocks = extract_blocks(page.read_text(), repo=tmp_path)
    assert blocks[0].code == "print('from the snippet')\n"
    (tmp_path / "three.py").write_text("one = 1\ntwo = 2\nthree = 3\n")
    page.write_text('```python\n    --8<-- "three.py:2:3"\n```\n')
    assert extract_blocks(page.read_text(), repo=tmp_path)[0].code == "    two = 2\n    three = 3\n"


def test_runner_serves_in_the_background_and_kills(tmp_path: Path) -> None:
    page = _fake_page(tmp_path, """\
        <!-- docs: serve 18765 -->
        ```bash
        echo $$ > server.pid
        exec python -m http.server 18765 --bind 127.0.0.1
        ```

        ```python
        import pathlib, urllib.request
        urllib.request.urlopen("http://127.0.0.1:18765/").read()
        pathlib.Path("served.txt").write_text(pathlib.Path("server.pid").read_text())
        ```
        """)
    assert_page_runs(page, tmp_path / "run")
    pid = int((tmp_path / "run" / "home" / "served.txt").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_runner_fails_when_nothing_serves(tmp_path: Path, monkeypatch) -> None:
    page = _fake_page(tmp_path, """\
        <!-- docs: serve 18766 -->
        ```bash
        sleep 1
        ```
        """)
    assert "ended before 127.0.0.1:18766" in _fail_message(page, tmp_path)


def test_setup_blocks_are_checked_not_run(tmp_path: Path) -> None:
    import torch

    good = _fake_page(tmp_path, f"""\
        <!-- docs: setup -->
        ```bash
        git clone https://example.invalid/nas.git && cd nas
        python3 -m venv .venv && . .venv/bin/activate
        pip install torch=={torch.__version__.split('+')[0]}   # the CPU build
        pip install -e '.[docs]' 'nas-platform[postgres]'
        ```
        """)
    assert_page_runs(good, tmp_path / "good")
    bad = _fake_page(tmp_path, """\
        <!-- docs: setup -->
        ```bash
        pip install -e '.[no-such-extra]' torch==0.0.1
        rm -rf /
        ```
        """)
    message = _fail_message(bad, tmp_path)
    assert "extra 'no-such-extra'" in message and "torch==0.0.1" in message
    assert "'rm -rf /' is not allowed in a setup block" in message
    unmarked = _fake_page(tmp_path, """\
        ```bash
        echo fine && pip install -q 'nas-platform[postgres]'
        ```
        """)
    assert "put it in a block marked <!-- docs: setup -->" in _fail_message(unmarked, tmp_path)


# --- the benchmarks hook ---------------------------------------------------------------


def _benchmarks_hook():
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_benchmarks_hook",
                                                  DOCS / "hooks" / "benchmarks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_benchmarks_hook_renders_every_result_file() -> None:
    hook = _benchmarks_hook()
    results = sorted((REPO / "benchmarks" / "results").glob("*.json"))
    text = hook.render_all(results)
    for path in results:
        assert f"benchmarks/results/{path.name}" in text
    assert "python benchmarks/bench_moe_merge.py" in text


def test_benchmarks_hook_refuses_what_it_cannot_render(tmp_path: Path) -> None:
    from mkdocs.exceptions import PluginError

    hook = _benchmarks_hook()
    unknown = tmp_path / "brand_new_benchmark.json"
    unknown.write_text('{"figure": 1}')
    with pytest.raises(PluginError, match="brand_new_benchmark.json: no renderer"):
        hook.render_all([unknown])
    changed = tmp_path / "memory_model.json"
    changed.write_text('{"samples": 20, "families": {"hat": {"renamed": {}}}}')
    with pytest.raises(PluginError, match=r"memory_model.json: its renderer .* KeyError"):
        hook.render_all([changed])


def test_postgres_pages_skip_or_fail_without_a_server(tmp_path: Path, monkeypatch) -> None:
    page = _fake_page(tmp_path, """\
        ```bash
        nas studies list --storage "$NAS_POSTGRES_URL"
        ```
        """)
    for name in (pg_server.URL_VAR, "CI", "NAS_REQUIRE_POSTGRES"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no PostgreSQL server"):
        assert_page_runs(page, tmp_path / "skipped")
    monkeypatch.setenv("NAS_REQUIRE_POSTGRES", "1")
    with pytest.raises(pytest.fail.Exception, match="must run here"):
        assert_page_runs(page, tmp_path / "failed")


@pytest.mark.postgres
def test_postgres_pages_get_a_fresh_database(tmp_path: Path) -> None:
    page = _fake_page(tmp_path, """\
        ```bash
        test "$NAS_POSTGRES_URL" != "${NAS_TEST_POSTGRES_URL:-}"
        nas studies list --storage "$NAS_POSTGRES_URL"
        ```
        """)
    assert_page_runs(page, tmp_path / "run")


def test_runner_times_out_and_kills_everything(tmp_path: Path) -> None:
    page = _fake_page(tmp_path, """\
        <!-- docs: serve 18767 -->
        ```bash
        exec python -m http.server 18767 --bind 127.0.0.1
        ```

        ```bash
        sleep 60
        ```
        """)
    result = run_page(page, repo=REPO, workdir=tmp_path / "run", timeout=5)
    assert not result.ok and result.message == "timed out after 5 s"
    assert result.failed is not None and result.failed.first_line == "sleep 60"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", 18767), timeout=1).close()
