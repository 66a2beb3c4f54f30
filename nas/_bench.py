"""Benchmark search algorithms on a tabular benchmark against its true Pareto front.

Every algorithm runs once per seed, each run a fresh :func:`nas.run_search` into its own
in-memory study: objectives accuracy (max) and latency (min), no budget. A run is scored
at every checkpoint (50, 100, 250, 500, 1000, 2500, ... up to the number of evaluations,
which is always one) from its *first k* trials in evaluation order, so one run gives
every checkpoint. The scores are the table's hypervolume gap (error and latency
normalised to the true front's range, reference point 1.1; a fraction) and the number
of true Pareto cells found; the summary is their median and interquartile range over
seeds, per algorithm and checkpoint.

The harness knows tables only by name (:data:`nas._tabular.TABLES`) and through their
duck-typed interface (:class:`nas._tabular.TabularBenchmark`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas._files import atomic_write, check_outputs, write_text_atomic
from nas._problem import Objective, Problem
from nas._tabular import TabularBenchmark, get_table

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("benchmarks") / "results"
"""Where ``nas bench search`` writes its JSON document and plot (relative to the cwd)."""

_MANTISSAS = (1, 2.5, 5)  # checkpoints 50, 100, 250, 500, 1000, 2500, 5000, ...


@dataclass(frozen=True)
class RunScore:
    """One run's figures at one checkpoint.

    Attributes:
        algorithm: the algorithm's registry name (``default`` stays ``default``).
        seed: the run's seed.
        evals: the checkpoint: figures come from the run's first ``evals`` trials (all of
            them if the run stopped early with fewer).
        hv_gap: hypervolume left to the true front, a fraction in [0, 1].
        true_front_found: true Pareto cells among those trials.
    """

    algorithm: str
    seed: int
    evals: int
    hv_gap: float
    true_front_found: int


@dataclass(frozen=True)
class CheckpointSummary:
    """Figures over seeds of one algorithm at one checkpoint."""

    algorithm: str
    evals: int
    runs: int
    hv_gap_median: float
    hv_gap_q25: float
    hv_gap_q75: float
    true_front_found_median: float


@dataclass(frozen=True)
class SearchBenchmark:
    """The outcome of :func:`bench_search`; :meth:`to_dict` is ``nas bench search --json``.

    Attributes:
        space: the tabular benchmark's name.
        device: the latency column scored.
        dataset: the accuracy column scored.
        data: the CSV the table was read from when one was given, else None.
        table_sha256: the hash of the table's data.
        true_front_size: cells on the table's true Pareto front.
        algorithms: in the order given.
        seeds: the seeds every algorithm ran with.
        evals: evaluations per run.
        checkpoints: evaluation counts the runs are scored at, ascending.
        results: one :class:`RunScore` per algorithm, seed and checkpoint.
        summary: one :class:`CheckpointSummary` per algorithm and checkpoint.
        stopped_early: ``"algorithm/seed"`` of runs that ended before ``evals``.
        seconds: wall time of all runs.
        implementations: what each name ran (``{"default": "screened", ...}``), since
            ``default`` changes as better algorithms land.
    """

    space: str
    device: str
    dataset: str
    data: str | None
    table_sha256: str
    true_front_size: int
    algorithms: tuple[str, ...]
    seeds: tuple[int, ...]
    evals: int
    checkpoints: tuple[int, ...]
    results: tuple[RunScore, ...]
    summary: tuple[CheckpointSummary, ...]
    stopped_early: tuple[str, ...] = field(default=())
    seconds: float = 0.0
    implementations: dict[str, str] = field(default_factory=dict)

    def median(self, algorithm: str, evals: int) -> CheckpointSummary:
        """The summary of ``algorithm`` at checkpoint ``evals``.

        Raises:
            KeyError: no such algorithm or checkpoint in this benchmark.
        """
        for row in self.summary:
            if row.algorithm == algorithm and row.evals == evals:
                return row
        raise KeyError(f"no summary for algorithm {algorithm!r} at {evals} evaluations")

    def to_dict(self) -> dict[str, Any]:
        """One JSON-able document: the settings, ``results`` and ``summary``."""
        return {
            "settings": {
                "space": self.space,
                "device": self.device,
                "dataset": self.dataset,
                "data": self.data,
                "table_sha256": self.table_sha256,
                "true_front_size": self.true_front_size,
                "objectives": [o.to_dict() for o in _OBJECTIVES],
                "reference_point": 1.1,
                "algorithms": list(self.algorithms),
                "implementations": dict(self.implementations),
                "seeds": list(self.seeds),
                "evals": self.evals,
                "checkpoints": list(self.checkpoints),
            },
            "results": [asdict(r) for r in self.results],
            "summary": [asdict(s) for s in self.summary],
            "stopped_early": list(self.stopped_early),
            "seconds": self.seconds,
        }

    def file_stem(self) -> str:
        """Names the JSON document and plot (:func:`file_stem`)."""
        return file_stem(self.space, self.device, self.evals)


def file_stem(space: str, device: str, evals: int) -> str:
    """``search-<space>-<device>-<evals>evals``: the name of a benchmark's files."""
    return f"search-{space}-{device}-{evals}evals"


