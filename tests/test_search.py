"""The search engine: problem, evaluator, algorithms, the search loop and resume.

Runs against a tiny fake supernet whose accuracy and latency are deterministic
functions of the config, so these tests need no trained model.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from pg_server import STORAGES  # as a top-level module: the SIGKILL script imports this file
from torch import nn

from nas import Condition, Config, Gene, SearchSpace, SubnetShape, Supernet
from nas._evaluator import Evaluator, FunctionEvaluator
from nas._problem import Constraint, Objective, Problem, accuracy_latency_problem
from nas._search import SearchProgress, run_search
from nas.algorithms import ALGORITHMS, Algorithm, get_algorithm, list_algorithms
from nas.studies import StudyMeta, open_study

# -- fakes -----------------------------------------------------------------------------

SPACE = SearchSpace(
    "fake",
    [
        Gene("depth", (1, 2, 3)),
        Gene("width.0", (8, 16, 32)),
        Gene("width.1", (8, 16, 32), Condition("depth", 2)),
        Gene("width.2", (8, 16, 32), Condition("depth", 3)),
        Gene("act", ("relu", "gelu")),
    ],
)  # 78 distinct configs


def fake_accuracy(config: Config) -> float:
    widths = sum(v for k, v in config.items() if k.startswith("width."))
    return round(1.0 - 1.0 / (1.0 + widths / 24.0) + (0.01 if config["act"] == "gelu" else 0.0), 6)


def fake_latency(config: Config) -> float:
    widths = sum(v for k, v in config.items() if k.startswith("width."))
    return 0.25 * widths + 2.0 * config["depth"] + (0.5 if config["act"] == "gelu" else 0.0)


class FakeSupernet(Supernet):
    family = "fake"
    checkpoint_hash = "c0ffee" * 4

    def __init__(self, sleep: float = 0.0) -> None:
        super().__init__()
        self.space = SPACE
        self.sleep = sleep
        self.activations = 0

    def _activate(self, config: Config) -> None:
        self.activations += 1
        if self.sleep:
            time.sleep(self.sleep)

    def _extract(self, config: Config) -> nn.Module:
        return nn.Identity()

    def _describe(self, config: Config) -> SubnetShape:
        return SubnetShape(family="fake", layers=())

    def _architecture(self) -> dict[str, Any]:
        return {}


class FakeTask:
    name = "fake-task"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def evaluate(self, model: Any, *, split: str = "validation", limit: int | None = None,
                 per: bool = True) -> dict[str, float]:
        self.calls.append({"split": split, "limit": limit, "per": per})
        return {"accuracy": fake_accuracy(model.active_config), "loss": 0.5, "names": ["x"]}


class FakeTarget:
    name = "fake-hw"
    fingerprint = "fake-hw-v1"

    def latency_ms(self, supernet: Any, config: Config, task: Any) -> float:
        return fake_latency(config)


BUDGET = 20.0


def make_problem(budget: float = BUDGET) -> Problem:
    return accuracy_latency_problem(SPACE, budget_ms=budget)


def make_meta(problem: Problem, *, seed: int = 0, algorithm: str = "nsga2") -> StudyMeta:
    return StudyMeta.for_problem(
        problem, supernet="fake", checkpoint_hash=FakeSupernet.checkpoint_hash,
        hardware="fake-hw", hardware_fingerprint=FakeTarget.fingerprint, seed=seed,
        algorithm=algorithm, task="fake-task",
    )


def search(storage: str, n_evals: int, *, algorithm: str = "nsga2", name: str = "s",
           seed: int = 0, budget: float = BUDGET, **options: Any):
    """One 'process' of the search: every object built afresh, as the CLI would."""
    problem = make_problem(budget)
    supernet = FakeSupernet()
    evaluator = Evaluator(supernet, FakeTask(), FakeTarget())
    study = open_study(name, storage, meta=make_meta(problem, seed=seed, algorithm=algorithm),
                       space=SPACE)
    algo = get_algorithm(algorithm, problem, seed=seed, **options)
    result = run_search(problem, algo, evaluator, study, n_evals=n_evals, progress=False)
    return result, study, supernet


def configs_of(study) -> list[str]:
    return [json.dumps(t.config, sort_keys=True) for t in study.trials()]


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty Optuna database, made once: creating the schema takes most of a second."""
    path = tmp_path_factory.mktemp("template") / "empty.db"
    optuna.storages.RDBStorage(f"sqlite:///{path}").engine.dispose()
    return path


