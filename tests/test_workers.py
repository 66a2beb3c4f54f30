"""Many workers, one study: the trial queue, the driver, workers, and faults.

The queue tests run on SQLite and PostgreSQL (``storage_url``); the end-to-end ones
(NB201 through the CLI, and 4 workers x 200 trials with a SIGKILLed worker and a
PostgreSQL restart) are ``slow``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nas._driver import QueueDriver
from nas._job import worker_batch
from nas._search import run_search
from nas._worker import run_worker
from nas.algorithms import get_algorithm
from nas.studies import StudyMismatchError, audit_study, load_study, open_study
from nas.studies._queue import ERROR_ATTR, QueueEntry, QueueError, TrialQueue, retried
from tests import pg_server, queue_worker
from tests.cli_helpers import nas, one_line_error

TESTS = Path(__file__).parent
SPACE, PROBLEM, META = queue_worker.SPACE, queue_worker.PROBLEM, queue_worker.META


def new_queue(url: str, name: str = "q", **options) -> TrialQueue:
    return TrialQueue(open_study(name, url, meta=META, space=SPACE), **options)


def entries(n: int, *, batch: int = 0) -> list[QueueEntry]:
    evaluator = queue_worker.evaluator()
    configs = [SPACE.config({f"g{i}": (j >> (2 * i)) & 3 for i in range(8)}) for j in range(n)]
    return [QueueEntry(c, evaluator.cache_key(c), batch, i) for i, c in enumerate(configs)]


def trial(queue: TrialQueue, number: int):
    storage = queue.storage
    return storage.get_trial(storage.get_trial_id_from_study_id_trial_number(
        queue.study_id, number))


# -- the queue ---------------------------------------------------------------------------


def test_enqueue_skips_queued_and_evaluated_keys_and_workers_trials_count(
        storage_url: str) -> None:
    queue = new_queue(storage_url)
    first = entries(4)
    assert queue.enqueue(first[:3]) == 3
    assert queue.enqueue(first) == 1  # only the fourth is new
    claimed = queue.claim("w1")
    assert (claimed.number, claimed.key, claimed.config) == (
        0, first[0].key, first[0].config.to_dict())
    waiting = trial(queue, 1)
    assert waiting.state.name == "WAITING"
    assert waiting.user_attrs["nas.batch"] == 0 and waiting.user_attrs["nas.index"] == 1
    metrics = queue_worker.metrics(first[0].config)
    assert queue.complete(claimed, metrics, feasible=True, eval_seconds=0.5)
    assert queue.enqueue(first[:1]) == 0  # evaluated: never enqueued again
    study = open_study("q", storage_url, meta=META, space=SPACE)
    [record] = study.trials()  # the worker's trial reads like any other
    assert record.metrics == metrics and record.cache_key == first[0].key
    assert study.lookup(first[0].key) == record
    done = trial(queue, 0)
    assert done.state.name == "COMPLETE" and done.user_attrs["eval_seconds"] == 0.5
    assert done.values == [metrics["accuracy"], metrics["latency_ms"]]
    assert queue.outcomes([first[0].key])[first[0].key].state == "done"


_CLAIMER = """
import sys
sys.path.insert(0, {tests!r})
import queue_worker as q
from nas.studies import open_study
from nas.studies._queue import TrialQueue

queue = TrialQueue(open_study("q", sys.argv[1], meta=q.META, space=q.SPACE))
print("ready", flush=True)
sys.stdin.readline()
got = []
while (claimed := queue.claim()) is not None:
    got.append(claimed.number)
