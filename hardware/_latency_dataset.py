"""The latency dataset ``nas profile`` writes: one measured subnet per CSV row.

``nas profile --supernet NAME --hw TARGET --samples N --out FILE`` writes one row per
distinct subnet, appended and flushed row by row (an interrupted run loses at most the
subnet it was measuring; a rerun with the same ``--out`` skips every config already in
the file and continues until the file holds N rows). The header is, in order:

- one column per feature of the supernet's space (``space.feature_names``, the values of
  ``space.to_features(config)``: a numeric gene's value, 0/1 for a one-hot choice, 0
  for an inactive gene);
- ``config_json``: the canonical config (``Config.to_json``); rows are keyed by it;
- ``latency_ms``, ``ci_low_ms``, ``ci_high_ms``: the median and its 95% confidence
  interval, ms (for a figure the target gives without a CI, e.g. ``source=predicted``,
  both bounds equal the figure);
- ``n_runs``: timed runs (0 where the target gave the figure, not our timer);
  ``converged``: ``true``/``false``/``n/a`` (did the CI reach ``--rel-ci``);
  ``outliers``: how many durations lie beyond Tukey's fences (1.5 IQR);
  ``outlier_ms``: their values, a JSON list;
- ``macs``, ``params``: of one teacher-forced forward pass of the dense subnet (fvcore);
- ``weights_bytes``, ``peak_activation_bytes``, ``kv_cache_bytes``: see
  :mod:`nas.hardware._memory` (measured here on the CPU for every target; the KV cache
  is part of the activations, not extra);
- ``source`` (``measured`` here, or the target's provenance, e.g. ``predicted``),
  ``supernet``, ``hardware``, ``fingerprint`` (the target's, with the thread count):
  a rerun for another supernet, target, machine or thread count is refused;
- ``cpu``, ``threads``, ``torch``: where the row was made.

Every column but ``config_json`` and the text columns is numeric, so the file is a
``--space table`` feature table as it stands::

    nas predictor fit --space table --data FILE --target latency_ms \\
        --drop ci_low_ms,ci_high_ms,n_runs,outliers,threads --out DIR

(``macs``, ``params`` and the byte counts stay in as features: they are computable
for any config without measuring; drop them too for a config-only predictor.)
"""


from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas._files import read_text
from nas._hardware import HardwareTarget
from nas._space import Config, SearchSpace
from nas._supernet import Supernet
from nas._task import Task
from nas.hardware._counters import count_macs, count_params
from nas.hardware._local import LocalCPUTarget
from nas.hardware._memory import measure_memory
from nas.hardware._profile import (
    Measurement,
    check_budget,
    environment,
    measure_latency,
)

logger = logging.getLogger(__name__)


RESULT_COLUMNS = (
    "config_json", "latency_ms", "ci_low_ms", "ci_high_ms", "n_runs", "converged",
    "outliers", "outlier_ms", "macs", "params", "weights_bytes", "peak_activation_bytes",
    "kv_cache_bytes", "source", "supernet", "hardware", "fingerprint", "cpu", "threads",
    "torch",
)
"""The columns after the space's features, in order."""

NUMERIC_COLUMNS = (
    "latency_ms", "ci_low_ms", "ci_high_ms", "n_runs", "outliers", "macs", "params",
    "weights_bytes", "peak_activation_bytes", "kv_cache_bytes", "threads",
)


@dataclass(frozen=True)
class ProfileSettings:
    """How ``nas profile`` measures each subnet (see :func:`measure_latency`)."""

    threads: int = 1
    warmup: int = 3
    min_repeats: int = 10
    max_repeats: int = 100
    rel_ci: float = 0.05

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        check_budget(self.warmup, self.min_repeats, self.max_repeats, self.rel_ci)


def dataset_columns(space: SearchSpace) -> tuple[str, ...]:
    """The header of a latency CSV for ``space``.

    Raises:
        ValueError: a feature of the space is named like a result column.
    """
    clash = sorted(set(space.feature_names) & set(RESULT_COLUMNS))
    if clash:
        raise ValueError(f"space {space.name!r} has features named like latency CSV columns: "
                         f"{', '.join(clash)}")
    return (*space.feature_names, *RESULT_COLUMNS)


def measures_here(target: HardwareTarget) -> bool:
    """Whether ``nas profile`` times ``target`` itself (this CPU) rather than asking it."""
    return isinstance(target, LocalCPUTarget)


def dataset_fingerprint(target: HardwareTarget, settings: ProfileSettings) -> str:
    """The target's fingerprint as the dataset measures it (its thread count ours)."""
    if measures_here(target):
        return LocalCPUTarget(threads=settings.threads).fingerprint
    return target.fingerprint