_OBJECTIVES = (Objective("accuracy", "maximize"), Objective("latency_ms", "minimize"))

RunCallback = Callable[[str, int], None]
"""Called with (algorithm, seed) after each finished run."""


def checkpoints(evals: int) -> list[int]:
    """Evaluation counts to score runs of ``evals`` evaluations at: 50, 100, 250, 500,
    1000, 2500, ... below ``evals``, then ``evals`` itself.

    Raises:
        ValueError: ``evals`` is not a positive integer.
    """
    _check_positive("evals", evals)
    points: list[int] = []
    decade = 10
    while True:
        for mantissa in _MANTISSAS:
            k = int(mantissa * decade)
            if k < 50:
                continue
            if k >= evals:
                return [*points, evals]
            points.append(k)
        decade *= 10


def score_run(
    table: TabularBenchmark,
    trials: Sequence[Any],
    *,
    algorithm: str,
    seed: int,
    device: str,
    dataset: str,
    at: Sequence[int],
) -> list[RunScore]:
    """Figures of one run at each checkpoint in ``at``, from its first ``k`` trials.

    Args:
        table: the table that scores the configs.
        trials: the run's trials in evaluation order (:class:`~nas.studies.TrialRecord`:
            ``config`` and ``failed``); failed ones (cells the table lacks) count as
            evaluations but score nothing.
        algorithm, seed: copied into the scores.
        device, dataset: the columns scored.
        at: checkpoints.
    """
    scores = []
    for k in at:
        found = [t.config for t in trials[:k] if not t.failed]
        scores.append(RunScore(
            algorithm=algorithm,
            seed=seed,
            evals=int(k),
            hv_gap=float(table.hv_gap(found, device=device, dataset=dataset)),
            true_front_found=int(table.true_front_found(found, device=device, dataset=dataset)),
        ))
    return scores


def summarise(results: Sequence[RunScore]) -> list[CheckpointSummary]:
    """Median and quartiles over seeds per (algorithm, checkpoint), in first-seen order."""
    groups: dict[tuple[str, int], list[RunScore]] = {}
    for r in results:
        groups.setdefault((r.algorithm, r.evals), []).append(r)
    summary = []
    for (algorithm, evals), rows in groups.items():
        gaps = np.array([r.hv_gap for r in rows])
        q25, median, q75 = np.percentile(gaps, [25, 50, 75])
        summary.append(CheckpointSummary(
            algorithm=algorithm,
            evals=evals,
            runs=len(rows),
            hv_gap_median=float(median),
            hv_gap_q25=float(q25),
            hv_gap_q75=float(q75),
            true_front_found_median=float(np.median([r.true_front_found for r in rows])),
        ))
    return summary


