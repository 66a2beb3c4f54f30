"""``nas search --memory-budget`` / ``--objective memory``: the budget, its study, bad input."""

from __future__ import annotations

import json

import pytest

import nas
from nas._hardware import model_memory
from nas._units import format_mb, parse_size_mb
from nas._worker import prepare_worker
from nas.studies import study_dataframe
from tests.budgets import feasible_budget
from tests.cli_helpers import nas as run
from tests.cli_helpers import one_line_error


def _search(tmp_path, *extra: str, study: str = "m", evals: str = "6"):
    budget = feasible_budget("sortednet", factor=50.0)[1]
    return run("search", "--supernet", "sortednet", "--hw", "local-cpu", "--budget", budget,
               "--evals", evals, "--eval-limit", "200", "--study", study,
               "--storage", f"sqlite:///{tmp_path / 's.db'}", "--json", *extra)


def _smallest_memory_mb() -> float:
    supernet = nas.get_supernet("sortednet")
    task = nas.get_task(supernet.task_name)
    memory = nas.get_hardware("local-cpu").memory(supernet, supernet.space.smallest(), task)
    return memory.peak_bytes / 1e6


def test_a_memory_budget_below_the_smallest_subnet_is_refused(tmp_path):
    smallest = _smallest_memory_mb()
    result = _search(tmp_path, "--memory-budget", f"{smallest * 1000 * 0.9:.3f}kB")
    one_line_error(result, "memory budget", "is infeasible on local-cpu",
                   f"no subnet of sortednet needs less than {format_mb(smallest)}")
    assert not (tmp_path / "s.db").exists()  # nothing written


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--memory-budget", "8"], ["memory budget '8' needs a unit", "MB"]),
        (["--memory-budget", "-1MB"], ["memory budget must be positive", "-1MB"]),
        (["--objective", "speed"], ["--objective must be size or memory", "speed"]),
        (["--memory-budget", "1MB", "--quantize", "int8"], ["fp32 subnets only"]),
    ],
)
def test_bad_memory_options_are_one_line(tmp_path, args, fragments):
    one_line_error(_search(tmp_path, *args), *fragments)
    assert not (tmp_path / "s.db").exists()


def test_memory_units_are_those_of_the_other_budgets():
    assert parse_size_mb("8MB", what="memory budget") == 8.0
    assert parse_size_mb("500kB", what="memory budget") == 0.5
    assert format_mb(0.6897) == "689.7 kB" and format_mb(7.70765) == "7.71 MB"


@pytest.mark.slow
def test_the_memory_budget_excludes_what_latency_alone_would_choose(tmp_path):
    """MCUFormer's point on a small case: under a loose latency budget the most accurate
    subnet is one the memory budget forbids, and the search under both picks another."""
    latency_only = _search(tmp_path, "--algorithm", "random", "--objective", "memory",
                           study="latency", evals="24")
    assert latency_only.exit_code == 0, latency_only.output
    front = json.loads(latency_only.stdout)["pareto"]
    chosen = max(front, key=lambda p: (p["accuracy"], -p["memory_mb"]))
    budget = (chosen["memory_mb"] + _smallest_memory_mb()) / 2
    assert budget < chosen["memory_mb"]

    both = _search(tmp_path, "--algorithm", "random", "--memory-budget", f"{budget}MB",
                   study="memory", evals="24")
    assert both.exit_code == 0, both.output
    document = json.loads(both.stdout)
    assert document["pareto"]
    assert all(p["memory_mb"] <= budget for p in document["pareto"])
    assert chosen["config"] not in [p["config"] for p in document["pareto"]]

    # the study keeps its memory budget: another one is refused, nothing changes
    again = _search(tmp_path, "--algorithm", "random", "--memory-budget", f"{budget / 2}MB",
                    study="memory", evals="24")
    assert again.exit_code != 0 and "memory_mb" in again.output

    # a worker rebuilds the same memory budget and evaluator from the study
    worker = prepare_worker(f"sqlite:///{tmp_path / 's.db'}", "memory")
    assert worker.problem.upper_bound("memory_mb") == pytest.approx(budget)
    config = worker.problem.space.smallest()
    assert worker.evaluator.evaluate(config)["memory_mb"] == pytest.approx(
        _smallest_memory_mb())

    # the report and the study table show memory
    out = tmp_path / "report.html"
    report = run("report", "--study", "memory", "--storage",
                 f"sqlite:///{tmp_path / 's.db'}", "--out", str(out))
    assert report.exit_code == 0, report.output
    html = out.read_text()
    assert "memory (MB)" in html
    shown = f"{document['pareto'][0]['memory_mb']:.4g}"
    assert shown in html
    table = study_dataframe("memory", f"sqlite:///{tmp_path / 's.db'}")
    assert (table["memory_mb"] <= budget).sum() >= len(document["pareto"])


@pytest.mark.slow
def test_the_report_models_memory_for_a_study_that_did_not_search_it(tmp_path):
    result = _search(tmp_path, "--algorithm", "random", study="plain", evals="3")
    assert result.exit_code == 0, result.output
    front = json.loads(result.stdout)["pareto"]
    assert front and all("memory_mb" not in p for p in front)
    out = tmp_path / "report.html"
    report = run("report", "--study", "plain", "--storage", f"sqlite:///{tmp_path / 's.db'}",
                 "--out", str(out))
    assert report.exit_code == 0, report.output
    html = out.read_text()
    assert "memory (MB, modelled)" in html
    supernet = nas.get_supernet("sortednet")
    task = nas.get_task(supernet.task_name)
    modelled = model_memory(supernet.describe(front[0]["config"]), task.workload())
    assert f"{modelled.peak_bytes / 1e6:.4g}" in html


def test_the_least_memory_of_a_space_is_not_always_its_smallest_subnet(tmp_path):
    """NB201's "smallest" cell (every edge `none`) still computes zeros; a cell of skips
    allocates less. A budget between the two is feasible, one below the skips is not."""
    supernet = nas.get_supernet("nb201")
    task = nas.get_task(supernet.task_name)
    pixel3 = nas.get_hardware("pixel3")
    skips = pixel3.memory(supernet, {g.name: "skip_connect" for g in supernet.space.genes}, task)
    smallest = pixel3.memory(supernet, supernet.space.smallest(), task)
    assert skips.peak_bytes < smallest.peak_bytes
    between = (skips.peak_bytes + smallest.peak_bytes) / 2 / 1000

    def search(budget_kb: float):
        return run("search", "--supernet", "nb201", "--hw", "pixel3", "--budget", "5ms",
                   "--evals", "10", "--memory-budget", f"{budget_kb}kB",
                   "--storage", f"sqlite:///{tmp_path / 'nb.db'}", "--json")

    result = search(between)
    assert result.exit_code == 0, result.output
    assert all(p["memory_mb"] * 1000 <= between for p in json.loads(result.stdout)["pareto"])
    one_line_error(search(skips.peak_bytes / 1000 * 0.99), "is infeasible on pixel3",
                   f"needs less than {format_mb(skips.peak_bytes / 1e6)}")