@dataclass(frozen=True)
class LatencyTable:
    """A latency CSV read and checked: its header and its rows as strings.

    ``torn_bytes`` is the length of an unterminated last line that was left out: a row
    cut short by a kill while it was being written (0 when the file ends cleanly).
    """

    path: Path
    columns: tuple[str, ...]
    rows: tuple[dict[str, str], ...]
    torn_bytes: int = 0

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> np.ndarray:
        """A numeric column as floats (already checked on reading)."""
        return np.array([float(row[name]) for row in self.rows])

    def keys(self, space: SearchSpace) -> set[str]:
        """The config keys of the rows (configs checked against ``space``)."""
        return {space.from_json(row["config_json"]).key for row in self.rows}


def _check_row(path: Path, line: int, row: dict[str, str], space: SearchSpace | None) -> None:
    features = space.feature_names if space is not None else ()
    for name in (*features, *NUMERIC_COLUMNS):
        try:
            ok = math.isfinite(float(row[name]))
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{path} line {line}: column {name!r} is not a finite number: "
                             f"{row[name]!r}")
    if space is not None:
        try:
            space.from_json(row["config_json"])
        except ValueError as err:
            raise ValueError(f"{path} line {line}: config_json is not a config of space "
                             f"{space.name!r}: {err}") from None


def read_latency_csv(
    path: str | Path, *, space: SearchSpace | None = None, drop_torn: bool = False
) -> LatencyTable:
    """Read a latency CSV written by ``nas profile`` and check every row.

    With ``space`` the header must be exactly :func:`dataset_columns` and every
    ``config_json`` a config of the space; without, the result columns must be there.
    A file with a header and no rows is valid (a run stopped before its first row).
    Every line ``nas profile`` writes ends with a line break, so with ``drop_torn`` an
    unterminated last line after a complete header is a row torn by a kill: it is left
    out and its length reported in ``torn_bytes`` (the file itself is not changed here).
    A file with no complete line counts as a torn header only where ``space`` is given
    and the text is the start of that space's header: any other file is checked, and
    refused, as it stands.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: an empty file, not UTF-8 text, missing or different columns, a row
            of the wrong width, a non-numeric value or a bad config (naming the line).
    """
    path = Path(path)
    if not path.is_file() and not path.is_dir():
        raise FileNotFoundError(f"no latency CSV at {path}")
    text = read_text(path, expected="a latency CSV written by `nas profile`")
    torn = 0
    if drop_torn and text and not text.endswith(("\n", "\r")):
        kept = text[:max(text.rfind("\n"), text.rfind("\r")) + 1]
        header_start = space is not None and ",".join(dataset_columns(space)).startswith(text)
        if kept or header_start:
            torn = len(text[len(kept):].encode("utf-8"))
            text = kept
        if not text:  # the header itself was torn: nothing was measured yet
            return LatencyTable(path, (), (), torn)
    reader = csv.reader(text.splitlines())
    try:
        header = tuple(next(reader, ()))
        if not header:
            raise ValueError(f"{path} is empty (no header row)")
        _check_header(path, header, space)
        rows = []
        for values in reader:
            if len(values) != len(header):
                raise ValueError(f"{path} line {reader.line_num} has {len(values)} fields, "
                                 f"the header {len(header)}")
            row = dict(zip(header, values))
            _check_row(path, reader.line_num, row, space)
            rows.append(row)
    except csv.Error as err:
        raise ValueError(f"{path} line {reader.line_num} is not valid CSV: {err}") from None
    return LatencyTable(path, header, tuple(rows), torn)


def _check_header(path: Path, header: tuple[str, ...], space: SearchSpace | None) -> None:
    expected = dataset_columns(space) if space is not None else RESULT_COLUMNS
    missing = [c for c in expected if c not in header]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {_some(missing)}; "
                         f"is it a latency CSV written by `nas profile`?")
    if space is not None and header != expected:
        extra = [c for c in header if c not in expected]
        detail = f"extra column(s) {_some(extra)}" if extra else "columns in another order"
        raise ValueError(f"{path} has a different header than `nas profile` writes for space "
                         f"{space.name!r} ({detail})")