def bench_search(
    space: str,
    *,
    device: str,
    algorithms: Sequence[str],
    evals: int,
    seeds: int,
    data: str | Path | None = None,
    dataset: str | None = None,
    progress: bool | RunCallback = False,
) -> SearchBenchmark:
    """Run every algorithm with seeds ``0..seeds-1`` on the tabular benchmark ``space``
    and score each run against the true Pareto front at every checkpoint.

    Args:
        space: a tabular benchmark name (``nb201``; see :func:`nas._tabular.list_tables`).
        device: the latency column (``raspi4``, ...; see the table's ``devices``).
        algorithms: registry names (``random``, ``nsga2``, ``default``, ...); repeats
            run once.
        evals: evaluations per run (unique configs; the last checkpoint).
        seeds: runs per algorithm.
        data: a CSV to read the table from instead of the shipped one; cells it lacks
            score NaN (failed trials) when a search proposes them.
        dataset: the accuracy column (the table's default when None).
        progress: True for a tqdm bar over runs on stderr, False for none, or a callback
            called with (algorithm, seed) after each run.

    Returns:
        A :class:`SearchBenchmark`.

    Raises:
        UnknownNameError: an unknown space, device, dataset or algorithm (the message
            lists the known ones).
        FileNotFoundError, ValueError: ``data`` is not a valid table; ``evals`` or
            ``seeds`` is not a positive integer; no algorithm.
    """
    from optuna.storages import InMemoryStorage

    from nas._search import run_search
    from nas.algorithms import ALGORITHMS, get_algorithm
    from nas.studies._study import StudyMeta, open_study

    _check_positive("evals", evals)
    _check_positive("seeds", seeds)
    names = list(dict.fromkeys(a.strip() for a in algorithms if a.strip()))
    if not names:
        raise ValueError("algorithms must name at least one algorithm; known: "
                         + ", ".join(ALGORITHMS.names()))
    for name in names:
        ALGORITHMS.entry(name)  # unknown names fail before any run
    table = get_table(space, data=data)
    device = table.device(device)
    dataset = table.dataset(table.default_dataset if dataset is None else dataset)
    evaluator = table.evaluator(device, dataset, missing="nan")
    at = checkpoints(evals)
    problem = Problem(table.space, _OBJECTIVES)

    results: list[RunScore] = []
    stopped: list[str] = []
    runs = [(a, s) for a in names for s in range(seeds)]
    callback, bar = _progress(progress, len(runs))
    start = time.perf_counter()
    try:
        for algorithm, seed in runs:
            meta = StudyMeta.for_problem(
                problem, supernet=space, checkpoint_hash=table.sha256[:16], hardware=device,
                hardware_fingerprint=evaluator.fingerprint, seed=seed, algorithm=algorithm,
            )
            study = open_study(f"bench-{algorithm}-{seed}", InMemoryStorage(), meta=meta,
                               space=table.space)
            result = run_search(problem, get_algorithm(algorithm, problem, seed=seed),
                                evaluator, study, n_evals=evals, progress=False)
            if result.stopped_early:
                stopped.append(f"{algorithm}/{seed}")
                logger.warning("%s seed %d stopped after %d evaluations: %s", algorithm,
                               seed, result.evaluations, result.stop_reason)
            results += score_run(table, study.trials(), algorithm=algorithm, seed=seed,
                                 device=device, dataset=dataset, at=at)
            callback(algorithm, seed)
    finally:
        if bar is not None:
            bar.close()
    return SearchBenchmark(
        space=space,
        device=device,
        dataset=dataset,
        data=None if data is None else str(data),
        table_sha256=table.sha256,
        true_front_size=len(table.front_rows(device=device, dataset=dataset)),
        algorithms=tuple(names),
        seeds=tuple(range(seeds)),
        evals=evals,
        checkpoints=tuple(at),
        results=tuple(results),
        summary=tuple(summarise(results)),
        stopped_early=tuple(stopped),
        seconds=time.perf_counter() - start,
        implementations={n: ALGORITHMS.entry(n).factory.name for n in names},
    )


