"""Runs a documentation page's code blocks: the helper behind ``tests/test_docs.py``.

The convention it implements is written at the top of ``tests/test_docs.py``. Kept apart
from the test so the test module stays a list of cases and the runner can be tested on
fake pages.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

RUN_LANGUAGES = ("bash", "python")
PAGE_TIMEOUT_S = 300
SERVE_TIMEOUT_S = 60
DISTRIBUTION = "nas-platform"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*docs:\s*(?P<what>[a-z]+)(?:\s+(?P<arg>\S+))?\s*-->\s*$")
_SNIPPET_LINES = re.compile(r"^(?P<name>.+?):(?P<start>\d*)(?::(?P<end>\d*))?$")
_SNIPPET = re.compile(r"^(?P<indent>\s*)--8<--\s+[\"'](?P<path>[^\"']+)[\"']\s*$")


@dataclass(frozen=True)
class Block:
    """One runnable fenced block of a page."""

    language: str
    code: str
    line: int
    """The page line (1-based) of the opening fence."""
    directive: str = ""
    """``serve`` or ``setup`` from the ``<!-- docs: ... -->`` line before it, else empty."""
    port: int = 0

    @property
    def first_line(self) -> str:
        return next((text for text in self.code.splitlines() if text.strip()), "")


def extract_blocks(text: str, *, repo: Path) -> list[Block]:
    """The ``bash`` and ``python`` blocks of a markdown page, in order, snippets expanded.

    Raises:
        ValueError: an unknown directive, a serve block without a port, a setup block
            that is not bash, or a snippet whose file does not exist.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, fence = match["indent"], match["fence"]
        info = match["info"].strip()
        language = info.split()[0].lstrip("{.").rstrip("}").lower() if info else ""
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            close = lines[i].strip()
            if close.startswith(fence[0] * len(fence)) and set(close) == {fence[0]}:
                break
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1
        if language not in RUN_LANGUAGES:
            continue
        directive, port = _directive_before(lines, start, language)
        code = "\n".join(_expand_snippets(body, repo=repo, line=start + 1)) + "\n"
        blocks.append(Block(language, code, start + 1, directive, port))
    return blocks


def _directive_before(lines: list[str], fence: int, language: str) -> tuple[str, int]:
    j = fence - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    match = _DIRECTIVE.match(lines[j]) if j >= 0 else None
    if match is None:
        return "", 0
    what, arg = match["what"], match["arg"]
    where = f"line {j + 1}"
    if what == "serve":
        if arg is None or not arg.isdigit():
            raise ValueError(f"{where}: `<!-- docs: serve PORT -->` needs a port, got {arg!r}")
        return "serve", int(arg)
    if what == "setup":
        if language != "bash":
            raise ValueError(f"{where}: a setup block must be bash, got {language!r}")
        return "setup", 0
    raise ValueError(f"{where}: unknown directive {what!r} (known: serve PORT, setup)")


def _expand_snippets(body: list[str], *, repo: Path, line: int) -> list[str]:
    out: list[str] = []
    for text in body:
        match = _SNIPPET.match(text)
        if match is None:
            out.append(text)
            continue
        name, start, end = match["path"], None, None
        lines = _SNIPPET_LINES.match(name)
        if lines and not (repo / name).is_file():  # pymdownx's "file:start:end" (1-based)
            name = lines["name"]
            start = int(lines["start"]) - 1 if lines["start"] else None
            end = int(lines["end"]) if lines["end"] else None
        path = repo / name
        if not path.is_file():
            raise ValueError(f"block at line {line}: snippet {match['path']!r} does not exist")
        out.extend(match["indent"] + part for part in path.read_text().splitlines()[start:end])
    return out


# --- setup blocks ---------------------------------------------------------------------

_SETUP_ALLOWED = (
    re.compile(r"^python3? -m venv\b"),
    re.compile(r"^(\.|source) \S*bin/activate$"),
    re.compile(r"^git clone\b"),
    re.compile(r"^cd\b"),
)
_PIP = re.compile(r"^(?:python3? -m )?pip3? install\b")