def _some(names: Sequence[str], shown: int = 6) -> str:
    """Names for a one-line message: the first few, then how many more."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


@dataclass(frozen=True)
class DatasetPlan:
    """What a ``nas profile`` run will do, decided before any measurement.

    ``existing`` rows are already in the file; ``todo`` are the configs to measure,
    in the seed's order; ``torn_bytes`` is the length of a torn last row (see
    :func:`read_latency_csv`) that :func:`append_rows` cuts off before it appends.
    """

    path: Path
    columns: tuple[str, ...]
    identity: Mapping[str, str]
    existing: int
    todo: tuple[Config, ...]
    torn_bytes: int = 0


def plan_dataset(
    path: str | Path,
    *,
    supernet_name: str,
    supernet: Supernet,
    target: HardwareTarget,
    samples: int,
    seed: int,
    settings: ProfileSettings,
    spread: bool = False,
) -> DatasetPlan:
    """Check an existing file and choose the configs still to measure.

    The configs are the first distinct samples of ``space.sample`` with ``seed``, minus
    those already in the file, until the file would hold ``samples`` rows: a rerun
    with the same seed and a larger ``samples`` measures only the new ones. With
    ``spread`` they are :func:`spread_configs` instead (few subnets covering the space,
    for fitting a device's latency law), minus those already in the file.

    Raises:
        ValueError: ``path`` is a folder; ``samples`` exceeds the space; the file has
            another header, another supernet, target or fingerprint, or a bad row (the
            file is left as it is).
    """
    path, space = Path(path), supernet.space
    if path.is_dir():
        raise ValueError(f"--out '{path}' is a folder; give the CSV file to write or extend")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if samples > space.cardinality():
        raise ValueError(f"samples={samples} exceeds the {space.cardinality()} distinct "
                         f"configs of space {space.name!r}")
    columns = dataset_columns(space)
    identity = {"supernet": supernet_name, "hardware": target.name,
                "fingerprint": dataset_fingerprint(target, settings)}
    done: set[str] = set()
    torn = 0
    if path.is_file() and path.stat().st_size > 0:
        table = read_latency_csv(path, space=space, drop_torn=True)
        if table.columns:
            _check_identity(table, identity)
            done = table.keys(space)
        torn = table.torn_bytes
    if spread:
        todo = tuple(c for c in spread_configs(space, samples, seed=seed) if c.key not in done)
    else:
        todo = tuple(sample_new_configs(space, seed, done, samples - len(done)))
    return DatasetPlan(path, columns, identity, len(done), todo, torn)


def _check_identity(table: LatencyTable, identity: Mapping[str, str]) -> None:
    for i, row in enumerate(table.rows):
        for name, value in identity.items():
            if row[name] != value:
                raise ValueError(
                    f"{table.path} line {i + 2} was made with {name} {row[name]!r}, this run "
                    f"with {value!r}; use another --out")


def sample_new_configs(space: SearchSpace, seed: int, done: set[str],
                       count: int) -> Iterator[Config]:
    """The next ``count`` configs of the seed's stream whose keys are not in ``done``."""
    rng, seen = np.random.default_rng(seed), set(done)
    while count > 0:
        config = space.sample(rng)
        if config.key not in seen:
            seen.add(config.key)
            count -= 1
            yield config


def spread_configs(space: SearchSpace, count: int, *, seed: int,
                   pool_factor: int = 20) -> list[Config]:
    """``count`` distinct configs spread over the space: farthest-point picks (each the
    candidate farthest from those already picked, on standardised features) from a pool
    of ``pool_factor * count`` random ones, so a few measurements cover small and large
    subnets rather than the middle where random draws cluster.

    Raises:
        ValueError: ``count`` is not positive or exceeds the space.
    """
    if count < 1:
        raise ValueError(f"--samples must be at least 1, got {count}")
    if count > space.cardinality():
        raise ValueError(f"--samples {count} exceeds the {space.cardinality()} distinct "
                         f"configs of space {space.name!r}")
    rng = np.random.default_rng(seed)
    pool: dict[str, Config] = {}
    for _ in range(pool_factor * count * 4):
        config = space.sample(rng)
        pool.setdefault(config.key, config)
        if len(pool) >= pool_factor * count:
            break
    candidates = list(pool.values())
    X = np.array([space.to_features(c) for c in candidates])
    X = (X - X.mean(axis=0)) / np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)
    picked = [int(np.argmin(np.linalg.norm(X - X.mean(axis=0), axis=1)))]
    distance = np.linalg.norm(X - X[picked[0]], axis=1)
    while len(picked) < min(count, len(candidates)):
        picked.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(X - X[picked[-1]], axis=1))
    return [candidates[i] for i in picked]