print(" ".join(map(str, got)), flush=True)
"""


@pytest.mark.slow
def test_processes_claiming_at_once_take_each_trial_once(storage_url: str) -> None:
    queue = new_queue(storage_url)
    queue.enqueue(entries(24))
    script = _CLAIMER.format(tests=str(TESTS))
    procs = [subprocess.Popen([sys.executable, "-c", script, storage_url], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(4)]
    assert [p.stdout.readline() for p in procs] == ["ready\n"] * 4
    for proc in procs:  # all claim at once
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outputs]
    claimed = [int(n) for out, _ in outputs for n in out.split()]
    assert sorted(claimed) == list(range(24))  # every trial once: one winner each


def test_stale_trials_fail_and_are_requeued_with_their_history_up_to_the_cap(
        storage_url: str) -> None:
    queue = new_queue(storage_url, max_retry=1)
    [entry] = entries(1)
    queue.enqueue([entry])
    claimed = queue.claim("dead-worker")
    time.sleep(1.2)  # SQLite's clock counts whole seconds
    assert queue.requeue_stale(0.5) == [0]
    failed = trial(queue, 0)
    assert failed.state.name == "FAIL"
    assert failed.user_attrs[ERROR_ATTR] == {"kind": "stale", "worker": "dead-worker",
                                             "message": failed.user_attrs[ERROR_ATTR]["message"]}
    assert not queue.complete(claimed, queue_worker.metrics(entry.config), feasible=True,
                              eval_seconds=1.0)  # too late: the result is dropped
    retry = trial(queue, 1)
    assert retry.state.name == "WAITING"
    assert retry.system_attrs == {"failed_trial": 0, "retry_history": [0]}
    study = open_study("q", storage_url, meta=META, space=SPACE)
    assert len(study) == 0 and study.lookup(entry.key) is None  # a crash is no result
    queue.claim("dead-worker-2")
    time.sleep(1.2)
    assert queue.requeue_stale(0.5) == [1]
    outcome = queue.outcomes([entry.key])[entry.key]
    assert outcome.state == "failed" and "retry cap 1" in outcome.message
    assert queue.claim() is None  # past the cap: nothing re-queued
    assert len(study) == 0 and study.trials() == []
    audit = audit_study("q", storage_url)
    assert [lost.trials for lost in audit.lost] == [(0, 1)] and not audit.healthy
    assert audit.summary().endswith("; 1 config lost (trials 0, 1)")


def test_a_beating_trial_is_not_stale(storage_url: str) -> None:
    queue = new_queue(storage_url)
    queue.enqueue(entries(1))
    claimed = queue.claim()
    time.sleep(1.2)
    queue.heartbeat(claimed.trial_id)
    assert queue.requeue_stale(1.0) == []


def _worker_thread(url: str, evaluator, **options) -> tuple[threading.Thread, list]:
    out: list = []

    def work() -> None:
        try:
            out.append(run_worker(new_queue(url), evaluator, PROBLEM, idle_exit=30,
                                  heartbeat=0.5, **options))
        except Exception as err:  # the test reads it
            out.append(err)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, out


def drive(url: str, n_evals: int, *, name: str = "q", check=None, **options):
    study = open_study(name, url, meta=META, space=SPACE)
    driver = QueueDriver(TrialQueue(study), stale_after=5.0, poll_seconds=0.01, check=check)
    return run_search(PROBLEM, get_algorithm("random", PROBLEM, seed=0, batch_size=6),
                      queue_worker.evaluator(), study, n_evals=n_evals, progress=False,
                      workers=driver, **options), study


def test_the_driver_asks_and_is_told_what_a_local_search_is(storage_url: str) -> None:
    local = open_study("local", storage_url, meta=META, space=SPACE)
    expected = run_search(PROBLEM, get_algorithm("random", PROBLEM, seed=0, batch_size=6),
                          queue_worker.evaluator(), local, n_evals=20, progress=False)
    threads = [_worker_thread(storage_url, queue_worker.evaluator(0.01)) for _ in range(2)]
    arrived = []
    study = open_study("q", storage_url, meta=META, space=SPACE)
    driver = QueueDriver(TrialQueue(study), poll_seconds=0.01)
    result = run_search(PROBLEM, get_algorithm("random", PROBLEM, seed=0, batch_size=6),
                        queue_worker.evaluator(), study, n_evals=20,
                        progress=lambda s: arrived.append(s.evaluations), workers=driver)
    for thread, out in threads:
        thread.join(timeout=30)
        assert out[0].stop_reason == "the search is finished"
    assert arrived == list(range(1, 21))  # the bar moves as results arrive
    assert result.new_evaluations == 20 and result.evaluations == 20
    assert [t.config for t in study.trials()] == [t.config for t in local.trials()]
    assert result.pareto == expected.pareto
    # resume is replay: a longer rerun serves the 20 from the study, then goes on
    thread, _ = _worker_thread(storage_url, queue_worker.evaluator())
    again, _ = drive(storage_url, 26)
    thread.join(timeout=30)
    assert (again.new_evaluations, again.cache_hits, again.evaluations) == (6, 20, 26)
    run_search(PROBLEM, get_algorithm("random", PROBLEM, seed=0, batch_size=6),
               queue_worker.evaluator(), local, n_evals=26, progress=False)
    assert [t.config for t in study.trials()] == [t.config for t in local.trials()]


def test_an_evaluation_error_is_a_failed_trial_that_stops_the_driver(
        storage_url: str) -> None:
    calls = []

    def evaluate(config):
        calls.append(config)
        if len(calls) == 4:
            raise RuntimeError("the device went away")
        return queue_worker.metrics(config)

    from nas._evaluator import FunctionEvaluator

    thread, out = _worker_thread(storage_url, FunctionEvaluator(
        SPACE, evaluate, fingerprint=queue_worker.FINGERPRINT), name="w7")
    with pytest.raises(QueueError) as error:
        drive(storage_url, 20)
    thread.join(timeout=30)
    assert str(error.value) == ("study 'q': trial 3 failed on worker w7: RuntimeError: "
                                "the device went away")
    study = open_study("q", storage_url, meta=META, space=SPACE)
    assert 3 not in [t.number for t in study.trials()]
    assert study.lookup(queue_worker.evaluator().cache_key(calls[3])) is None
    assert out[0].failed == 1


def test_a_worker_that_measures_something_else_gives_the_trial_back(
        storage_url: str) -> None:
    queue = new_queue(storage_url)
    queue.enqueue(entries(1))
    other = queue_worker.evaluator()
    other._fingerprint = "another-target"
    with pytest.raises(ValueError, match="would measure something else"):
        run_worker(queue, other, PROBLEM, idle_exit=1)
    assert trial(queue, 0).state.name == "WAITING"


def test_workers_bad_input_is_one_line(tmp_path: Path) -> None:
    base = ["search", "--supernet", "nb201", "--hw", "pixel3", "--budget", "5ms"]
    one_line_error(nas(*base, "--workers", "0"), "--workers must be from 1 to 32")
    one_line_error(nas(*base, "--workers", "33"), "--workers must be from 1 to 32")
    one_line_error(nas(*base, "--workers", "2", "--storage", "sqlite://"),
                   "workers cannot share an in-memory study")
    one_line_error(nas("worker", "--storage", f"sqlite:///{tmp_path}/none.db", "--study", "s"),
                   "no study database")
    url = f"sqlite:///{tmp_path}/s.db"
    open_study("other", url, meta=META, space=SPACE)
    one_line_error(nas("worker", "--storage", url, "--study", "s"), "no study 's'")


# -- end to end --------------------------------------------------------------------------


def _search_json(url: str, study: str, *extra: str) -> dict:
    command = [sys.executable, "-m", "nas.cli", "search", "--supernet", "nb201", "--hw",
               "pixel3", "--budget", "5ms", "--evals", "48", "--algorithm", "nsga2",
               "--seed", "3", "--storage", url, "--study", study, "--json", *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.slow
def test_nb201_front_is_the_same_for_one_and_four_workers(postgres_url: str) -> None:
    fronts = {}
    for label, extra in (("local", ()), ("one", ("--workers", "1")),
                         ("four", ("--workers", "4"))):
        document = _search_json(postgres_url, label, *extra)
        assert document["evaluations"] == 48
        fronts[label] = [(p["trial"], p["config"], p["accuracy"], p["latency_ms"])
                         for p in document["pareto"]]
    assert fronts["one"] == fronts["four"] == fronts["local"] and len(fronts["four"]) > 1
    for label in ("one", "four"):
        audit = audit_study(label, postgres_url)
        assert audit.healthy and audit.counts["complete"] == 48


@pytest.mark.slow
def test_four_workers_survive_a_sigkill_and_a_database_restart(postgres_url: str,
                                                               tmp_path: Path) -> None:
    """4 workers x 200 trials: one worker is SIGKILLed mid-trial, the server restarted
    once; no config is lost, none completed twice, none left running."""
    open_study("faults", postgres_url, meta=META, space=SPACE)
    logs = [tmp_path / f"worker{i}.log" for i in range(4)]
    # worker 0, the one killed, takes 1 s a trial, so that it is caught mid-trial (a
    # 0.04 s trial may end between the check of its log and the kill, on a loaded machine)
    procs = [subprocess.Popen([sys.executable, str(TESTS / "queue_worker.py"), postgres_url,
                               "faults", str(log), "1.0" if i == 0 else "0.04"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i, log in enumerate(logs)]
    events: list[str] = []
    kill_at: list[int] = []

    def mid_trial() -> bool:  # worker 0 logged a start and no end
        lines = logs[0].read_text().split() if logs[0].exists() else []
        return bool(lines) and lines[-1] == "start"

    def faults(state) -> None:
        # from the 50th result on, at the first result that finds worker 0 mid-trial;
        # the restart 60 results later
        if "kill" not in events and state.evaluations >= 50 and mid_trial():
            os.kill(procs[0].pid, signal.SIGKILL)
            events.append("kill")
            kill_at.append(state.evaluations)
        elif "kill" in events and "restart" not in events \
                and state.evaluations >= kill_at[0] + 60:
            pg_server.restart()
            events.append("restart")

    try:
        deadline = time.monotonic() + 120  # every worker imported and connected
        while not all(log.exists() and "ready" in log.read_text() for log in logs):
            assert time.monotonic() < deadline, "the workers did not start in 120 s"
            time.sleep(0.05)
        study = open_study("faults", postgres_url, meta=META, space=SPACE)
        driver = QueueDriver(TrialQueue(study), stale_after=2.0, poll_seconds=0.02)
        result = run_search(PROBLEM, get_algorithm("random", PROBLEM, seed=0, batch_size=20),
                            queue_worker.evaluator(), study, n_evals=200, progress=faults,
                            workers=driver)
        codes = [p.wait(timeout=120) for p in procs[1:]]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert events == ["kill", "restart"]
    assert codes == [0, 0, 0], [p.stdout.read().decode()[-2000:] for p in procs[1:]]
    assert logs[0].read_text().split()[-1] == "start"  # it died mid-trial
    assert result.evaluations == result.new_evaluations == 200
    # the configs a search without workers asks: none lost, each evaluated once
    local = open_study("local", postgres_url, meta=META, space=SPACE)
    run_search(PROBLEM, get_algorithm("random", PROBLEM, seed=0, batch_size=20),
               queue_worker.evaluator(), local, n_evals=200, progress=False)
    configs = sorted(json.dumps(t.config, sort_keys=True) for t in study.trials())
    assert configs == sorted(json.dumps(t.config, sort_keys=True) for t in local.trials())
    audit = audit_study("faults", postgres_url, stale_after=2.0)
    assert audit.healthy, audit.summary()
    assert audit.counts["complete"] == 200 and audit.counts["running"] == 0
    assert audit.counts["waiting"] == 0 and audit.counts["failed"] >= 1
    assert not audit.completed_twice and audit.lost == ()
    assert all(r.complete == 1 for r in audit.repeated)  # a crash, then one result
    print(audit.summary())


def test_the_driver_stops_when_every_local_worker_is_gone(storage_url: str) -> None:
    def gone() -> None:
        raise RuntimeError("all 2 workers exited")

    with pytest.raises(RuntimeError, match="all 2 workers exited"):
        drive(storage_url, 5, check=gone)


# -- samplers that ask one config at a time ----------------------------------------------


def test_samplers_asking_one_config_are_asked_one_per_worker() -> None:
    assert worker_batch("tpe", 4) == 4 and worker_batch("optuna-gp", 3) == 3
    assert worker_batch("tpe", 1) is None and worker_batch("tpe", None) is None
    assert worker_batch("evo", 4) is None and worker_batch("random", 4) is None  # own batch


def test_a_study_keeps_its_batch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    open_study("s", url, meta=dataclasses.replace(META, batch=4), space=SPACE)
    with pytest.raises(StudyMismatchError, match="4 configs at a time, this run for its "
                                                 "default"):
        open_study("s", url, meta=META, space=SPACE)


@pytest.mark.slow
def test_tpe_with_workers_asks_a_batch_per_round_and_resumes_by_replay(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/tpe.db"
    first = _search_json(url, "tpe", "--workers", "2", "--algorithm", "tpe")
    assert first["evaluations"] == 48 and load_study("tpe", url).meta.batch == 2
    assert audit_study("tpe", url).healthy
    # resumed without workers: the study's batch of 2 is kept, so the 48 asks replay
    # (served from the study) before 8 new configs are evaluated here
    again = _search_json(url, "tpe", "--algorithm", "tpe", "--evals", "56")
    assert again["evaluations"] == 56 and again["new_evaluations"] == 8


# -- workers that cannot work ------------------------------------------------------------


def test_a_worker_that_cannot_reach_the_database_is_one_line() -> None:
    result = nas("worker", "--storage", "postgresql+psycopg://nobody@127.0.0.1:9/none",
                 "--study", "s")
    one_line_error(result, "cannot open study storage", "127.0.0.1:9")


@pytest.fixture
def nb201_study(tmp_path: Path) -> str:
    """A small NB201 search's study (SQLite), as a driver leaves it."""
    url = f"sqlite:///{tmp_path}/nb.db"
    result = nas("search", "--supernet", "nb201", "--hw", "pixel3", "--budget", "5ms",
                 "--evals", "4", "--storage", url, "--study", "nb", "--json")
    assert result.exit_code == 0, result.output
    return url


