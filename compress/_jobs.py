"""The compression jobs behind ``nas compress``: load, compress, distil, score, export.

A job reads its source: ``minilm`` (the pretrained all-MiniLM-L6-v2) or a folder, either
a subnet ``nas export`` wrote (MatFormer, or FlexiBERT with every layer self-attention)
or an earlier compression. It converts the source to a
:class:`~nas.compress._transformer.DenseTransformer`, compresses it with the data that
fits it (MiniLM: its own sentence embeddings of pydoc paragraphs; a subnet: its task's),
scores the result against the source and writes the export (``model.safetensors`` +
``config.json``) that ``nas.load_subnet`` reads back. Arguments and the output folder are
checked before any work, so a refused run costs nothing and leaves what is there
untouched.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas._files import check_output
from nas._supernet import get_supernet
from nas._task import get_task
from nas.compress._convert import bert_from_minilm, to_transformer
from nas.compress._cost import ENCODER_PARAMS, PARAMS, Cost, latency_cost, macs_cost
from nas.compress._latency import Calibration, calibrate, measure_ms
from nas.compress._prune import (
    NVIT_GROUPS,
    UNITS,
    check_criterion,
    check_target,
    count_params,
    prune,
)
from nas.compress._subclone import subclone
from nas.compress._task_data import CompressionData, TaskData
from nas.compress._train import train
from nas.compress._transformer import FAMILY, DenseTransformer
from nas.supernets._export import load_subnet, read_subnet_config, save_subnet

BUILTIN = "minilm"
DEVICES = {"local-cpu": "cpu", "cuda": "cuda"}
"""Hardware targets a latency budget can be measured on, and their torch device."""
COUNTS = {"all": PARAMS, "encoder": ENCODER_PARAMS}
GROUPS = {"units": UNITS, "nvit": NVIT_GROUPS}
CALIBRATION_SAMPLES = 32
"""Shapes a latency budget's model is fitted on (about 6 s for MiniLM on one core)."""
_CONVERTIBLE = ("matformer", "flexibert-minilm")
"""Shipped supernets whose largest subnet converts (FlexiBERT's tiny space mixes in
operations that have no heads; its all-attention subnets convert from nas export)."""


@dataclass(frozen=True)
class Source:
    """The model to compress, the data that fits it and the task it reports (if any)."""

    model: DenseTransformer
    data: CompressionData
    task: str | None


def load_source(source: str) -> Source:
    """The source as a :class:`DenseTransformer`, with its compression data.

    Raises:
        MissingExtraError: a MiniLM-based source without the ``minilm`` extra.
        FileNotFoundError: ``source`` is neither ``minilm``, a convertible supernet nor
            an existing folder.
        ValueError: the folder holds a model compression cannot convert.
    """
    if source == BUILTIN:
        from nas.supernets.tasks._minilm import load_minilm

        return _sentence_source(bert_from_minilm(load_minilm()[0]).eval())
    folder = Path(source)
    if folder.is_dir():
        model = to_transformer(load_subnet(folder)).eval()
        task_name = _metadata(folder).get("task")
    elif source in _CONVERTIBLE:
        supernet = get_supernet(source)
        model = to_transformer(supernet.extract(supernet.space.largest())).eval()
        task_name = supernet.task_name
    else:
        raise FileNotFoundError(
            f"--model must be {BUILTIN!r}, a supernet whose largest subnet to compress "
            f"({', '.join(_CONVERTIBLE)}) or a folder written by nas export or nas compress, "
            f"got {source!r}")
    if not task_name:  # a compressed MiniLM
        return _sentence_source(model)
    data = TaskData(get_task(task_name), model, language_model=bool(
        model.subnet_config()["causal"]))
    return Source(model, data, task_name)


def _sentence_source(model: DenseTransformer) -> Source:
    from nas.compress._sentence_data import SentenceDistillation
    from nas.supernets.tasks._minilm import load_minilm

    return Source(model, SentenceDistillation.build(model, load_minilm()[1]), None)


def _metadata(folder: Path) -> Mapping[str, Any]:
    """The export's ``metadata``, read through the checks of ``load_subnet`` (valid JSON,
    an object), so a tampered ``config.json`` is a one-line error here too."""
    return read_subnet_config(folder).get("metadata", {})


