"""One self-contained HTML report of one or more studies (``nas report``).

The report must open anywhere, offline and years later, so plotly.js is embedded inline
once and nothing is fetched: no ``<script src>``, no external CSS or fonts. Sections:

1. the Pareto fronts of all studies on one accuracy-latency plot (every evaluated trial
   faint, the feasible front bold, each study's latency budget dashed);
2. the hypervolume after each evaluation, as ``nas search`` reports it
   (:func:`~nas.studies.search_hypervolume` of the first k trials);
3. per study, the Pareto subnets with their parameters and MACs, counted on the dense
   subnet rebuilt from the study's supernet (a dash and a footnote where that fails);
4. the settings and provenance of every study, the report's time and package version.

Every user string (study names, configs, storage URLs) is escaped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

from nas._extras import require
from nas._messages import one_line
from nas._pareto import ParetoArchive, hypervolume_defined, normaliser
from nas._problem import Problem
from nas._supernet import Supernet, get_supernet
from nas.quant._policy import BITS_PREFIX
from nas.studies._pareto import front_of, search_hypervolume, usable
from nas.studies._report import study_problem
from nas.studies._study import Study, StudyMeta, TrialRecord

ACCURACY = "accuracy"
LATENCY = "latency_ms"
_DASH = "\u2014"
_PACKAGE = "nas-platform"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 80em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 0.85em; }
.note { color: #666; font-size: 0.9em; }
"""


def build_report(
    studies: Sequence[Study], *, supernets: Mapping[str, Supernet] | None = None
) -> str:
    """The HTML document reporting ``studies`` (see the module docstring).

    Args:
        studies: the studies, in the order they are shown; names must differ.
        supernets: supernets by name to rebuild subnets from for their parameter and MAC
            counts (default: the shipped supernet each study names, loaded once).

    Returns:
        A complete HTML document with plotly.js inline; it needs no network to open.

    Raises:
        ValueError: no study, or two studies with the same name.
        MissingExtraError: plotly (the ``report`` extra) is not installed.
    """
    require("report", purpose="the HTML report")
    _check_studies(studies)
    data = [StudyData.of(study) for study in studies]
    counter = _SubnetCounter(supernets or {})
    sections = [
        "<h2>Pareto fronts</h2>",
        figure_html(front_figure(data), include_plotlyjs=True),
        "<h2>Hypervolume over evaluations</h2>",
        hypervolume_section(data),
        *(_pareto_section(d, counter) for d in data),
        "<h2>Settings and provenance</h2>",
        _settings_table(data),
    ]
    names = ", ".join(d.study.name for d in data)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>NAS report: {escape(names)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>NAS report: {escape(names)}</h1>\n"
        f'<p class="note">Created {escape(created)} by {_PACKAGE} {escape(_version())}.</p>\n'
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )


def _check_studies(studies: Sequence[Study]) -> None:
    if not studies:
        raise ValueError("a report needs at least one study")
    names = [s.name for s in studies]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"each study may be given once; given more than once: {twice}")


@dataclass(frozen=True)
class StudyData:
    """A study read once: its trials, problem and front (reading costs a database query)."""

    study: Study
    trials: list[TrialRecord]
    problem: Problem
    front: list[TrialRecord]

    @classmethod
    def of(cls, study: Study) -> StudyData:
        trials = study.trials()
        problem = study_problem(study)
        return cls(study, trials, problem, front_of(trials, problem))

    @property
    def plotted(self) -> list[TrialRecord]:
        """Trials with both plotted metrics (failed trials have none)."""
        return [t for t in self.trials if not t.failed and {ACCURACY, LATENCY} <= t.metrics.keys()]


# -- figures ------------------------------------------------------------------------------


def figure_html(figure: Any, *, include_plotlyjs: bool) -> str:
    """The figure as a ``<div>``; only the first figure carries plotly.js (inline)."""
    import plotly.io as pio

    return pio.to_html(
        figure, include_plotlyjs=include_plotlyjs, full_html=False,
        config={"displaylogo": False},
    )


def _colours() -> list[str]:
    import plotly.colors

    return list(plotly.colors.qualitative.Plotly)