@pytest.fixture
def new_storage(tmp_path: Path, empty_db: Path):
    """Makes URLs of fresh, empty study databases."""
    def make(name: str = "studies.db") -> str:
        shutil.copyfile(empty_db, tmp_path / name)
        return f"sqlite:///{tmp_path / name}"
    return make


@pytest.fixture
def storage(new_storage) -> str:
    return new_storage()


@pytest.fixture(params=STORAGES)
def any_new_storage(request: pytest.FixtureRequest, new_storage):
    """Makes URLs of fresh, empty study databases: SQLite files, then PostgreSQL
    databases (the ``postgres`` tests)."""
    if request.param == "sqlite":
        yield new_storage
        return
    databases = request.getfixturevalue("postgres_databases")
    made: list[str] = []

    def make(name: str = "") -> str:
        made.append(databases.create())
        return made[-1]

    yield make
    for url in made:
        databases.drop(url)


# -- problem ---------------------------------------------------------------------------


def test_problem_violation_and_minimisation() -> None:
    problem = Problem(
        SPACE,
        (Objective("accuracy", "maximize"), Objective("latency_ms", "minimize")),
        (Constraint("latency_ms", 20.0), Constraint("memory_mb", 10.0)),
    )
    ok = {"accuracy": 0.8, "latency_ms": 20.0, "memory_mb": 5.0}
    assert problem.violation(ok) == 0.0 and problem.is_feasible(ok)
    bad = {"accuracy": 0.8, "latency_ms": 30.0, "memory_mb": 15.0}
    assert problem.violation(bad) == pytest.approx(0.5 + 0.5)
    assert not problem.is_feasible(bad)
    np.testing.assert_allclose(problem.to_minimization(ok), [-0.8, 20.0])
    assert not problem.is_feasible({"accuracy": 0.8, "latency_ms": math.nan, "memory_mb": 1.0})
    assert problem.metric_names == ("accuracy", "latency_ms", "memory_mb")


def test_problem_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="direction must be one of"):
        Objective("accuracy", "max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one objective"):
        Problem(SPACE, ())
    with pytest.raises(ValueError, match="twice"):
        Problem(SPACE, (Objective("a", "minimize"), Objective("a", "maximize")))
    with pytest.raises(ValueError, match="finite"):
        Constraint("latency_ms", math.inf)
    with pytest.raises(ValueError, match="budget_ms must be a positive"):
        accuracy_latency_problem(SPACE, budget_ms=0)
    with pytest.raises(ValueError, match="metrics have no 'latency_ms'"):
        make_problem().violation({"accuracy": 0.5})


# -- evaluator -------------------------------------------------------------------------


def test_evaluator_metrics_cache_and_per_keyword() -> None:
    supernet, task = FakeSupernet(), FakeTask()
    evaluator = Evaluator(supernet, task, FakeTarget(), eval_limit=50)
    config = SPACE.largest()
    metrics = evaluator.evaluate(config)
    assert metrics == {"accuracy": fake_accuracy(config), "loss": 0.5,
                       "latency_ms": fake_latency(config)}
    assert task.calls == [{"split": "validation", "limit": 50, "per": False}]
    assert evaluator.evaluate(config.to_dict()) == metrics  # cache hit, dict input
    assert supernet.activations == 1
    assert evaluator.cached(config) == metrics


def test_evaluator_cache_key_depends_on_everything_that_changes_figures() -> None:
    config = SPACE.smallest()
    base = Evaluator(FakeSupernet(), FakeTask(), FakeTarget())
    limited = Evaluator(FakeSupernet(), FakeTask(), FakeTarget(), eval_limit=10)
    other_target = FakeTarget()
    other_target.fingerprint = "fake-hw-v2"  # type: ignore[misc]
    moved = Evaluator(FakeSupernet(), FakeTask(), other_target)
    keys = {e.cache_key(config) for e in (base, limited, moved)}
    assert len(keys) == 3
    same = Evaluator(FakeSupernet(), FakeTask(), FakeTarget())
    assert base.cache_key(config) == same.cache_key(config)
    assert base.cache_key(config) != base.cache_key(SPACE.largest())