def output_paths(out: str | Path, stem: str) -> tuple[Path, Path]:
    """The JSON document and PNG plot a benchmark named ``stem`` writes into the folder
    ``out`` (:meth:`SearchBenchmark.file_stem`)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out '{out}' is a file; give a folder")
    return out / f"{stem}.json", out / f"{stem}.png"


def write_outputs(
    bench: SearchBenchmark, out: str | Path = DEFAULT_OUT, *, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write the JSON document and the plot of ``bench`` to the folder ``out`` (created
    if needed), named by :meth:`SearchBenchmark.file_stem`.

    Returns:
        The paths of the JSON document and of the PNG plot.

    Raises:
        ValueError: ``out`` exists and is not a folder.
        FileExistsError: one of the two files exists and ``overwrite`` is false.
    """
    json_path, png_path = output_paths(out, bench.file_stem())
    json_path.parent.mkdir(parents=True, exist_ok=True)
    check_outputs((json_path, png_path), force=overwrite)
    write_text_atomic(json_path, json.dumps(bench.to_dict(), indent=2) + "\n")
    atomic_write(png_path, lambda temp: plot_search_benchmark(bench, temp))
    return json_path, png_path


def plot_search_benchmark(bench: SearchBenchmark, path: str | Path) -> Path:
    """A PNG of the median hypervolume gap (percent, log scale) against evaluations, one
    line per algorithm with its interquartile band."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    floor = 1e-4  # percent; a gap of exactly 0 (true front found) cannot sit on a log axis
    styles = [(m, ls) for ls in ("-", "--", ":", "-.") for m in ("o", "s", "^", "D", "v")]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    try:
        for i, algorithm in enumerate(bench.algorithms):
            marker, linestyle = styles[i % len(styles)]
            rows = [s for s in bench.summary if s.algorithm == algorithm]
            x = [s.evals for s in rows]
            med = [max(100 * s.hv_gap_median, floor) for s in rows]
            low = [max(100 * s.hv_gap_q25, floor) for s in rows]
            high = [max(100 * s.hv_gap_q75, floor) for s in rows]
            (line,) = ax.plot(x, med, marker=marker, linestyle=linestyle, label=algorithm)
            ax.fill_between(x, low, high, color=line.get_color(), linewidth=0,
                            alpha=0.2 if len(bench.algorithms) <= 4 else 0.07)
        ax.set_yscale("log")
        if len(bench.checkpoints) > 1:
            ax.set_xscale("log")
        ax.set_xticks(list(bench.checkpoints), [str(k) for k in bench.checkpoints])
        ax.xaxis.set_minor_formatter(NullFormatter())
        # label log ticks 1, 2, 5 per decade as plain numbers, not 2x10^-1
        plain = FuncFormatter(lambda value, _: f"{value:g}" if f"{value:.0e}"[0] in "125"
                              else "")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.set_xlabel("evaluations")
        ax.set_ylabel("hypervolume gap to the true front (%)")
        ax.set_title(f"{bench.space} on {bench.device}: median over {len(bench.seeds)} "
                     f"seeds, band = IQR")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small", ncol=1 if len(bench.algorithms) <= 6 else 2)
        fig.tight_layout()
        fig.savefig(Path(path), format="png")
    finally:
        plt.close(fig)
    return Path(path)


# -- helpers ---------------------------------------------------------------------------


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer (>= 1), got {value!r}")


def _progress(progress: bool | RunCallback, total: int) -> tuple[RunCallback, Any]:
    if progress is True:
        from nas._progress import progress_bar

        bar = progress_bar(total=total, desc="bench runs", unit="run", dynamic_ncols=True)

        def update(algorithm: str, seed: int) -> None:
            bar.set_postfix_str(f"{algorithm} seed {seed}", refresh=False)
            bar.update(1)

        return update, bar
    if progress is False:
        return (lambda algorithm, seed: None), None
    if callable(progress):
        return progress, None
    raise ValueError(f"progress must be True, False or a callable, got {progress!r}")