def front_figure(data: Sequence[StudyData]) -> Any:
    """Accuracy against latency: every trial faint, the front bold, budgets dashed."""
    import plotly.graph_objects as go

    figure = go.Figure()
    colours = _colours()
    for i, d in enumerate(data):
        colour = colours[i % len(colours)]
        name = escape(d.study.name)
        figure.add_trace(_scatter(d.plotted, d.study.name, f"{name}: all trials", colour,
                                  faint=True))
        figure.add_trace(_scatter(d.front, d.study.name, f"{name}: Pareto front", colour,
                                  faint=False))
        budget = d.problem.upper_bound(LATENCY)
        if budget is not None:
            figure.add_vline(
                x=budget, line_dash="dash", line_color=colour,
                annotation_text=f"{name} budget {budget:g} ms",
                annotation_font_color=colour,
            )
    figure.update_layout(
        xaxis_title="latency (ms)", yaxis_title="accuracy", hovermode="closest",
        height=560, legend_title_text="study",
    )
    return figure


def _scatter(trials: Sequence[TrialRecord], study: str, label: str, colour: str, *,
             faint: bool) -> Any:
    """One trace; each point carries (trial, config for the hover, study) so a page can
    tell which subnet was clicked."""
    import plotly.graph_objects as go

    return go.Scatter(
        x=[t.metrics[LATENCY] for t in trials],
        y=[t.metrics[ACCURACY] for t in trials],
        customdata=[[t.number, _hover_config(t.config), study] for t in trials],
        name=label,
        mode="markers" if faint else "lines+markers",
        line={"color": colour, "width": 2, "shape": "hv"},
        marker={"color": colour, "size": 6 if faint else 10, "opacity": 0.25 if faint else 1.0},
        hovertemplate=(
            f"{label}<br>trial %{{customdata[0]}}<br>accuracy %{{y:.4f}}<br>"
            "latency %{x:.3f} ms<br>%{customdata[1]}<extra></extra>"
        ),
    )


def hypervolume_section(data: Sequence[StudyData]) -> str:
    """The curve of each study with a defined hypervolume; a note for the others."""
    import plotly.graph_objects as go

    figure = go.Figure()
    colours = _colours()
    skipped = []
    for i, d in enumerate(data):
        if not hypervolume_defined(d.problem):
            skipped.append(d.study.name)
            continue
        figure.add_trace(go.Scatter(
            x=list(range(1, len(d.trials) + 1)), y=hypervolume_curve(d.trials, d.problem),
            name=escape(d.study.name), mode="lines", line={"color": colours[i % len(colours)]},
        ))
    figure.update_layout(
        xaxis_title="evaluations", yaxis_title="normalised hypervolume", height=420
    )
    note = (
        f'<p class="note">No hypervolume for {escape(", ".join(skipped))}: a minimised '
        "objective has no budget to normalise it by.</p>"
        if skipped else ""
    )
    return figure_html(figure, include_plotlyjs=False) + note


def hypervolume_curve(trials: Sequence[TrialRecord], problem: Problem) -> list[float]:
    """:func:`search_hypervolume` of the first k trials, for k = 1..n.

    The hypervolume of a set equals that of its feasible front, so one archive of the
    front is carried along (:class:`ParetoArchive`): linear in n rather than quadratic.
    """
    normalise = normaliser(problem)
    archive = ParetoArchive(np.ones(len(problem.objectives)))
    curve = []
    for trial in trials:
        if usable(trial, problem) and problem.is_feasible(trial.metrics):
            archive.add(normalise(trial.metrics))
        curve.append(archive.hypervolume)
    return curve


# -- Pareto tables ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Counts:
    """Parameters and MACs of one subnet; ``note`` says why a figure is missing."""

    params: int | None
    macs: int | None
    note: str = ""
    memory_mb: float | None = None
    """Modelled from the subnet's shapes (for studies that did not search memory)."""