def test_evaluator_task_without_per_keyword_and_bad_limit() -> None:
    class PlainTask:
        name = "plain"

        def evaluate(self, model: Any, *, split: str = "validation",
                     limit: int | None = None) -> dict[str, float]:
            return {"accuracy": 0.5}

    evaluator = Evaluator(FakeSupernet(), PlainTask(), FakeTarget())
    assert evaluator.evaluate(SPACE.smallest())["accuracy"] == 0.5
    with pytest.raises(ValueError, match="eval_limit must be a positive integer"):
        Evaluator(FakeSupernet(), PlainTask(), FakeTarget(), eval_limit=0)


def test_function_evaluator() -> None:
    calls = []

    def fn(config: Config) -> dict[str, float]:
        calls.append(config)
        return {"accuracy": fake_accuracy(config), "latency_ms": fake_latency(config)}

    evaluator = FunctionEvaluator(SPACE, fn, fingerprint="toy")
    config = SPACE.largest()
    assert evaluator.evaluate(config) == evaluator.evaluate(config)
    assert len(calls) == 1
    with pytest.raises(ValueError, match="must be one of"):
        evaluator.evaluate({"depth": 4, "width.0": 8, "act": "relu"})


# -- algorithms ------------------------------------------------------------------------


def test_registry_lists_algorithms_and_rejects_unknown() -> None:
    assert {"random", "nsga2", "default"} <= set(list_algorithms())
    assert ALGORITHMS.entry("default").factory is ALGORITHMS.entry("screened").factory
    with pytest.raises(ValueError, match="unknown algorithm 'cmaes'; known: .*default, .*nsga2"):
        get_algorithm("cmaes", make_problem(), seed=0)
    with pytest.raises(ValueError, match="has no option 'popsize'; its options: pop_size"):
        get_algorithm("nsga2", make_problem(), seed=0, popsize=4)
    with pytest.raises(ValueError, match="pop_size must be an integer >= 2"):
        get_algorithm("nsga2", make_problem(), seed=0, pop_size=1)


def _drive(algo: Algorithm, rounds: int) -> list[list[str]]:
    asked = []
    for _ in range(rounds):
        configs = algo.ask()
        asked.append([c.key for c in configs])
        algo.tell(configs, [{"accuracy": fake_accuracy(c), "latency_ms": fake_latency(c)}
                            for c in configs])
    return asked


@pytest.mark.parametrize("name", ["random", "nsga2"])
def test_algorithms_are_deterministic_given_seed_and_results(name: str) -> None:
    problem = make_problem()
    first = _drive(get_algorithm(name, problem, seed=3), 4)
    again = _drive(get_algorithm(name, problem, seed=3), 4)
    other = _drive(get_algorithm(name, problem, seed=4), 4)
    assert first == again
    assert first != other
    assert all(first)


def test_nsga2_batches_are_new_valid_configs_and_improve() -> None:
    problem = make_problem()
    algo = get_algorithm("nsga2", problem, seed=0, pop_size=8)
    seen: set[Config] = set()
    for _ in range(5):
        configs = algo.ask()
        assert len(configs) == 8
        assert len(set(configs)) == 8 and not (set(configs) & seen)  # no re-proposals
        assert all(SPACE.config(c) == c for c in configs)  # canonical
        seen.update(configs)
        algo.tell(configs, [{"accuracy": fake_accuracy(c), "latency_ms": fake_latency(c)}
                            for c in configs])
    with pytest.raises(ValueError, match="one result per config"):
        configs = algo.ask()
        algo.tell(configs, [])


def test_nsga2_handles_single_choice_genes_and_a_one_config_space() -> None:
    space = SearchSpace("fixed", [Gene("a", (1,)), Gene("b", (1, 2, 3)), Gene("c", (5,))])
    problem = Problem(space, (Objective("x", "minimize"),))
    algo = get_algorithm("nsga2", problem, seed=0, pop_size=2)
    configs = algo.ask()
    assert {c["a"] for c in configs} == {1} and {c["c"] for c in configs} == {5}
    algo.tell(configs, [{"x": float(c["b"])} for c in configs])

    single = SearchSpace("single", [Gene("a", (1,))])
    algo = get_algorithm("nsga2", Problem(single, (Objective("x", "minimize"),)), seed=0)
    configs = algo.ask()
    assert configs == [single.config({"a": 1})]
    algo.tell(configs, [{"x": 1.0}])
    assert algo.ask() == []


