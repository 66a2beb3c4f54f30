"""``nas worker``: evaluate a shared study's queued trials (from any host)."""

from __future__ import annotations

import signal
import sys
from typing import Any

import typer
from rich.markup import escape

from nas._messages import one_line
from nas.cli._common import (
    STORAGE_HELP,
    configure_logging,
    console,
    fail,
    study_name,
    user_errors,
)


@user_errors
def worker(
    storage: str | None = typer.Option(
        None, "--storage", help=STORAGE_HELP + " The database the search's driver uses (a "
        "file or a server)."),
    study: str = typer.Option(..., "--study", callback=study_name, help="Study to work on."),
    max_trials: int | None = typer.Option(None, "--max-trials", min=1,
                                          help="Stop after evaluating this many trials."),
    idle_exit: float | None = typer.Option(
        None, "--idle-exit", min=0.1,
        help="Stop after this many seconds with nothing to evaluate (default: only when the "
             "search is finished)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """Join STUDY's search as a worker: evaluate the trials its driver queues."""
    from nas._worker import check_worker_storage, prepare_worker, run_worker
    from nas.studies import default_storage
    from nas.studies._queue import TrialQueue, worker_name

    configure_logging(verbose)
    storage = storage or default_storage()
    check_worker_storage(storage)
    prepared = prepare_worker(storage, study)
    queue = TrialQueue(prepared.study)
    signal.signal(signal.SIGTERM, _exit_on_term)  # a claimed trial is given back
    name = worker_name()
    console.print(f"worker {escape(name)} on study [bold]{escape(study)}[/] in "
                  f"{escape(prepared.storage)}", highlight=False)
    try:
        result = run_worker(queue, prepared.evaluator, prepared.problem,
                            max_trials=max_trials, idle_exit=idle_exit, name=name)
    except ConnectionError as err:  # past the retry window: the driver re-queues its trial
        fail(f"worker {name}: {one_line(err)}; a trial it held is queued again once its "
             f"heartbeat is stale", code=1)
    console.print(f"worker {escape(name)}: {result.completed} trials completed, "
                  f"{result.failed} failed; stopped: {escape(result.stop_reason)}",
                  highlight=False)


def _exit_on_term(signum: int, frame: Any) -> None:
    sys.exit(128 + signum)
