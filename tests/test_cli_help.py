"""`nas --help` is grouped by job and every command's help starts without the heavy
modules (torch, numpy, Optuna, ...): they are imported when a command runs."""

from __future__ import annotations

import json
import subprocess
import sys

import typer.main

from nas.cli import app

HEAVY = ("torch", "numpy", "scipy", "optuna", "pymoo", "sklearn", "pandas", "plotly",
         "safetensors", "xgboost", "onnxruntime")

_PROBE = """
import json, sys
import typer.main
from typer.testing import CliRunner
from nas.cli import app

def paths(command, prefix=()):
    yield prefix
    for name, sub in getattr(command, "commands", {}).items():
        yield from paths(sub, (*prefix, name))

runner = CliRunner()
failed = []
for path in paths(typer.main.get_command(app)):
    result = runner.invoke(app, [*path, "--help"])
    if result.exit_code != 0 or "Usage" not in result.output:
        failed.append(" ".join(path))
print(json.dumps({"failed": failed, "modules": sorted(sys.modules)}))
"""


def test_every_help_page_loads_no_heavy_module():
    probe = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                           timeout=120)
    assert probe.returncode == 0, probe.stderr
    document = json.loads(probe.stdout)
    assert document["failed"] == []
    loaded = {name.split(".")[0] for name in document["modules"]}
    assert sorted(loaded & set(HEAVY)) == []


def test_top_level_help_lists_every_command_once_under_its_job():
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    panels = [line for line in result.output.splitlines() if line.startswith("╭─ ")]
    assert [p.strip("╭─╮ ") for p in panels] == [
        "Options", "Search for a subnet and ship it", "Read and compare studies",
        "Hardware targets and measurements", "Supernets and training",
        "Compression and quantization", "Predictors and benchmarks"]
    listed = [line.split()[1] for line in result.output.splitlines()
              if line.startswith("│ ") and not line.startswith("│  ")
              and not line.split()[1].startswith("-")]
    assert sorted(listed) == sorted(typer.main.get_command(app).commands)