def test_ask_tell_protocol_is_enforced() -> None:
    algo = get_algorithm("random", make_problem(), seed=0, batch_size=2)
    with pytest.raises(RuntimeError, match="nothing was asked"):
        algo.tell([], [])
    configs = algo.ask()
    with pytest.raises(RuntimeError, match="tell the previous batch first"):
        algo.ask()
    with pytest.raises(ValueError, match="configs of the last ask"):
        algo.tell(configs[::-1], [{}, {}])


# -- the search loop -------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["random", "nsga2"])
def test_search_fills_the_study_and_reports_the_front(storage: str, algorithm: str) -> None:
    seen: list[SearchProgress] = []
    problem = make_problem()
    study = open_study("s", storage, meta=make_meta(problem, algorithm=algorithm), space=SPACE)
    evaluator = Evaluator(FakeSupernet(), FakeTask(), FakeTarget())
    options = {"pop_size": 8} if algorithm == "nsga2" else {}
    algo = get_algorithm(algorithm, problem, seed=0, **options)
    result = run_search(problem, algo, evaluator, study, n_evals=20, progress=seen.append)
    assert result.evaluations == result.new_evaluations == len(study) == 20
    assert not result.stopped_early and result.stop_reason is None
    assert [p.evaluations for p in seen] == list(range(1, 21))
    trials = study.trials()
    assert len({t.cache_key for t in trials}) == 20  # every subnet evaluated once
    # the front: feasible, mutually non-dominated, sorted by latency
    assert result.pareto
    lat = [p.metrics["latency_ms"] for p in result.pareto]
    acc = [p.metrics["accuracy"] for p in result.pareto]
    assert lat == sorted(lat) and all(x <= BUDGET for x in lat)
    assert acc == sorted(acc)
    assert 0.0 < result.hypervolume < 1.0
    assert seen[-1].hypervolume == pytest.approx(result.hypervolume)
    best = max(t.metrics["accuracy"] for t in trials if t.metrics["latency_ms"] <= BUDGET)
    assert seen[-1].best == best == max(acc)
    assert json.loads(json.dumps(result.to_dict()))["evaluations"] == 20


def test_progress_bar(storage: str, capsys: pytest.CaptureFixture[str]) -> None:
    problem = make_problem()
    study = open_study("bar", storage, meta=make_meta(problem), space=SPACE)
    result = run_search(problem, get_algorithm("random", problem, seed=0),
                        Evaluator(FakeSupernet(), FakeTask(), FakeTarget()), study,
                        n_evals=3, progress=True)
    assert result.evaluations == 3
    err = capsys.readouterr().err
    assert "3/3" in err and "best feasible accuracy" in err and "hv" in err


def test_rerunning_a_finished_search_evaluates_nothing(storage: str) -> None:
    first, _, _ = search(storage, 12)
    again, _, supernet = search(storage, 12)
    assert again.new_evaluations == 0 and supernet.activations == 0
    assert again.evaluations == 12 and again.pareto == first.pareto


def test_resume_continues_exactly_where_the_run_stopped(any_new_storage) -> None:
    whole = any_new_storage("whole.db")
    parts = any_new_storage("parts.db")
    uninterrupted, whole_study, _ = search(whole, 20, pop_size=8)
    first, _, _ = search(parts, 10, pop_size=8)
    assert first.new_evaluations == 10
    resumed, parts_study, supernet = search(parts, 20, pop_size=8)
    assert resumed.new_evaluations == 10 and supernet.activations == 10
    assert resumed.evaluations == 20
    assert configs_of(parts_study) == configs_of(whole_study)
    assert resumed.hypervolume == pytest.approx(uninterrupted.hypervolume)


def test_duplicates_within_a_batch_are_evaluated_once(storage: str) -> None:
    class Repeating(Algorithm):
        def _ask(self):
            return [SPACE.smallest(), SPACE.largest(), SPACE.smallest()]

        def _tell(self, configs, results) -> None:
            assert results[0] == results[2]

    problem = make_problem()
    study = open_study("dup", storage, meta=make_meta(problem, algorithm="repeat"), space=SPACE)
    supernet = FakeSupernet()
    result = run_search(problem, Repeating(problem, seed=0),
                        Evaluator(supernet, FakeTask(), FakeTarget()), study,
                        n_evals=5, progress=False, max_fruitless_asks=3)
    assert supernet.activations == 2 and result.evaluations == 2
    assert result.stopped_early and "no new config in 3 asks" in result.stop_reason


