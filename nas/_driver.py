"""The search's driver side of many workers: a batch's new configs go through the queue.

The driver alone runs the algorithm (so a search with workers asks exactly what one
without them asks); :func:`nas.run_search` hands each batch's configs that the study
does not know to :meth:`QueueDriver.run_batch`, which enqueues them, waits until each
has a result (moving the progress bar as they arrive, in any order), and returns them in
the batch's order, which is the order the algorithm is told. While it waits it fails and
re-queues trials whose workers stopped heartbeating, and stops with a one-line
:class:`~nas.studies._queue.QueueError` when a config fails for good.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from nas._space import Config
from nas.studies._queue import QueueEntry, QueueError, TrialQueue

logger = logging.getLogger(__name__)

STALE_AFTER_S = 30.0
"""A running trial without a heartbeat for this long is taken as abandoned (workers beat
every 2 s; a database restart silences them for a few seconds)."""
POLL_SECONDS = 0.05
MAX_POLL_SECONDS = 0.2
"""The driver polls every :data:`POLL_SECONDS` while results arrive, backing off to this
while none does: a poll is three queries, and long evaluations need few."""

ResultCallback = Callable[[int, dict[str, float], float], None]
"""``(index in the batch's queued list, metrics, evaluation seconds)``, as results arrive."""


class QueueDriver:
    """Evaluates configs through ``queue``'s workers.

    Args:
        queue: the study's work queue.
        stale_after: seconds without a heartbeat before a running trial is re-queued.
        poll_seconds: how often the study is read while results arrive (backing off
            to :data:`MAX_POLL_SECONDS` while none does).
        check: called on every poll; raises to stop waiting (e.g. every local worker
            has exited).
    """

    def __init__(self, queue: TrialQueue, *, stale_after: float = STALE_AFTER_S,
                 poll_seconds: float = POLL_SECONDS,
                 check: Callable[[], None] | None = None) -> None:
        if not 0 < stale_after <= 86_400:
            raise ValueError(f"stale_after must be a number of seconds in (0, 86400], got "
                             f"{stale_after!r}")
        if not 0 < poll_seconds <= 60:
            raise ValueError(f"poll_seconds must be in (0, 60], got {poll_seconds!r}")
        self.queue = queue
        self.stale_after = stale_after
        self.poll_seconds = poll_seconds
        self.check = check
        self.batches = 0
        self._last_stale_check = time.monotonic()

    def run_batch(self, items: Sequence[tuple[Config, str]],
                  on_result: ResultCallback) -> list[tuple[dict[str, float], float]]:
        """Evaluate ``(config, cache key)`` pairs by the workers; ``(metrics, seconds)``
        in the order given.

        Raises:
            QueueError: a config failed for good (an evaluation error, or its workers
                died more often than the retry cap allows).
        """
        batch = self.batches
        self.batches += 1
        entries = [QueueEntry(config, key, batch, index)
                   for index, (config, key) in enumerate(items)]
        self.queue.enqueue(entries)
        results: dict[int, tuple[dict[str, float], float]] = {}
        pause = self.poll_seconds
        while len(results) < len(entries):
            before = len(results)
            outcomes = self.queue.outcomes(e.key for e in entries)
            missing = []
            for index, entry in enumerate(entries):
                if index in results:
                    continue
                outcome = outcomes[entry.key]
                if outcome.state == "done":
                    assert outcome.metrics is not None
                    results[index] = (outcome.metrics, outcome.eval_seconds)
                    on_result(index, dict(outcome.metrics), outcome.eval_seconds)
                elif outcome.state == "failed":
                    raise QueueError(f"study {self.queue.study.name!r}: {outcome.message}")
                elif outcome.state == "missing":
                    missing.append(entry)
            if missing:  # a stale trial failed but not re-queued (its driver died between)
                self.queue.enqueue(missing)
            if len(results) < len(entries):
                # poll quickly while results come, less often while workers are busy
                pause = self.poll_seconds if len(results) > before else min(
                    2 * pause, max(self.poll_seconds, MAX_POLL_SECONDS))
                self._wait(pause)
        return [results[i] for i in range(len(entries))]

    def _wait(self, pause: float) -> None:
        if self.check is not None:
            self.check()
        now = time.monotonic()
        if now - self._last_stale_check >= min(self.stale_after / 4, 5.0):
            self._last_stale_check = now
            self.queue.requeue_stale(self.stale_after)
        time.sleep(pause)