def profile_config(
    supernet: Supernet,
    config: Config,
    task: Task,
    target: HardwareTarget,
    settings: ProfileSettings,
) -> dict[str, Any]:
    """One dataset row (without the identity columns): latency, counts and memory.

    The dense subnet is extracted once; on ``local-cpu`` the task's latency probe is
    timed here with :func:`measure_latency`, other targets are asked for their figure.
    """
    model = supernet.extract(config).to("cpu").eval()
    probe = task.latency_probe(model)
    if measures_here(target):
        with torch.inference_mode():
            m = measure_latency(probe, threads=settings.threads, warmup=settings.warmup,
                                min_repeats=settings.min_repeats,
                                max_repeats=settings.max_repeats, rel_ci=settings.rel_ci)
        latency = _measured_columns(m)
    else:
        latency = _given_columns(target.latency_ms(supernet, config, task), target)
    memory = measure_memory(model, probe, shape=supernet.describe(config),
                            workload=task.workload())
    env = environment()
    features = supernet.space.to_features(config)
    return {
        **{name: _number(v) for name, v in zip(supernet.space.feature_names, features)},
        "config_json": config.to_json(),
        **latency,
        "macs": count_macs(model, task.example_inputs()),
        "params": count_params(model),
        "weights_bytes": memory.weights_bytes,
        "peak_activation_bytes": memory.peak_activation_bytes,
        "kv_cache_bytes": memory.kv_cache_bytes,
        "cpu": env["cpu"],
        "threads": settings.threads,
        "torch": env["torch"],
    }


def _number(value: float) -> int | float:
    """Integral features as ints, so the CSV reads ``512`` rather than ``512.0``."""
    return int(value) if float(value).is_integer() else float(value)


def _measured_columns(m: Measurement) -> dict[str, Any]:
    return {
        "latency_ms": round(m.median_ms, 6), "ci_low_ms": round(m.ci_low_ms, 6),
        "ci_high_ms": round(m.ci_high_ms, 6), "n_runs": m.n_runs,
        "converged": "true" if m.converged else "false", "outliers": m.n_outliers,
        "outlier_ms": json.dumps([round(d, 6) for d in m.outliers_ms]), "source": "measured",
    }


def _given_columns(latency_ms: float, target: HardwareTarget) -> dict[str, Any]:
    """A figure the target gives (a prediction): no runs, no interval of our own."""
    value = round(float(latency_ms), 6)
    return {
        "latency_ms": value, "ci_low_ms": value, "ci_high_ms": value, "n_runs": 0,
        "converged": "n/a", "outliers": 0, "outlier_ms": "[]",
        "source": target.provenance().method,
    }


def append_rows(plan: DatasetPlan, rows: Iterable[Mapping[str, Any]]) -> int:
    """Append ``rows`` (with the plan's identity columns) to the plan's file, flushed
    after every row, so the rows written survive an interrupted run. The file is opened
    at the first row, cutting off a torn last row first and writing the header if the
    file is new or empty: a run that fails before its first row changes nothing.
    Returns the number written."""
    written = 0
    fh = None
    try:
        for row in rows:
            if fh is None:
                fh = _open_for_append(plan)
                writer = csv.DictWriter(fh, fieldnames=plan.columns)
                if fh.tell() == 0:
                    writer.writeheader()
            writer.writerow({**row, **plan.identity})
            fh.flush()
            written += 1
    finally:
        if fh is not None:
            fh.close()
    return written


def _open_for_append(plan: DatasetPlan) -> Any:
    plan.path.parent.mkdir(parents=True, exist_ok=True)
    if plan.torn_bytes:
        size = plan.path.stat().st_size
        os.truncate(plan.path, size - plan.torn_bytes)
        logger.info("%s: cut off a torn last row of %d bytes", plan.path, plan.torn_bytes)
    return plan.path.open("a", newline="", encoding="utf-8")


def run_plan(
    plan: DatasetPlan,
    *,
    supernet: Supernet,
    task: Task,
    target: HardwareTarget,
    settings: ProfileSettings,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Measure the plan's configs and append a row each; returns the new rows.

    ``progress`` shows a tqdm bar on stderr with the last figure.
    """
    from nas._progress import progress_bar

    done: list[dict[str, Any]] = []
    total = plan.existing + len(plan.todo)
    with progress_bar(total=total, initial=plan.existing,
                      desc=f"profile {plan.identity['hardware']}", unit="subnet",
                      disable=not progress, dynamic_ncols=True) as bar:

        def rows() -> Iterator[dict[str, Any]]:
            for config in plan.todo:
                row = profile_config(supernet, config, task, target, settings)
                yield row  # resumes once the row is written
                logger.info("%s: %.3f ms [%.3f, %.3f], %d runs, %d outliers", config.key,
                            row["latency_ms"], row["ci_low_ms"], row["ci_high_ms"],
                            row["n_runs"], row["outliers"])
                done.append(row)
                bar.set_postfix_str(f"{row['latency_ms']:.2f} ms"
                                    + (f", {row['n_runs']} runs" if row["n_runs"] else ""))
                bar.update()

        append_rows(plan, rows())
    return done