class _SubnetCounter:
    """Counts subnets rebuilt from their supernets; each supernet and task loads once
    and each config is counted once (a MAC count traces the model, about a second)."""

    def __init__(self, supernets: Mapping[str, Supernet]) -> None:
        self._supernets = dict(supernets)
        self._unavailable: dict[str, str] = {}
        self._inputs: dict[str, tuple[Any, ...]] = {}
        self._cache: dict[tuple[str, str, str], _Counts] = {}

    def counts(self, meta: StudyMeta, config: Mapping[str, Any]) -> _Counts:
        key = (meta.supernet, meta.checkpoint_hash, json.dumps(config, sort_keys=True))
        if key not in self._cache:
            self._cache[key] = self._count(meta, config)
        return self._cache[key]

    def _count(self, meta: StudyMeta, config: Mapping[str, Any]) -> _Counts:
        from nas._task import get_task
        from nas.hardware import count_macs, count_params

        if not meta.supernet:
            return _Counts(None, None, f"space {meta.space} was searched without weights "
                           "(accuracy was predicted): no subnet to count")
        supernet = self._supernet(meta.supernet)
        if supernet is None:
            return _Counts(None, None, self._unavailable[meta.supernet])
        if supernet.checkpoint_hash != meta.checkpoint_hash:
            return _Counts(None, None, (
                f"the available {meta.supernet} checkpoint ({supernet.checkpoint_hash[:12]}) "
                f"is not the study's ({meta.checkpoint_hash[:12]})"
            ))
        # Counting must not stop the report; whatever fails is shown in a footnote.
        try:
            model = supernet.extract({k: v for k, v in config.items()
                                      if not k.startswith(BITS_PREFIX)})
        except Exception as err:
            return _Counts(None, None, f"the subnet could not be rebuilt: {one_line(err)}")
        params = count_params(model)
        task = meta.task or supernet.task_name
        if not task:
            return _Counts(params, None, "no task is recorded, so there is no input to count on")
        try:
            if task not in self._inputs:
                self._inputs[task] = get_task(task).example_inputs()
            macs = count_macs(model, self._inputs[task])
        except Exception as err:
            return _Counts(params, None, f"MACs could not be counted: {one_line(err)}")
        return _Counts(params, macs, memory_mb=_modelled_memory_mb(supernet, config, task))

    def _supernet(self, name: str) -> Supernet | None:
        if name not in self._supernets and name not in self._unavailable:
            try:
                self._supernets[name] = get_supernet(name)
            except Exception as err:  # unknown name, missing or corrupt checkpoint, ...
                self._unavailable[name] = f"supernet {name!r} is unavailable: {one_line(err)}"
        return self._supernets.get(name)


def _modelled_memory_mb(supernet: Supernet, config: Mapping[str, Any], task: str
                        ) -> float | None:
    """The shape model's peak memory of the subnet, MB; None for a family without one."""
    from nas._hardware import MEMORY_MODELS, model_memory
    from nas._task import get_task

    if supernet.family not in MEMORY_MODELS:
        return None
    arch = {k: v for k, v in config.items() if not k.startswith(BITS_PREFIX)}
    return model_memory(supernet.describe(arch), get_task(task).workload()).peak_bytes / 1e6


def subnet_cells(trial: TrialRecord, memory: str | None, modelled: float | None = None) -> str:
    """The cells every Pareto table starts a row with: trial, config, accuracy, latency
    and memory (the report and the dashboard show the same figures the same way): the
    stored ``memory`` metric, else ``modelled`` where given."""
    value = trial.metrics.get(memory) if memory else modelled
    return (
        f'<td class="num">{trial.number}</td>'
        f"<td><code>{escape(compact_config(trial.config))}</code></td>"
        f'<td class="num">{format_number(trial.metrics.get(ACCURACY), ".4f")}</td>'
        f'<td class="num">{format_number(trial.metrics.get(LATENCY), ".3f")}</td>'
        f'<td class="num">{format_number(value, ".4g")}</td>'
    )


def _pareto_section(data: StudyData, counter: _SubnetCounter) -> str:
    """The study's Pareto subnets as a table, with numbered footnotes for missing counts."""
    name = escape(data.study.name)
    memory = memory_metric(data.front)
    notes: list[str] = []
    rows = []
    quantized = data.study.meta.quantize != "none"
    for trial in data.front:
        counts = counter.counts(data.study.meta, trial.config)
        mark = _footnote(counts.note, notes)
        policy = policy_cells(trial) if quantized else ""
        rows.append(
            f'<tr data-trial="{trial.number}">{subnet_cells(trial, memory, counts.memory_mb)}'
            f"{_count_cell(counts.params, mark)}{_count_cell(counts.macs, mark)}{policy}</tr>"
        )
    modelled = memory is None and any(
        counter.counts(data.study.meta, t.config).memory_mb is not None for t in data.front)
    memory_header = "memory (MB, modelled)" if modelled else memory_heading(memory)
    policy_header = POLICY_HEADER if quantized else ""
    body = "\n".join(rows) or (
        f'<tr><td colspan="{9 if quantized else 7}">no feasible trial yet</td></tr>')
    footnotes = "".join(
        f'<p class="note">[{i}] {escape(text)}</p>' for i, text in enumerate(notes, 1)
    )
    return (
        f"<h2>Pareto subnets of {name}</h2>\n"
        f'<table data-study="{name}">\n<tr><th>trial</th><th>config</th><th>accuracy</th>'
        f"<th>latency (ms)</th><th>{memory_header}</th><th>params</th><th>MACs</th>"
        f"{policy_header}</tr>\n"
        f"{body}\n</table>\n{footnotes}"
    )


