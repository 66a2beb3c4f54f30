"""Imports run one way: the import-linter contracts in ``pyproject.toml`` hold.

The package's folders sit side by side at the repository's top level and reach the
``nas`` package through ``[tool.setuptools.package-dir]``; import-linter walks one folder
tree, so the tests copy the sources into the tree the installed package has
(``nas/supernets/...``) and lint that copy, in a fresh interpreter that imports nothing
from the installed package.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


def _stage(out: Path) -> Path:
    """The package's sources as installed (``nas/supernets/...``) under ``out``."""
    mapping = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(mapping.items(), key=lambda item: item[0].count(".")):
        shutil.copytree(ROOT / folder, out.joinpath(*package.split(".")), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "zoo", "data"))
    shutil.copy(PYPROJECT, out / "pyproject.toml")
    return out


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, "
            "no_logo=True))")
    return subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True,
                          text=True, env={"PYTHONPATH": str(tree), "PATH": ""}, timeout=300)


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _stage(tmp_path_factory.mktemp("layers"))


def test_the_contracts_hold(staged: Path) -> None:
    result = _lint(staged)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_every_module_of_the_package_has_a_layer() -> None:
    """A new top-level module must be placed in the layers, or nothing checks it."""
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    layered = {name.strip() for contract in config if contract["type"] == "layers"
               for layer in contract["layers"] for name in layer.replace("|", ":").split(":")}
    mapping = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-dir"]
    top = {f"nas.{p.stem}" for p in (ROOT / "nas").glob("_*.py") if p.stem != "__init__"}
    top |= {package for package in mapping if package.count(".") == 1}
    top |= {f"nas.{p.name}" for p in (ROOT / "nas").iterdir()
            if p.is_dir() and (p / "__init__.py").exists()}
    assert sorted(top - layered) == []


def test_an_upward_lazy_import_breaks_the_layers(tmp_path: Path) -> None:
    """The check can fail: a supernet module that imports the studies inside a function
    (an import the layers forbid, hidden from a module-level scan)."""
    tree = _stage(tmp_path)
    (tree / "nas" / "supernets" / "_upward.py").write_text(
        "def read():\n    from nas.studies import open_study\n\n    return open_study\n")
    result = _lint(tree)
    assert result.returncode != 0
    assert "nas.supernets is not allowed to import nas.studies" in result.stdout
    assert "nas.supernets._upward -> nas.studies" in result.stdout
