"""Many workers, one study: the speedup of ``--workers`` over a search without workers.

Evaluations on a synthetic space (8 genes of 4 values): one that sleeps 0.5 s (an
evaluation that waits on a device or a remote target: workers overlap the waits), and a
CPU-bound one that spins 0.25 s of CPU (on this 2-core machine at most 2 can run at
once, less when other work shares the cores). Each is timed as a search without workers
(the baseline, in the same run), then driven with 1, 2 and 4 worker processes (2 for the
CPU-bound one); the workers are started and idle before the clock starts (their start-up,
importing torch, is reported apart). Two more runs evaluate in no time, 200 and 2,000
trials with one worker: the difference to the search without workers is the queue's
own cost per trial (enqueue, claim, heartbeat, tell, the driver's polls), and the two
sizes show whether it grows with the study. The study is on PostgreSQL when
``NAS_TEST_POSTGRES_URL`` names a server (a fresh database, dropped after), else on a
new SQLite file. The load average is recorded around each run: other work on the
machine lowers the CPU-bound figures.

    python benchmarks/bench_workers.py            # writes results/workers.json
    python benchmarks/bench_workers.py --quick    # a smoke run, not written
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_results  # noqa: E402

from nas import FunctionEvaluator, Gene, SearchSpace  # noqa: E402
from nas._driver import QueueDriver  # noqa: E402
from nas._problem import accuracy_latency_problem  # noqa: E402
from nas._search import run_search  # noqa: E402
from nas.algorithms import get_algorithm  # noqa: E402
from nas.studies import StudyMeta, audit_study, open_study  # noqa: E402
from nas.studies._queue import TrialQueue  # noqa: E402

OUT = Path(__file__).parent / "results" / "workers.json"
SPACE = SearchSpace("bench-workers", [Gene(f"g{i}", (0, 1, 2, 3)) for i in range(8)])
PROBLEM = accuracy_latency_problem(SPACE, budget_ms=20.0)
META = StudyMeta.for_problem(PROBLEM, supernet="synthetic", checkpoint_hash="c", hardware="h",
                             hardware_fingerprint="f", seed=0, algorithm="random")
BATCH = 20  # configs per ask: a multiple of every worker count measured
CASES = {  # name: (seconds per evaluation, CPU-bound, evaluations, worker counts)
    "sleep_0.5s": (0.5, False, 40, (1, 2, 4)),
    "cpu_0.25s": (0.25, True, 40, (1, 2)),
    # evaluations that take no time: what remains is the queue's own cost per trial
    "instant_200": (0.0, False, 200, (1,)),
    "instant_2000": (0.0, False, 2000, (1,)),
}


def evaluator(seconds: float, cpu: bool) -> FunctionEvaluator:
    def evaluate(config) -> dict[str, float]:
        if cpu:
            end = time.process_time() + seconds
            while time.process_time() < end:
                sum(i * i for i in range(1000))
        else:
            time.sleep(seconds)
        return {"accuracy": sum(config.values()) / 24,
                "latency_ms": 1.0 + 3 * config["g0"] + config["g1"]}

    return FunctionEvaluator(SPACE, evaluate, fingerprint="bench-workers")


def worker_main(url: str, study: str, seconds: str, cpu: str) -> None:
    from nas._worker import run_worker

    queue = TrialQueue(open_study(study, url, meta=META, space=SPACE))
    print("ready", flush=True)
    run_worker(queue, evaluator(float(seconds), cpu == "cpu"), PROBLEM, idle_exit=300)


def search(url: str, study: str, n: int, seconds: float, cpu: bool,
           driver: QueueDriver | None = None) -> float:
    started = time.perf_counter()
    result = run_search(PROBLEM, get_algorithm("random", PROBLEM, seed=0, batch_size=BATCH),
                        evaluator(seconds, cpu), open_study(study, url, meta=META, space=SPACE),
                        n_evals=n, progress=False, workers=driver)
    assert result.new_evaluations == n, result
    return time.perf_counter() - started


def with_workers(url: str, study: str, n: int, seconds: float, cpu: bool,
                 count: int) -> dict[str, float]:
    study_obj = open_study(study, url, meta=META, space=SPACE)
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", url, study, str(seconds),
                               "cpu" if cpu else "sleep"], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
             for _ in range(count)]
    try:
        if [p.stdout.readline() for p in procs] != ["ready\n"] * count:
            raise RuntimeError("a worker exited before the search started")
        startup = time.perf_counter() - started
        load = os.getloadavg()[0]
        driver = QueueDriver(TrialQueue(study_obj))
        took = search(url, study, n, seconds, cpu, driver)
        for proc in procs:
            proc.wait(timeout=60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    audit = audit_study(study, url)
    assert audit.healthy and audit.counts["complete"] == n, audit.summary()
    return {"seconds": round(took, 3), "worker_startup_seconds": round(startup, 3),
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", nargs=4)
    args = parser.parse_args()
    if args.worker:
        worker_main(*args.worker)
        return
    started = time.perf_counter()
    with _storage() as (url, kind):
        cases = {}
        for name, (seconds, cpu, n, counts) in CASES.items():
            if args.quick:
                n, counts = BATCH, counts[-1:]
            load = os.getloadavg()[0]
            base = search(url, f"{name}-local", n, seconds, cpu)
            case = {"evaluations": n, "seconds_per_evaluation": seconds, "cpu_bound": cpu,
                    "without_workers": {"seconds": round(base, 3), "load_before": round(load, 2),
                                        "load_after": round(os.getloadavg()[0], 2)}}
            for count in counts:
                run = with_workers(url, f"{name}-w{count}", n, seconds, cpu, count)
                run["speedup"] = round(base / run["seconds"], 2)
                run["queue_overhead_ms_per_trial"] = round(
                    1e3 * (run["seconds"] - base) / n / count, 2)
                case[f"workers_{count}"] = run
                print(f"{name}: {count} workers {run['seconds']:.2f} s vs {base:.2f} s "
                      f"without: {run['speedup']:.2f}x (load {run['load_before']})", flush=True)
            cases[name] = case
    if args.quick:
        return
    write_results(OUT, {
        "storage": kind,
        "cores": os.cpu_count(),
        "batch": BATCH,
        "cases": cases,
        "note": "workers start before the clock (worker_startup_seconds); the baseline "
                "is a search without workers in the same run; queue_overhead_ms_per_trial is "
                "(seconds with workers - without) / evaluations / workers: the queue's cost "
                "per trial where it overlaps nothing (read it on the instant_* cases); load "
                "averages show what else ran on the machine",
    }, started)


class _storage:
    """A fresh PostgreSQL database (dropped after) or a new SQLite file."""

    def __enter__(self) -> tuple[str, str]:
        server = os.environ.get("NAS_TEST_POSTGRES_URL")
        if not server:
            self._folder = tempfile.TemporaryDirectory()
            return f"sqlite:///{self._folder.name}/workers.db", "sqlite"
        import sqlalchemy as sa
        from sqlalchemy.pool import NullPool

        self._url = sa.engine.make_url(server)
        self._name = f"bench_workers_{uuid.uuid4().hex[:8]}"
        self._admin = sa.create_engine(self._url, poolclass=NullPool,
                                       isolation_level="AUTOCOMMIT")
        with self._admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{self._name}"'))
        return self._url.set(database=self._name).render_as_string(hide_password=False), \
            "postgresql"

    def __exit__(self, *exc: object) -> None:
        if not hasattr(self, "_admin"):
            self._folder.cleanup()
            return
        import sqlalchemy as sa

        with self._admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{self._name}" WITH (FORCE)'))
        self._admin.dispose()


if __name__ == "__main__":
    main()
