"""A study as a table: one row per trial, one column per gene and metric (pandas).

For analysis outside the platform (notebooks, spreadsheets, other plotting tools), and
for ``nas studies export``. Columns, in order:

* ``trial`` (int) and ``state`` (category: ``complete`` / ``failed``);
* one column per gene of the study's space, in the space's order. Nullable dtypes
  (``Int64``, ``Float64``, a ``category`` of the gene's choices) so that an inactive gene
  (a layer the depth genes switch off) reads as missing, never as a made-up value;
* one float column per metric the trials carry, the objectives first (NaN where a trial
  has no value);
* ``pareto`` and ``feasible`` (bool): on the study's feasible Pareto front as
  :func:`~nas.studies.front_of` decides, and within the study's current budgets.

``DataFrame.attrs`` holds what the search was run against: the study name, the storage
label and the stored :class:`~nas.studies.StudyMeta` fields (supernet, space, hardware,
objectives, ``constraints`` (the budgets), seed, algorithm, task, ...).

pandas is imported lazily, and is an extra (``tables``; ``parquet`` adds pyarrow): the
search itself needs neither.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas._extras import require
from nas._files import atomic_write, check_output
from nas._space import Gene
from nas.studies._pareto import front_of
from nas.studies._report import study_problem
from nas.studies._storage import default_storage
from nas.studies._study import Study, TrialRecord, load_study

if TYPE_CHECKING:
    import pandas as pd

_STATES = ("complete", "failed")


def study_dataframe(study: str | Study, storage: str | None = None) -> pd.DataFrame:
    """Every trial of a study as one DataFrame row, in trial-number order.

    Args:
        study: a study name or an open study.
        storage: the storage URL of a named study (default :func:`default_storage`).

    Returns:
        The table described in this module's docstring; ``attrs`` holds the settings.

    Raises:
        StudyNotFoundError: no such study (the message lists the studies there).
        ValueError: a gene and a metric share a column name.
    """
    require("tables", purpose="a study as a table")
    import pandas as pd

    opened = study if isinstance(study, Study) else load_study(study, storage or default_storage())
    trials = opened.trials()
    on_front = {t.number for t in front_of(trials, study_problem(opened))}
    columns: dict[str, pd.Series] = {
        "trial": pd.Series([t.number for t in trials], dtype="int64"),
        "state": pd.Series(
            ["failed" if t.failed else "complete" for t in trials],
            dtype=pd.CategoricalDtype(_STATES),
        ),
    }
    genes = opened.space.genes if opened.space is not None else _observed_genes(trials)
    _add_columns(columns, {g.name: _gene_column(g, trials) for g in genes})
    _add_columns(columns, {m: _metric_column(m, trials) for m in _metric_names(opened, trials)})
    _add_columns(columns, {
        "pareto": pd.Series([t.number in on_front for t in trials], dtype="bool"),
        "feasible": pd.Series([t.feasible for t in trials], dtype="bool"),
    })
    if opened.meta.predicted_accuracy:  # a CSV keeps no attrs: say it in a column
        columns["accuracy_method"] = pd.Series(["predicted"] * len(trials), dtype="string")
    frame = pd.DataFrame(columns)
    frame.attrs = {"study": opened.name, "storage": opened.storage, **opened.meta.to_dict()}
    return frame


def write_study_table(
    df: pd.DataFrame, path: str | Path, fmt: str, *, overwrite: bool = False
) -> Path:
    """Write a table of :func:`study_dataframe` atomically (a temporary file, then a rename),
    so a reader never sees half a file and a failed write leaves the old one intact.

    ``csv`` is plain (a header row, no index; missing values as empty cells, attrs not
    kept). ``parquet`` (pyarrow) keeps the dtypes, and the attrs as JSON key-value
    metadata that :func:`pandas.read_parquet` reads back into ``attrs``.

    Args:
        df: the table.
        path: the file to write.
        fmt: ``"csv"`` or ``"parquet"``.
        overwrite: replace an existing file.

    Returns:
        ``path`` as a path.

    Raises:
        ValueError: an unknown format, or ``path`` is a directory.
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        FileNotFoundError: the directory of ``path`` does not exist.
    """
    check_table_format(fmt)
    target = check_output(path, kind="file", force=overwrite)
    atomic_write(target, lambda temporary: _WRITERS[fmt](df, temporary))
    return target


def check_table_format(fmt: str) -> None:
    """Refuse an unknown format, or one whose extra is missing (parquet needs pyarrow).

    Raises:
        ValueError: an unknown format.
        MissingExtraError: the format's extra is not installed.
    """
    if fmt not in _WRITERS:
        raise ValueError(f"format must be one of {', '.join(_WRITERS)}, got {fmt!r}")
    require(_EXTRA_OF[fmt], purpose=f"{fmt} export")


# -- columns ------------------------------------------------------------------------------


def _gene_column(gene: Gene, trials: Sequence[TrialRecord]) -> pd.Series:
    """A trial's config holds only its active genes; the others become missing values."""
    import pandas as pd

    return pd.Series([t.config.get(gene.name) for t in trials], dtype=_gene_dtype(gene))


def _gene_dtype(gene: Gene) -> Any:
    """A nullable dtype that keeps the choices' type (ints stay ints next to missing)."""
    import pandas as pd

    if all(isinstance(c, int) and not isinstance(c, bool) for c in gene.choices):
        return "Int64"
    if gene.is_numeric:
        return "Float64"
    if all(isinstance(c, str) for c in gene.choices):
        return pd.CategoricalDtype(list(gene.choices))
    return "object"


def _observed_genes(trials: Sequence[TrialRecord]) -> list[Gene]:
    """Genes rebuilt from the configs, for a study stored without its space definition."""
    values: dict[str, dict[Any, None]] = {}
    for trial in trials:
        for name, value in trial.config.items():
            values.setdefault(name, {})[value] = None
    return [Gene(name, tuple(seen)) for name, seen in values.items()]


def _metric_names(study: Study, trials: Sequence[TrialRecord]) -> list[str]:
    """The objectives first (always present, for a fixed schema), then every other
    metric in the order the trials first report it."""
    objectives = [o["name"] for o in study.meta.objectives]
    return list(dict.fromkeys([*objectives, *(m for t in trials for m in t.metrics)]))


def _metric_column(name: str, trials: Sequence[TrialRecord]) -> pd.Series:
    import pandas as pd

    return pd.Series([t.metrics.get(name, float("nan")) for t in trials], dtype="float64")


def _add_columns(columns: dict[str, pd.Series], new: dict[str, pd.Series]) -> None:
    """Add ``new``, refusing a name already taken (a gene called like a metric would
    otherwise silently replace it)."""
    clash = sorted(set(columns) & set(new))
    if clash:
        raise ValueError(f"study table columns clash: {clash} name both a gene and a metric "
                         f"or a fixed column (trial, state, pareto, feasible)")
    columns.update(new)


# -- files --------------------------------------------------------------------------------


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, index=False)


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    # pandas stores df.attrs as JSON under the PANDAS_ATTRS key of the file's key-value
    # metadata and restores them on read_parquet.
    df.to_parquet(path, engine="pyarrow", index=False)


_WRITERS: dict[str, Callable[[pd.DataFrame, Path], None]] = {
    "csv": _write_csv,
    "parquet": _write_parquet,
}
_EXTRA_OF = {"csv": "tables", "parquet": "parquet"}
"""The extra (``pyproject.toml``) each format needs."""