def test_exhausted_space_stops_early(storage: str) -> None:
    space = SearchSpace("tiny", [Gene("a", (1, 2)), Gene("b", (1, 2))])
    problem = Problem(space, (Objective("accuracy", "maximize"),))
    meta = StudyMeta.for_problem(problem, supernet="f", checkpoint_hash="c", hardware="t",
                                 hardware_fingerprint="t", seed=0, algorithm="nsga2")
    study = open_study("tiny", storage, meta=meta, space=space)
    evaluator = FunctionEvaluator(space, lambda c: {"accuracy": c["a"] / 2})
    for name in ("nsga2", "random"):
        result = run_search(problem, get_algorithm(name, problem, seed=0), evaluator, study,
                            n_evals=10, progress=False, max_fruitless_asks=5)
        assert result.evaluations == 4 and result.stopped_early
        assert "the space has 4 distinct configs" in result.stop_reason
        assert result.hypervolume == 1.0  # error 0 reached: the whole unit interval


def test_search_rejects_mismatched_parts(storage: str) -> None:
    problem = make_problem()
    study = open_study("s", storage, meta=make_meta(problem), space=SPACE)
    evaluator = Evaluator(FakeSupernet(), FakeTask(), FakeTarget())
    algo = get_algorithm("random", problem, seed=0)
    with pytest.raises(ValueError, match="n_evals must be a positive integer"):
        run_search(problem, algo, evaluator, study, n_evals=0, progress=False)
    with pytest.raises(ValueError, match="progress must be"):
        run_search(problem, algo, evaluator, study, n_evals=1, progress="yes")  # type: ignore[arg-type]
    other = SearchSpace("other", [Gene("a", (1, 2))])
    with pytest.raises(ValueError, match="the evaluator searches space 'other'"):
        run_search(problem, algo, FunctionEvaluator(other, lambda c: {}), study, n_evals=1,
                   progress=False)
    partial = FunctionEvaluator(SPACE, lambda c: {"accuracy": 0.5})
    with pytest.raises(ValueError, match="returned no 'latency_ms' metric"):
        run_search(problem, get_algorithm("random", problem, seed=0), partial, study,
                   n_evals=1, progress=False)
    assert len(study) == 0  # nothing half-measured is stored


# -- SIGKILL -------------------------------------------------------------------------------

_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import test_search as t
from nas._evaluator import Evaluator
from nas._search import run_search
from nas.algorithms import get_algorithm
from nas.studies import open_study

problem = t.make_problem()
study = open_study("killed", {storage!r}, meta=t.make_meta(problem), space=t.SPACE)
log = open({log!r}, "a")

def progress(state):
    log.write(f"{{state.evaluations}}\\n")
    log.flush()

run_search(problem, get_algorithm("nsga2", problem, seed=0, pop_size=8),
           Evaluator(t.FakeSupernet(sleep={sleep}), t.FakeTask(), t.FakeTarget()),
           study, n_evals=24, progress=progress, commit_seconds={commit_seconds})