def check_setup(block: Block, *, pyproject: Path) -> list[str]:
    """What is wrong with a setup block for this environment (empty: nothing).

    Nothing is run: each ``pip install`` argument is checked against what is installed,
    and every other command must be one a reader runs to get a checkout and a venv.
    """
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    problems: list[str] = []
    for command in _commands(block.code):
        if _PIP.match(command):
            problems += _check_pip(command, extras)
        elif not any(pattern.match(command) for pattern in _SETUP_ALLOWED):
            problems.append(f"{command!r} is not allowed in a setup block (allowed: pip "
                            "install, python3 -m venv, . .venv/bin/activate, git clone, cd)")
    return problems


def unmarked_installs(block: Block) -> list[str]:
    """The commands of a block that would install software but are not in a setup block
    (run, they would change the test's own environment)."""
    if block.language != "bash" or block.directive == "setup":
        return []
    return [c for c in _commands(block.code) if _PIP.match(c) or _SETUP_ALLOWED[0].match(c)]


def _commands(code: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", code)
    commands: list[str] = []
    for text in joined.splitlines():
        text = re.sub(r"(^|\s)#.*$", "", text).strip()
        for part in re.split(r"&&|;", text):
            part = " ".join(part.split())
            if part:
                commands.append(part)
    return commands


def _check_pip(command: str, extras: dict[str, list[str]]) -> list[str]:
    args = shlex.split(command)
    args = args[args.index("install") + 1:]
    problems: list[str] = []
    skip_next = False
    for arg in args:
        if skip_next:
            skip_next = False
            continue
        if arg in ("-e", "--editable"):
            continue
        if arg in ("-i", "--index-url", "--extra-index-url", "-c", "-r", "-f"):
            skip_next = True
            continue
        if arg.startswith("-"):
            continue
        if arg == "." or arg.startswith(".["):
            arg = DISTRIBUTION + arg[1:]
        problems += _check_requirement(arg, extras)
    return problems


def _check_requirement(spec: str, extras: dict[str, list[str]]) -> list[str]:
    try:
        requirement = Requirement(spec)
    except ValueError as error:
        return [f"pip install argument {spec!r} is not a requirement: {error}"]
    if canonicalize_name(requirement.name) == canonicalize_name(DISTRIBUTION):
        problems: list[str] = []
        for extra in sorted(requirement.extras):
            if extra not in extras:
                problems.append(f"extra {extra!r} of {spec!r} is not in pyproject.toml "
                                f"(known: {', '.join(sorted(extras))})")
                continue
            problems += [f"{spec!r}: {p}" for p in _check_extra(extra, extras, set())]
        return problems
    return _check_installed(requirement, pinned=True)


def _check_extra(extra: str, extras: dict[str, list[str]], seen: set[str]) -> list[str]:
    if extra in seen:
        return []
    seen.add(extra)
    problems: list[str] = []
    for spec in extras[extra]:
        requirement = Requirement(spec)
        if canonicalize_name(requirement.name) == canonicalize_name(DISTRIBUTION):
            for inner in requirement.extras:
                problems += _check_extra(inner, extras, seen)
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        problems += _check_installed(requirement, pinned=False)
    return problems


def _check_installed(requirement: Requirement, *, pinned: bool) -> list[str]:
    try:
        version = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        return [f"{requirement.name} is not installed here"]
    public = version.split("+")[0]
    if pinned and any(s.operator == "==" for s in requirement.specifier):
        # A pin in the docs names a version the reader gets: the local build tag
        # (``+cpu``) is the index's business, the public version must match.
        wanted = [s.version for s in requirement.specifier if s.operator == "=="]
        if public not in wanted and version not in wanted:
            return [f"{requirement} does not match the installed {requirement.name} {version}"]
        return []
    if not requirement.specifier.contains(public, prereleases=True):
        return [f"{requirement} does not match the installed {requirement.name} {version}"]
    return []


# --- running a page -------------------------------------------------------------------


@dataclass
class PageResult:
    ok: bool
    output: str
    failed: Block | None = None
    message: str = ""


def page_script(blocks: list[Block], *, blocks_dir: Path) -> str:
    """One bash script running a page's blocks in order (setup blocks left out)."""
    parts = [
        "set -euo pipefail",
        '_docs_serve_pids=()',
        '_docs_stop() { for p in "${_docs_serve_pids[@]}"; do '
        'kill -TERM -- "-$p" 2>/dev/null || true; done; }',
        "trap _docs_stop EXIT",
    ]
    for n, block in enumerate(blocks):
        if block.directive == "setup":
            continue
        parts.append(f'echo {n} > "$DOCS_STATE"')
        if block.language == "python":
            path = blocks_dir / f"block_{n:02d}.py"
            path.write_text(block.code)
            # The working directory is on the path, as it is for `python file.py` there.
            run = (f'PYTHONPATH="$PWD${{PYTHONPATH:+:$PYTHONPATH}}" '
                   f'"$DOCS_PYTHON" {shlex.quote(str(path))}')
        else:
            run = "{\n" + block.code + "\n}"
        if block.directive == "serve":
            # Job control puts the background block in a process group of its own, which
            # the EXIT trap (and the test, should the script itself be killed) ends.
            parts += [
                "set -m", f"( {run}\n) &", "_docs_pid=$!", "set +m",
                '_docs_serve_pids+=("$_docs_pid")',
                'echo "$_docs_pid" >> "$DOCS_SERVE_PIDS"',
                f'"$DOCS_PYTHON" "$DOCS_WAIT" {block.port} {SERVE_TIMEOUT_S} "$_docs_pid"',
            ]
        else:
            parts.append(run)
    parts.append('echo done > "$DOCS_STATE"')
    return "\n".join(parts) + "\n"


def run_page(page: Path, *, repo: Path, workdir: Path, env: dict[str, str] | None = None,
             timeout: float = PAGE_TIMEOUT_S) -> PageResult:
    """Run a page's blocks in ``workdir`` (its working directory and ``HOME``)."""
    blocks = extract_blocks(page.read_text(), repo=repo)
    control = workdir / ".docs-run"
    control.mkdir(parents=True)
    home = workdir / "home"
    home.mkdir()
    if (repo / "examples").is_dir():
        shutil.copytree(repo / "examples", home / "examples")
    script = control / "page.sh"
    script.write_text(page_script(blocks, blocks_dir=control))
    state, serve_pids = control / "state", control / "serve_pids"
    run_env = page_env(home, repo=repo, extra=env)
    wait = control / "wait_port.py"
    wait.write_text(_WAIT_PORT)
    run_env.update(DOCS_STATE=str(state), DOCS_SERVE_PIDS=str(serve_pids), DOCS_WAIT=str(wait))
    process = subprocess.Popen(["bash", str(script)], cwd=home, env=run_env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)

    def stop() -> None:
        # The script's group, then each serve block's (they hold the output pipe open).
        _kill_group(process.pid, leader=process)
        for pid in serve_pids.read_text().split() if serve_pids.exists() else ():
            _kill_group(int(pid))

    message = ""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop()
        output, _ = process.communicate()
        message = f"timed out after {timeout:.0f} s"
    finally:
        stop()
    text = output.decode(errors="replace")
    last = state.read_text().strip() if state.exists() else ""
    if process.returncode == 0 and last == "done" and not message:
        return PageResult(True, text)
    failed = blocks[int(last)] if last.isdigit() else None
    return PageResult(False, text, failed, message or f"exit status {process.returncode}")


def page_env(home: Path, *, repo: Path, extra: dict[str, str] | None) -> dict[str, str]:
    """The environment of a page's script: a fresh HOME, no study database configured."""
    env = {k: v for k, v in os.environ.items() if k not in ("NAS_STORAGE", "NAS_CONFIG")}
    bin_dir = str(Path(sys.executable).parent)
    env.update(HOME=str(home), OMP_NUM_THREADS="1", DOCS_PYTHON=sys.executable,
               NAS_DOCS_REPO=str(repo), PATH=bin_dir + os.pathsep + env.get("PATH", ""))
    env.pop("PYTHONPATH", None)
    env.update(extra or {})
    return env


def _kill_group(pgid: int, *, leader: subprocess.Popen | None = None) -> None:
    """SIGTERM a process group, then SIGKILL what is left of it after 5 s (``leader``:
    our own child leading the group, reaped so that its zombie does not count)."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if leader is not None:
            leader.poll()
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


_WAIT_PORT = """\
import socket, sys, time, os
port, limit, pid = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + limit
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sys.exit(0)
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as stat:
            ended = stat.read().rsplit(")", 1)[1].split()[0] in "ZX"
    except FileNotFoundError:
        ended = True
    if ended:
        sys.exit(f"the serve block ended before 127.0.0.1:{port} accepted a connection")
    time.sleep(0.2)
sys.exit(f"127.0.0.1:{port} accepted no connection within {limit:.0f} s")
"""