@dataclass(frozen=True)
class Budget:
    """One pruning target: a fraction of the parameters or MACs, or a latency in ms on a
    hardware target. ``tokens`` is the sequence length MACs and latency are taken at."""

    params: float | None = None
    macs: float | None = None
    latency_ms: float | None = None
    count: str = "all"
    hw: str = "local-cpu"
    tokens: int = 64

    def check(self) -> None:
        """Refuse anything but exactly one well-formed target (one line each)."""
        given = [name for name in ("params", "macs", "latency_ms") if getattr(self, name)
                 is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of --target-params, --target-macs, "
                             f"--target-latency; got {len(given)}")
        if self.count not in COUNTS:
            raise ValueError(f"--count must be one of {list(COUNTS)}, got {self.count!r}")
        if self.count != "all" and self.params is None:
            raise ValueError(f"--count {self.count} says what --target-params counts; "
                             f"give --target-params, or leave --count out")
        if self.hw not in DEVICES:
            raise ValueError(f"--hw must be one of {list(DEVICES)} (a latency budget is "
                             f"measured on this machine), got {self.hw!r}")
        if self.hw == "cuda" and not torch.cuda.is_available():
            raise ValueError("--hw cuda needs a CUDA GPU and there is none here; use "
                             "--hw local-cpu")
        if self.tokens < 1:
            raise ValueError(f"--tokens must be a positive integer, got {self.tokens}")
        if self.latency_ms is not None and not self.latency_ms > 0:
            raise ValueError(f"--target-latency must be positive, got {self.latency_ms}")
        for name in ("params", "macs"):
            value = getattr(self, name)
            if value is not None:
                check_target(value)


def _calibrate(model: DenseTransformer, budget: Budget, progress: bool) -> Calibration:
    return calibrate(model, tokens=budget.tokens, device=DEVICES[budget.hw],
                     samples=CALIBRATION_SAMPLES, progress=progress)