"""


@pytest.mark.slow
@pytest.mark.parametrize("commit_seconds", [0, 1.0])
def test_sigkill_mid_search_loses_no_finished_trial(tmp_path: Path, any_new_storage,
                                                    commit_seconds: float) -> None:
    """With ``commit_seconds=0`` every reported evaluation survives a SIGKILL; with
    batched commits the last second's may not, and the rerun replays them: either way
    the resumed study is the one an uninterrupted run makes."""
    storage = any_new_storage("killed.db")
    log = tmp_path / "progress.log"
    script = tmp_path / "search.py"
    script.write_text(textwrap.dedent(_SCRIPT.format(
        tests=str(Path(__file__).parent), storage=storage, log=str(log), sleep=0.1,
        commit_seconds=commit_seconds)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if log.exists() and len(log.read_text().split()) >= 9:
                break
            if proc.poll() is not None:
                pytest.fail(f"search exited early: {proc.stdout.read().decode()[-2000:]}")
            time.sleep(0.02)
        else:
            pytest.fail("search made no progress")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reported = [int(x) for x in log.read_text().split()]
    assert reported == list(range(1, len(reported) + 1))
    problem = make_problem()
    study = open_study("killed", storage, meta=make_meta(problem), space=SPACE)
    kept = len(study)
    assert kept <= reported[-1] < 24
    if commit_seconds == 0:
        assert kept == reported[-1]  # every trial reported as finished is in the study
    supernet = FakeSupernet()
    result = run_search(problem, get_algorithm("nsga2", problem, seed=0, pop_size=8),
                        Evaluator(supernet, FakeTask(), FakeTarget()), study, n_evals=24,
                        progress=False)
    assert result.new_evaluations == 24 - kept == supernet.activations
    _, whole_study, _ = search(any_new_storage("whole.db"), 24, pop_size=8)
    assert configs_of(study) == configs_of(whole_study)


# -- batched commits and a constant cost per evaluation ----------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_commits_follow_the_durability_rule(storage: str) -> None:
    """Cheap evaluations wait until the oldest started ``commit_seconds`` ago; one that
    took that long is committed at once; a commit always empties the buffer."""
    from nas._search import _Recorder

    problem = make_problem()
    study = open_study("s", storage, meta=make_meta(problem), space=SPACE)
    clock = _Clock()
    recorder = _Recorder(study, problem, 1.0, clock=clock)
    configs = [SPACE.config(c) for c in ({"depth": 1, "width.0": w, "act": a}
                                         for w in (8, 16, 32) for a in ("relu", "gelu"))]
    metrics = {"accuracy": 0.5, "latency_ms": 3.0}
    for i, config in enumerate(configs[:3]):
        clock.now += 0.3  # each took 0.1 s, the loop 0.2 s
        recorder.add(config, metrics, f"k{i}", 0.1)
    # the first started at 100.2, it is now 100.9: nothing committed, all visible
    assert len(study) == 0 and len(recorder) == 3 and recorder.lookup("k1") == metrics
    clock.now += 0.35
    recorder.commit_if_due()  # an ask/tell later: 1.05 s since the first started
    assert len(study.trials()) == 3 and recorder.commits == 1
    clock.now += 1.5
    recorder.add(configs[3], metrics, "slow", 1.2)  # expensive: committed on its own
    assert len(study.trials()) == 4 and recorder.commits == 2
    clock.now += 0.1
    recorder.add(configs[4], metrics, "k4", 0.01)
    recorder.commit()  # the end of a run (or an error)
    assert [t.cache_key for t in study.trials()] == ["k0", "k1", "k2", "slow", "k4"]


def test_an_evaluator_error_keeps_the_evaluations_before_it(storage: str) -> None:
    problem = make_problem()
    calls = []

    def evaluate(config: Config) -> dict[str, float]:
        calls.append(config)
        if len(calls) == 6:
            raise RuntimeError("the device went away")
        return {"accuracy": fake_accuracy(config), "latency_ms": fake_latency(config)}

    study = open_study("s", storage, meta=make_meta(problem, algorithm="random"), space=SPACE)
    with pytest.raises(RuntimeError, match="went away"):
        run_search(problem, get_algorithm("random", problem, seed=0),
                   FunctionEvaluator(SPACE, evaluate), study, n_evals=20, progress=False)
    assert [t.config for t in study.trials()] == [c.to_dict() for c in calls[:5]]


def test_storage_reads_do_not_grow_with_the_study(storage: str, monkeypatch) -> None:
    """With no time passing between evaluations, a run reads the storage a fixed number
    of times however many subnets it evaluates (it used to read every trial per
    evaluation)."""
    from nas.studies import _bulk
    from nas.studies import _study as study_module

    monkeypatch.setattr(study_module, "REREAD_SECONDS", 1e9)
    reads = []
    counted = _bulk.finished_count
    monkeypatch.setattr(study_module, "finished_count",
                        lambda *a: reads.append(1) or counted(*a))
    problem = make_problem(budget=1e9)
    big = SearchSpace("big", [Gene(f"g{i}", (0, 1, 2, 3)) for i in range(8)])
    problem = Problem(big, problem.objectives, problem.constraints)

    def metrics(config: Config) -> dict[str, float]:
        return {"accuracy": sum(config.values()) / 24, "latency_ms": 1.0 + config["g0"]}

    counts = {}
    for n in (50, 500):
        reads.clear()
        study = open_study(f"s{n}", storage, meta=StudyMeta.for_problem(
            problem, supernet="fake", checkpoint_hash="c", hardware="h",
            hardware_fingerprint="f", seed=0, algorithm="random"), space=big)
        result = run_search(problem, get_algorithm("random", problem, seed=0),
                            FunctionEvaluator(big, metrics), study, n_evals=n,
                            progress=False, commit_seconds=3600)
        assert result.evaluations == n and result.commits == 1
        counts[n] = len(reads)
    assert counts[50] == counts[500] <= 3
