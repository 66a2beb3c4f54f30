"""Export the subnets of a study as standalone checkpoints (``nas export``).

The study records the supernet's name and checkpoint hash; export loads that supernet,
refuses one whose weights differ (the stored accuracy would not describe the export),
extracts each dense subnet, re-estimates its BatchNorm statistics where the task can
give training batches, and writes one folder per subnet: the weights in the formats
asked for, ``config.json`` (architecture, metrics, hardware, supernet hash, seed, input
spec), a ``MODEL_CARD.md``, and for graph formats the example inputs and the torch
outputs they were checked against, so a user can check them again without our package.

A folder is built in a hidden sibling and moved into place only once every format has
passed its check, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nas._extras import installed, require
from nas._files import check_output, write_text_atomic
from nas._supernet import Supernet
from nas._task import TASKS, Task, get_task
from nas.studies._graphs import (
    DECODING_FILES,
    FILES,
    INPUTS,
    OUTPUTS,
    VOCAB,
    decoding_graphs_of,
    input_spec,
    write_decoding_graphs,
    write_graphs,
)
from nas.studies._model_card import model_card
from nas.studies._pareto import front_of
from nas.studies._report import study_problem, study_supernet
from nas.studies._storage import default_storage
from nas.studies._study import Study, TrialRecord, load_study

if TYPE_CHECKING:
    from nas.supernets.hat import DecodingGraphs

FORMATS = ("safetensors", "onnx", "torchscript")
"""Export formats, in the order they are written."""

FORMAT_EXTRAS = {"onnx": "onnx"}
"""Format -> the optional extra it needs (the others need only torch)."""

CONFIG = "config.json"
CARD = "MODEL_CARD.md"
EXPORT_FILES = (*FILES.values(), *(f for pair in DECODING_FILES.values() for f in pair), VOCAB,
                CONFIG, CARD, INPUTS, OUTPUTS)
"""Every file an export may write; ``overwrite`` removes the stale ones of an earlier export."""


RECALIBRATION_BATCHES = 20
RECALIBRATION_BATCH_SIZE = 32

DECODING_CHECK_WORDS = 16
"""Test words (validation words if there are none) that greedy decoding over exported
decoder graphs must translate as the model does before the graphs are written."""


def available_formats() -> tuple[str, ...]:
    """The formats this installation can write (those whose extras are installed)."""
    return tuple(f for f in FORMATS if f not in FORMAT_EXTRAS or installed(FORMAT_EXTRAS[f]))


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """Export formats from a comma list (``"safetensors,onnx"``) or a sequence of names.

    Raises:
        ValueError: an unknown or missing name.
        MissingExtraError: a format whose extra is not installed.
    """
    names = text.split(",") if isinstance(text, str) else list(text)
    names = [n.strip().lower() for n in names if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        what = f"unknown export format {unknown[0]!r}" if unknown else "no export format given"
        raise ValueError(f"{what}; choose a comma list of {', '.join(FORMATS)}")
    for name in names:
        if name in FORMAT_EXTRAS:
            require(FORMAT_EXTRAS[name], purpose=f"{name} export")
    return tuple(f for f in FORMATS if f in names)


def export_trial(
    study: str | Study,
    trial: int,
    out: str | Path,
    *,
    storage: str | None = None,
    overwrite: bool = False,
    supernet: Supernet | None = None,
    formats: str | Sequence[str] = ("safetensors",),
) -> Path:
    """Write the dense subnet of ``trial`` to ``out`` in ``formats``, with ``config.json``
    and ``MODEL_CARD.md``.

    Args:
        study: a study name or an open study.
        trial: the trial number.
        out: the directory to write.
        storage: the storage URL (default :func:`default_storage`).
        overwrite: write into ``out`` although it already holds files (``--force``).
        supernet: the supernet to extract from (default: the shipped supernet the study
            names, loaded through the registry).
        formats: names from :data:`FORMATS`; ``onnx`` and ``torchscript`` need a task
            with example inputs.

    Returns:
        ``out`` as a path.

    Raises:
        StudyNotFoundError: no such study.
        ValueError: no such trial, the trial failed, an unknown format, or a graph format
            whose outputs differ from torch's by more than
            :data:`nas.studies._graphs.TOLERANCE`.
        StudyMismatchError: the supernet's checkpoint is not the study's.
        FileExistsError: ``out`` holds files and ``overwrite`` is false.
    """
    chosen = parse_formats(formats)
    opened = _open(study, storage)
    _refuse_predicted(opened, supernet)
    record = _trial(opened, trial)
    target = check_output(out, kind="dir", force=overwrite)
    net = study_supernet(opened, supernet)
    return _export(opened, record, net, target, formats=chosen, task=_task(opened, net, chosen))


def export_pareto(
    study: str | Study,
    out: str | Path,
    *,
    storage: str | None = None,
    overwrite: bool = False,
    supernet: Supernet | None = None,
    formats: str | Sequence[str] = ("safetensors",),
) -> list[Path]:
    """Export every subnet of the study's feasible Pareto front to ``out/trial-<n>``,
    and write ``out/pareto.json`` listing them with their metrics.

    Raises:
        the same as :func:`export_trial`; ValueError when the front is empty.
    """
    chosen = parse_formats(formats)
    opened = _open(study, storage)
    _refuse_predicted(opened, supernet)
    front = front_of(opened.trials(), study_problem(opened))
    if not front:
        raise ValueError(f"study {opened.name!r} has no feasible trial to export")
    root = check_output(out, kind="dir", force=overwrite)
    net = study_supernet(opened, supernet)
    task = _task(opened, net, chosen)
    written = [
        _export(opened, record, net, root / f"trial-{record.number}", formats=chosen, task=task)
        for record in front
    ]
    index = [
        {"trial": r.number, "path": p.name, "metrics": r.metrics, "config": r.config}
        for r, p in zip(front, written, strict=True)
    ]
    write_text_atomic(root / "pareto.json",
                      json.dumps({"study": opened.name, "subnets": index}, indent=2) + "\n")
    return written


def _refuse_predicted(study: Study, supernet: Supernet | None) -> None:
    """A space searched without weights has no subnet to extract.

    Raises:
        ValueError: the study names no supernet and none was given.
    """
    if supernet is None and not study.meta.supernet:
        raise ValueError(
            f"study {study.name!r} searched space {study.meta.space!r} without weights "
            f"({study.meta.accuracy_note()}): there is no subnet to export; its configs and "
            f"figures are in `nas studies show {study.name} --json` and `nas studies export`"
        )


def recalibrate_batchnorm(
    model: nn.Module,
    task: Task | None,
    *,
    batches: int = RECALIBRATION_BATCHES,
    batch_size: int = RECALIBRATION_BATCH_SIZE,
    seed: int = 0,
) -> str:
    """Re-estimate the running statistics of ``model``'s BatchNorm layers on task data.

    A subnet's BN statistics were accumulated in the supernet over other subnets'
    activations, so they do not describe this one's. The statistics are reset and
    re-estimated as a cumulative average (``momentum=None``) over ``batches`` training
    batches in train mode without gradients (Yu et al., "Universally Slimmable
    Networks", ICCV 2019); the model is left in eval mode.

    Returns:
        what was done, for ``config.json``: ``"none"`` (no BatchNorm), ``"recalibrated:
        ..."``, or ``"not recalibrated: <reason>"`` (no task, or a task without data).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return "none"
    if task is None:
        return "not recalibrated: the study names no task to draw training batches from"
    try:
        next_batch = task.train_batches(batch_size=batch_size,
                                        generator=torch.Generator().manual_seed(seed))
    except ValueError as err:
        return f"not recalibrated: {str(err).strip().splitlines()[0]}"
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            task.loss(model, next_batch())  # the forward pass updates the statistics
    for bn, momentum in zip(norms, momenta, strict=True):
        bn.momentum = momentum
    model.eval()
    return (f"recalibrated: running statistics re-estimated on {batches} training "
            f"batches of {batch_size} from task {task.name}")


def _open(study: str | Study, storage: str | None) -> Study:
    return study if isinstance(study, Study) else load_study(study, storage or default_storage())


def _trial(study: Study, number: int) -> TrialRecord:
    trials = study.trials()
    for record in trials:
        if record.number == number:
            if record.failed:
                raise ValueError(f"trial {number} of study {study.name!r} failed; "
                                 "there is no subnet to export")
            return record
    span = (f"finished trials {trials[0].number} to {trials[-1].number}" if trials
            else "no finished trials")
    state = study.trial_state(number)
    if state is None:
        raise ValueError(f"study {study.name!r} has no trial {number} (it has {span})")
    raise ValueError(f"trial {number} of study {study.name!r} is {state}: "
                     f"{_UNFINISHED.get(state, 'it has no evaluated subnet')}; "
                     f"export a finished trial ({span})")


_UNFINISHED = {
    "RUNNING": "it is still being evaluated",
    "WAITING": "it is queued and not evaluated yet",
    "PRUNED": "it was stopped before its evaluation finished",
}


def _task(study: Study, supernet: Supernet, formats: tuple[str, ...]) -> Task | None:
    """The study's task (None where it names none or, for weights only, an unknown one:
    BatchNorm is then left as is); graph formats need its example inputs."""
    name = study.meta.task or supernet.task_name
    graphs = [f for f in formats if f != "safetensors"]
    if not graphs and name not in TASKS.names() and study.meta.quantize == "none":
        return None
    if not name:
        raise ValueError(f"study {study.name!r} names no task, so {graphs[0]} export has "
                         "no example inputs to trace and check with")
    return get_task(name)


def _export(
    study: Study,
    record: TrialRecord,
    supernet: Supernet,
    out: Path,
    *,
    formats: tuple[str, ...],
    task: Task | None,
) -> Path:
    """Build the export in a hidden sibling of ``out`` and move it in once all checks pass."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        _build(study, record, supernet, stage, formats=formats, task=task)
        _commit(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def _build(
    study: Study,
    record: TrialRecord,
    supernet: Supernet,
    folder: Path,
    *,
    formats: tuple[str, ...],
    task: Task | None,
) -> None:
    from nas.supernets._export import save_subnet

    quantize = study.meta.quantize
    if quantize != "none":
        model = _quantized_model(study, record, supernet, task)
        batchnorm = ("as the search scored it: quantized subnets are calibrated and scored as "
                     "extracted")
    else:
        model = supernet.extract(supernet.space.config(record.config)).eval()
        batchnorm = _batchnorm(model, supernet, task, seed=study.meta.seed or 0)
    save_subnet(model, folder, family=supernet.family, metadata=_metadata(study, record,
                                                                          supernet))
    if "safetensors" not in formats:
        (folder / FILES["safetensors"]).unlink()
    document = json.loads((folder / CONFIG).read_text())
    document.update(_summary(study, record))
    document["batchnorm"] = batchnorm
    document["formats"] = {"safetensors": {"file": FILES["safetensors"]}} \
        if "safetensors" in formats else {}
    graphs = [f for f in formats if f != "safetensors"]
    if graphs:
        assert task is not None  # _task refuses graph formats without one
        inputs = tuple(task.example_inputs())
        document["inputs"] = input_spec(model, inputs)
        document["formats"].update(write_graphs(model, inputs, folder, graphs,
                                                quantized=quantize != "none"))
        decoding = decoding_graphs_of(model) if quantize == "none" else None
        if decoding is not None:
            document["decoding"] = _decoding(model, decoding, task, folder, graphs)
    (folder / CONFIG).write_text(json.dumps(document, indent=2) + "\n")
    (folder / CARD).write_text(model_card(document))


def _decoding(model: nn.Module, decoding: DecodingGraphs, task: Task, folder: Path,
              formats: list[str]) -> dict[str, Any]:
    """Encoder and decoder-step graphs of a seq2seq subnet, checked on the task's first
    test words against the model's own greedy decoding (``decoding`` in config.json).

    Raises:
        ValueError: the task has no vocabularies to write, or a graph fails its check.
    """
    if not hasattr(task, "vocab_document"):
        raise ValueError(f"task {task.name!r} has no vocabularies to write beside the "
                         "decoder graphs; export safetensors only")
    words = task.words("test") or task.words("validation")  # a small lexicon's test split
    src = task.encode_words(words[:DECODING_CHECK_WORDS])   # may be empty
    max_len = min(src.shape[1] + 4, model.max_positions)
    reference = model.greedy_decode(src, max_len=max_len)
    return write_decoding_graphs(decoding, src, reference,
                                 task.vocab_document(), folder, formats)


def _batchnorm(model: nn.Module, supernet: Supernet, task: Task | None, *, seed: int) -> str:
    if supernet.recalibrates_batchnorm:
        return ("recalibrated by the supernet on extraction (its own calibration set), "
                "as when the search scored it")
    return recalibrate_batchnorm(model, task, seed=seed)


def _quantized_model(study: Study, record: TrialRecord, supernet: Supernet,
                     task: Task | None) -> nn.Module:
    """The trial's subnet quantized as the search scored it (same policy, same
    calibration samples)."""
    from nas._hardware import get_hardware
    from nas.quant import calibration_batches
    from nas.quant._subnet import quantized_subnet

    if task is None:
        raise ValueError(f"study {study.name!r} names no task to calibrate its quantized "
                         "subnets on")
    static = get_hardware(study.meta.hardware).quant_activations
    subnet = quantized_subnet(supernet, task, record.config, mode=study.meta.quantize,
                              batches=calibration_batches(task) if static else None)
    return subnet.fake_quantized()


def _metadata(study: Study, record: TrialRecord, supernet: Supernet) -> dict[str, Any]:
    meta = study.meta
    return {
        "study": study.name,
        "trial": record.number,
        "supernet": meta.supernet,
        "checkpoint_hash": meta.checkpoint_hash,
        "space": meta.space,
        "task": meta.task or supernet.task_name,
        "hardware": meta.hardware,
        "hardware_fingerprint": meta.hardware_fingerprint,
        "config": record.config,
        "metrics": record.metrics,
    }


def _summary(study: Study, record: TrialRecord) -> dict[str, Any]:
    """The top-level keys a user reads first: figures, target, weights and seed."""
    meta = study.meta
    return {
        "metrics": record.metrics,
        "hardware": {"name": meta.hardware, "fingerprint": meta.hardware_fingerprint,
                     **_latency_provenance(meta.hardware)},
        "supernet_hash": meta.checkpoint_hash,
        "seed": meta.seed,
        "eval_limit": meta.eval_limit,
    }


def _latency_provenance(hardware: str) -> dict[str, str]:
    """Whether the target's latencies are measured or predicted, and from what.

    A remote target is not asked: that would need its device to be up.
    """
    from nas._hardware import get_hardware

    if hardware.startswith("remote:"):
        return {"latency_method": "measured", "latency_source": f"the device at {hardware}"}
    provenance = get_hardware(hardware).provenance()
    return {"latency_method": provenance.method, "latency_source": provenance.source}


def _commit(stage: Path, out: Path) -> None:
    """Move the staged files into ``out``, removing an earlier export's stale files."""
    out.mkdir(parents=True, exist_ok=True)
    staged = {p.name for p in stage.iterdir()}
    for name in EXPORT_FILES:
        if name not in staged:
            (out / name).unlink(missing_ok=True)
    for name in sorted(staged):
        os.replace(stage / name, out / name)
