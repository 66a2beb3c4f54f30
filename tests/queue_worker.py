"""A worker over a synthetic space for the queue tests (``tests/test_workers.py``) and
the workers benchmark: imported for its space and metrics, or run as a process:

    python tests/queue_worker.py URL STUDY LOG SLEEP [cpu]

evaluates the study's queued trials (each sleeping SLEEP seconds, or with ``cpu``
spinning that long), writing ``ready`` to LOG once it can work, then ``start``/``end``
around each evaluation.
"""

from __future__ import annotations

import sys
import time

from nas import Gene, SearchSpace
from nas._evaluator import FunctionEvaluator
from nas._problem import accuracy_latency_problem
from nas._space import Config
from nas.studies import StudyMeta

SPACE = SearchSpace("queue-big", [Gene(f"g{i}", (0, 1, 2, 3)) for i in range(8)])
PROBLEM = accuracy_latency_problem(SPACE, budget_ms=20.0)
META = StudyMeta.for_problem(PROBLEM, supernet="synthetic", checkpoint_hash="c",
                             hardware="h", hardware_fingerprint="f", seed=0,
                             algorithm="random")
FINGERPRINT = "queue-worker-v1"


def metrics(config: Config) -> dict[str, float]:
    return {"accuracy": sum(config.values()) / 24, "latency_ms": 1.0 + 3 * config["g0"]
            + config["g1"]}


def evaluator(sleep: float = 0.0, *, cpu: bool = False, log=None) -> FunctionEvaluator:
    def evaluate(config: Config) -> dict[str, float]:
        if log is not None:
            log.write("start\n")
            log.flush()
        if cpu:
            end = time.process_time() + sleep
            while time.process_time() < end:
                sum(i * i for i in range(1000))
        elif sleep:
            time.sleep(sleep)
        if log is not None:
            log.write("end\n")
            log.flush()
        return metrics(config)

    return FunctionEvaluator(SPACE, evaluate, fingerprint=FINGERPRINT)


def main(url: str, study_name: str, log_path: str, sleep: str, mode: str = "") -> None:
    from nas._worker import run_worker
    from nas.studies import open_study
    from nas.studies._queue import TrialQueue

    study = open_study(study_name, url, meta=META, space=SPACE)
    with open(log_path, "a") as log:
        log.write("ready\n")  # imported and connected: a test may start its search
        log.flush()
        run_worker(TrialQueue(study), evaluator(float(sleep), cpu=mode == "cpu", log=log),
                   PROBLEM, idle_exit=60, heartbeat=0.5)


if __name__ == "__main__":
    main(*sys.argv[1:])