@pytest.mark.parametrize("field, value, fragment", [
    ("hardware_fingerprint", "elsewhere", "fingerprint elsewhere"),
    ("checkpoint_hash", "0ld", "checkpoint 0ld"),
])
def test_a_worker_on_a_study_of_another_target_or_supernet_is_refused(
        nb201_study: str, field: str, value: str, fragment: str) -> None:
    import optuna

    stored = optuna.load_study(study_name="nb", storage=nb201_study)
    meta = dict(stored.user_attrs["nas.meta"], **{field: value})
    stored.set_user_attr("nas.meta", meta)
    one_line_error(nas("worker", "--storage", nb201_study, "--study", "nb"), fragment)
    assert len(load_study("nb", nb201_study)) == 4  # nothing written


def test_a_database_away_past_the_retry_window_stops_a_worker_in_one_line(
        nb201_study: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlalchemy as sa

    def down() -> None:
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("server closed"))

    with pytest.raises(ConnectionError) as raised:
        retried(down, "tell trial 3", seconds=0.2)
    assert str(raised.value) == ("tell trial 3: the study database stayed unreachable for "
                                 "0.2 s (OperationalError)")

    def gone(*args, **kwargs):
        raise raised.value

    monkeypatch.setattr("nas._worker.run_worker", gone)
    result = nas("worker", "--storage", nb201_study, "--study", "nb")
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert "stayed unreachable for 0.2 s" in last and "queued again" in last
    assert len(load_study("nb", nb201_study)) == 4
