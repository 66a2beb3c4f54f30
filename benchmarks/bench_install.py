"""The default install against the old one, and the command line's start-up time.

Two clean virtual environments, side by side in the same run: the default install
(``pip install REPO``) and the install as it was before the single-feature dependencies
became extras (``pip install 'REPO[agemoea,parquet,report,optuna-dashboard]'``: numba,
pandas, pyarrow, plotly and optuna-dashboard back in). Each gets the CPU build of torch
first (timed apart: it is the same for both), then the package with nothing cached. The
figures: seconds to install the package and its dependencies, megabytes in the venv,
distributions installed.

Start-up, in the default environment: CPU seconds (user + system, median of 7) of
``nas --help`` and ``nas search --help`` against the same help with the library imported
up front (``nas``, its subpackages, torch), which is what every command paid before the
imports were made lazy.

    python benchmarks/bench_install.py            # writes results/install.json
    python benchmarks/bench_install.py --quick    # one repeat, not written
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "results" / "install.json"
TORCH = "torch==2.13.0"
BEFORE_EXTRAS = "agemoea,parquet,report,optuna-dashboard"
EAGER = ("import nas, nas.supernets, nas.hardware, nas.predictors, nas.studies, torch; "
         "from nas.cli import main; main()")


def install(venv: Path, requirement: str) -> dict[str, float | int]:
    """A fresh venv at ``venv``; torch, then ``requirement``, timed apart."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-cache-dir"]
    started = time.perf_counter()
    subprocess.run([*pip, TORCH], check=True)
    torch_s = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run([*pip, requirement], check=True)
    package_s = time.perf_counter() - started
    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list",
                             "--format=freeze"], check=True, capture_output=True, text=True)
    return {"torch_seconds": round(torch_s, 1), "package_seconds": round(package_s, 1),
            "venv_mb": round(_size(venv) / 2**20), "distributions": len(listed.stdout.split())}


def cpu_seconds(command: list[str], repeats: int, *, cwd: Path) -> float:
    """Median user + system CPU seconds of ``command`` (a child process) run in ``cwd``
    (not the checkout, whose ``nas/`` folder ``python -c`` would import instead)."""
    samples = []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(command, capture_output=True, text=True, cwd=cwd,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-2000:]}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        samples.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return round(statistics.median(samples), 3)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one start-up repeat, not written")
    args = parser.parse_args()
    repeats = 1 if args.quick else 7
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-install-"))
    try:
        source = work / "src"  # a copy without the checkout's venv, build or site folders
        shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
            ".venv", "build", "site", "*.egg-info", "__pycache__", ".git", "test-artifacts"))
        default = install(work / "default", str(source))
        before = install(work / "before", f"{source}[{BEFORE_EXTRAS}]")
        python = str(work / "default" / "bin" / "python")
        nas = str(work / "default" / "bin" / "nas")
        startup = {
            "help_seconds": cpu_seconds([nas, "--help"], repeats, cwd=work),
            "search_help_seconds": cpu_seconds([nas, "search", "--help"], repeats, cwd=work),
            "eager_help_seconds": cpu_seconds([python, "-c", EAGER, "--help"], repeats,
                                              cwd=work),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "default": default,
        "before": {"extras": BEFORE_EXTRAS, **before},
        "saved_mb": before["venv_mb"] - default["venv_mb"],
        "cli_cpu_seconds": startup,
    }
    print(result)
    if not args.quick:
        write_results(OUT, result, started)


if __name__ == "__main__":
    main()