def prune_job(
    source: str,
    out: Path,
    *,
    budget: Budget,
    criterion: str = "hessian",
    groups: str = "units",
    eta: float = 0.0,
    steps: int = 4,
    saliency_batches: int = 64,
    saliency_batch_size: int = 4,
    distil_steps: int = 30,
    batch_size: int = 16,
    lr: float = 1e-4,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Prune ``source`` to ``budget`` (NViT), distilling from it after every step;
    write the export to ``out``; return the summary."""
    budget.check()  # before the minute of loading
    check_criterion(criterion)
    if groups not in GROUPS:
        raise ValueError(f"--groups must be one of {list(GROUPS)}, got {groups!r}")
    if eta < 0:
        raise ValueError(f"--eta must be >= 0 (0 turns the latency term off), got {eta}")
    check_output(out, kind="dir", force=overwrite)
    started = time.perf_counter()
    src = load_source(source)
    dense = src.model
    tokens = min(budget.tokens, dense.subnet_config()["max_positions"])
    budget = dataclasses.replace(budget, tokens=tokens)
    calibration = _calibrate(dense, budget, progress) if (
        budget.latency_ms is not None or eta) else None
    cost, fraction = _cost_and_fraction(dense, budget, calibration)
    pruned = prune(
        dense, src.data.batches(batch_size, torch.Generator().manual_seed(seed)),
        target=fraction, cost=cost, criterion=criterion,
        saliency_loss=src.data.saliency_loss(seed), distil_loss=src.data.distil_loss,
        steps=steps, saliency_batches=saliency_batches, distil_steps=distil_steps, lr=lr,
        saliency_data=src.data.batches(saliency_batch_size,
                                       torch.Generator().manual_seed(seed + 1)),
        latency=latency_cost(calibration.model) if calibration is not None else None,
        eta=eta, group_sizes=GROUPS[groups], progress=progress,
    )
    settings = {"method": "prune", "criterion": criterion, "groups": groups, "eta": eta,
                "steps": steps,
                "saliency_batches": saliency_batches,
                "saliency_batch_size": saliency_batch_size, "distil_steps": distil_steps,
                "batch_size": batch_size, "lr": lr, "seed": seed,
                "budget": {k: v for k, v in dataclasses.asdict(budget).items()
                           if v is not None},
                "cost": {"name": cost.name, "unit": cost.unit, "source": cost(dense),
                         "target": cost(dense) * fraction, "compressed": cost(pruned)}}
    if calibration is not None:
        settings["latency"] = _latency_report(pruned, calibration, budget)
    return _finish(source, src, pruned, out, settings, overwrite, started)


def _cost_and_fraction(dense: DenseTransformer, budget: Budget, calibration: Calibration | None
                       ) -> tuple[Cost, float]:
    if budget.params is not None:
        return COUNTS[budget.count], budget.params
    if budget.macs is not None:
        return macs_cost(budget.tokens), budget.macs
    cost = latency_cost(calibration.model)
    predicted = cost(dense)
    if budget.latency_ms >= predicted:
        raise ValueError(f"the source already runs in {predicted:.2f} ms (predicted) on "
                         f"{budget.hw}, within --target-latency {budget.latency_ms:g} ms; "
                         f"nothing to prune")
    return cost, budget.latency_ms / predicted


def _latency_report(model: DenseTransformer, calibration: Calibration, budget: Budget
                    ) -> dict[str, Any]:
    """The pruned model's predicted and measured latency, and the model's own error."""
    return {"hw": budget.hw, "tokens": budget.tokens,
            "predicted_ms": calibration.model.predict_ms(model.subnet_config()),
            "measured_ms": measure_ms(model, tokens=budget.tokens,
                                      device=DEVICES[budget.hw]),
            "heldout_median_ape": calibration.heldout["median_ape"],
            "calibration_samples": len(calibration.samples)}


def subclone_job(
    source: str,
    out: Path,
    *,
    layers: int,
    hidden: int,
    ffn: int | None = None,
    heads: int | None = None,
    calibration_examples: int = 128,
    distil_steps: int = 150,
    batch_size: int = 16,
    lr: float = 2e-4,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Initialise a smaller model from ``source`` by weight subcloning (activations on
    ``calibration_examples`` training inputs), distil it for ``distil_steps``; write the
    export to ``out``; return the summary (with the score before distillation)."""
    check_output(out, kind="dir", force=overwrite)
    started = time.perf_counter()
    src = load_source(source)
    student = subclone(src.model, src.data.calibration(calibration_examples, batch_size),
                       layers=layers, hidden=hidden, ffn=ffn, heads=heads)
    before = src.data.score(student)[src.data.metric]
    train(student, src.data.distil_loss,
          src.data.batches(batch_size, torch.Generator().manual_seed(seed)),
          steps=distil_steps, lr=lr, progress=progress)
    settings = {"method": "subclone", "layers": layers, "hidden": hidden, "ffn": ffn,
                "heads": heads, "calibration_examples": calibration_examples,
                "distil_steps": distil_steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                f"{src.data.metric}_before_distillation": before}
    return _finish(source, src, student.eval(), out, settings, overwrite, started)


def _finish(
    source: str,
    src: Source,
    compressed: DenseTransformer,
    out: Path,
    settings: dict[str, Any],
    overwrite: bool,
    started: float,
) -> dict[str, Any]:
    """Score, export and summarise a compressed model."""
    original: nn.Module = src.model
    summary = {
        "source": source,
        "out": str(out),
        **({"task": src.task} if src.task else {}),
        **settings,
        "params": {"original": count_params(original), "compressed": count_params(compressed),
                   "original_encoder": count_params(original, which="encoder"),
                   "compressed_encoder": count_params(compressed, which="encoder")},
        "metric": src.data.metric,
        "score": {"source": src.data.score(original), "compressed": src.data.score(compressed)},
        "shape": {"embed_dim": compressed.embed_dim,
                  "layers": compressed.subnet_config()["layers"]},
        "wall_s": round(time.perf_counter() - started, 1),
    }
    summary["params"]["fraction"] = summary["params"]["compressed"] / summary["params"]["original"]
    check_output(out, kind="dir", force=overwrite)  # files may have appeared meanwhile
    save_subnet(compressed.eval(), out, family=FAMILY, metadata=summary, overwrite=overwrite)
    return summary