POLICY_HEADER = "<th>size (MB)</th><th>bits</th>"
"""The headers of :func:`policy_cells` (report and dashboard)."""


def policy_cells(trial: TrialRecord) -> str:
    """Size and bit widths of a quantized study's subnet (``8x12 32x4``: units per width;
    a ``--quantize int8`` study's configs hold no bit genes: every unit is 8-bit)."""
    counts: dict[int, int] = {}
    for name, value in trial.config.items():
        if name.startswith(BITS_PREFIX):
            counts[int(value)] = counts.get(int(value), 0) + 1
    bits = " ".join(f"{w}x{n}" for w, n in sorted(counts.items())) or "8 (all units)"
    return (f'<td class="num">{format_number(trial.metrics.get("size_mb"), ".3f")}</td>'
            f"<td>{escape(bits)}</td>")


def _count_cell(value: int | None, mark: str) -> str:
    """A count, or a dash carrying the footnote that says why it is missing."""
    return f'<td class="num">{_DASH + mark if value is None else format(value, ",")}</td>'


def memory_heading(metric: str | None) -> str:
    """The memory column's heading: its unit for ``memory_mb`` (``--objective memory``,
    ``--memory-budget``), else the metric's name."""
    if metric == "memory_mb":
        return "memory (MB)"
    return f"memory ({escape(metric)})" if metric else "memory"


def memory_metric(trials: Sequence[TrialRecord]) -> str | None:
    """The stored metric that measures memory, if the trials have one (none do yet
    unless a memory objective or constraint was searched)."""
    names = sorted({m for t in trials for m in t.metrics if "memory" in m})
    return names[0] if names else None


def _footnote(note: str, notes: list[str]) -> str:
    """The marker of ``note`` (added to ``notes`` once), or nothing for no note."""
    if not note:
        return ""
    if note not in notes:
        notes.append(note)
    return f"<sup>[{notes.index(note) + 1}]</sup>"


# -- settings -----------------------------------------------------------------------------


def _settings_table(data: Sequence[StudyData]) -> str:
    """One column per study, so that settings compare side by side."""
    columns = [_settings(d) for d in data]
    header = "".join(f"<th>{escape(d.study.name)}</th>" for d in data)
    rows = [
        f"<tr><th>{escape(label)}</th>"
        + "".join(f"<td>{escape(column[label])}</td>" for column in columns)
        + "</tr>"
        for label in columns[0]
    ]
    return f"<table>\n<tr><th></th>{header}</tr>\n" + "\n".join(rows) + "\n</table>"


def _settings(data: StudyData) -> dict[str, str]:
    """Everything the study records about how it was run, as text."""
    meta = data.study.meta
    hv = (
        f"{search_hypervolume(data.trials, data.problem):.4f}"
        if hypervolume_defined(data.problem) else _DASH
    )
    return {
        "storage": data.study.storage,
        "trials": str(len(data.trials)),
        "feasible trials": str(sum(1 for t in data.trials if t.feasible)),
        "failed trials": str(sum(1 for t in data.trials if t.failed)),
        "Pareto subnets": str(len(data.front)),
        "hypervolume": hv,
        "supernet": meta.supernet or _DASH,
        "checkpoint hash": meta.checkpoint_hash,
        "space": meta.space,
        "accuracy": meta.accuracy_note() or "measured on the task's validation set",
        "task": meta.task or _DASH,
        "eval limit": _DASH if meta.eval_limit is None else str(meta.eval_limit),
        "hardware": meta.hardware,
        "hardware fingerprint": meta.hardware_fingerprint,
        "objectives": ", ".join(f"{o['name']} ({o['direction']})" for o in meta.objectives),
        "budget": ", ".join(f"{c['metric']} \u2264 {c['upper']:g}" for c in meta.constraints)
        or _DASH,
        "quantize": meta.quantize,
        "algorithm": meta.algorithm or _DASH,
        "seed": _DASH if meta.seed is None else str(meta.seed),
    }


# -- formatting ---------------------------------------------------------------------------


def compact_config(config: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_compact_value(v)}" for k, v in config.items())


def _compact_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def _hover_config(config: Mapping[str, Any], per_line: int = 3) -> str:
    """The config for a hover label: escaped (plotly renders a subset of HTML), a few
    genes per line so the label stays narrow."""
    items = [escape(f"{k}={_compact_value(v)}") for k, v in config.items()]
    return "<br>".join(
        ", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)
    )


def format_number(value: float | int | None, spec: str) -> str:
    return _DASH if value is None else format(value, spec)


def _version() -> str:
    try:
        return version(_PACKAGE)
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "(version unknown)"
