"""The compression jobs behind ``nas compress``: load, compress, distil, score, export.

A job reads its source: ``minilm`` (the pretrained all-MiniLM-L6-v2) or a folder, either
a subnet ``nas export`` wrote (MatFormer, FlexiBERT with every layer self-attention, or
HAT) or an earlier compression. It converts the source to a
:class:`~nas.compress._transformer.DenseTransformer` (a HAT subnet to a
:class:`~nas.compress._seq2seq.DenseSeq2Seq`, whose latency budget HAT's device models
price: ``--hw rpi4``), compresses it with the data that
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
from nas._hardware import get_hardware
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
from nas.compress._seq2seq import FAMILY as SEQ2SEQ_FAMILY
from nas.compress._seq2seq import DenseSeq2Seq
from nas.compress._seq2seq_cost import (
    SEQ2SEQ_PARAMS,
    ShapePricer,
    hat_latency_cost,
    seq2seq_macs_cost,
)
from nas.compress._subclone import subclone
from nas.compress._task_data import CompressionData, TaskData
from nas.compress._train import train
from nas.compress._transformer import FAMILY, DenseTransformer
from nas.hardware._hat_data import HAT_DEVICES
from nas.hardware._hat_targets import HATLatencyTarget
from nas.supernets._export import load_subnet, read_subnet_config, save_subnet

BUILTIN = "minilm"
DEVICES = {"local-cpu": "cpu", "cuda": "cuda"}
"""Hardware targets a latency budget can be measured on, and their torch device."""
COUNTS = {"all": PARAMS, "encoder": ENCODER_PARAMS}
GROUPS = {"units": UNITS, "nvit": NVIT_GROUPS}
CALIBRATION_SAMPLES = 32
"""Shapes a latency budget's model is fitted on (about 6 s for MiniLM on one core)."""
_CONVERTIBLE = ("matformer", "flexibert-minilm", "hat")
"""Shipped supernets whose largest subnet converts (FlexiBERT's tiny space mixes in
operations that have no heads; its all-attention subnets convert from nas export)."""


@dataclass(frozen=True)
class Source:
    """The model to compress, the data that fits it and the task it reports (if any)."""

    model: DenseTransformer | DenseSeq2Seq
    data: CompressionData
    task: str | None
    eval_limit: int | None = None


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
    limit = None
    if folder.is_dir():
        model = to_transformer(load_subnet(folder)).eval()
        task_name = _metadata(folder).get("task")
        limit = _eval_limit(folder)
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
        if isinstance(model, DenseSeq2Seq):
            raise ValueError(f"{source}: config.json names no task (metadata.task) to "
                             f"compress this encoder-decoder on")
        return _sentence_source(model)
    data = TaskData(get_task(task_name), model, language_model=bool(
        model.subnet_config().get("causal")), limit=limit,
        seq2seq=isinstance(model, DenseSeq2Seq))
    return Source(model, data, task_name, limit)


def _sentence_source(model: DenseTransformer) -> Source:
    from nas.compress._sentence_data import SentenceDistillation
    from nas.supernets.tasks._minilm import load_minilm

    return Source(model, SentenceDistillation.build(model, load_minilm()[1]), None)


def _metadata(folder: Path) -> Mapping[str, Any]:
    """The export's ``metadata``, read through the checks of ``load_subnet`` (valid JSON,
    an object), so a tampered ``config.json`` is a one-line error here too."""
    return read_subnet_config(folder).get("metadata", {})


def _eval_limit(folder: Path) -> int | None:
    """The validation examples the study scored its subnets on (``nas studies export``
    records it), so the source's score here is the front's figure; ``None``: all."""
    limit = read_subnet_config(folder).get("eval_limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise ValueError(f"{folder}: eval_limit must be a positive integer, got {limit!r}")
    return limit


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
        if self.hw not in DEVICES and not prices_shapes(self.hw):
            raise ValueError(f"--hw must be one of {list(DEVICES)} (measured on this "
                             f"machine) or, for a HAT subnet, {sorted(HAT_DEVICES)} "
                             f"(HAT's device models) or a target added with `nas hw add "
                             f"--supernet hat`, got {self.hw!r}")
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
    if not lr > 0:
        raise ValueError(f"--lr must be > 0, got {lr}")
    _check_hw(source, budget, eta)
    check_output(out, kind="dir", force=overwrite)
    started = time.perf_counter()
    src = load_source(source)
    dense = src.model
    if isinstance(dense, DenseSeq2Seq):
        cost, latency, fraction = _seq2seq_costs(src, budget, eta)
        calibration = None
    else:
        tokens = min(budget.tokens, dense.subnet_config()["max_positions"])
        budget = dataclasses.replace(budget, tokens=tokens)
        calibration = _calibrate(dense, budget, progress) if (
            budget.latency_ms is not None or eta) else None
        cost, fraction = _cost_and_fraction(dense, budget, calibration)
        latency = latency_cost(calibration.model) if calibration is not None else None
    pruned = prune(
        dense, src.data.batches(batch_size, torch.Generator().manual_seed(seed)),
        target=fraction, cost=cost, criterion=criterion,
        saliency_loss=src.data.saliency_loss(seed), distil_loss=src.data.distil_loss,
        steps=steps, saliency_batches=saliency_batches, distil_steps=distil_steps, lr=lr,
        saliency_data=src.data.batches(saliency_batch_size,
                                       torch.Generator().manual_seed(seed + 1)),
        latency=latency, eta=eta, group_sizes=GROUPS[groups], progress=progress,
    )
    settings = {"method": "prune", "criterion": criterion, "groups": groups, "eta": eta,
                "steps": steps,
                "saliency_batches": saliency_batches,
                "saliency_batch_size": saliency_batch_size, "distil_steps": distil_steps,
                "batch_size": batch_size, "lr": lr, "seed": seed,
                "budget": {k: v for k, v in dataclasses.asdict(budget).items()  # a seq2seq
                           if v is not None and not (  # is priced at its task's workload
                               k == "tokens" and isinstance(dense, DenseSeq2Seq))},
                "cost": {"name": cost.name, "unit": cost.unit, "source": cost(dense),
                         "target": cost(dense) * fraction, "compressed": cost(pruned)}}
    if calibration is not None:
        settings["latency"] = _latency_report(pruned, calibration, budget)
    elif latency is not None:
        settings["latency"] = _modelled_report(dense, pruned, latency, budget)
    return _finish(source, src, pruned, out, settings, overwrite, started)


def _is_seq2seq(source: str) -> bool:
    """Whether ``source`` names an encoder-decoder (HAT's supernet, or a folder holding a
    HAT subnet or its compression), read from ``config.json`` without loading weights."""
    if source == "hat":
        return True
    folder = Path(source)
    if not (folder / "config.json").is_file():
        return False
    return read_subnet_config(folder).get("family") in ("hat", SEQ2SEQ_FAMILY)


def _check_hw(source: str, budget: Budget, eta: float) -> None:
    """Refuse, before any loading, a target that cannot price this kind of model."""
    seq2seq = _is_seq2seq(source)
    modelled = budget.hw not in DEVICES
    if not seq2seq and modelled:
        raise ValueError(f"--hw {budget.hw!r} prices encoder-decoder (HAT) models only; "
                         f"use --hw local-cpu or cuda for this model")
    if seq2seq and not modelled and (budget.latency_ms is not None or eta):
        raise ValueError(f"a HAT subnet's latency is priced by a model of its layer shapes: "
                         f"--hw {' / '.join(sorted(HAT_DEVICES))} or a target added with "
                         f"`nas hw add --supernet hat`; got {budget.hw!r}")


def prices_shapes(hw: str) -> bool:
    """Whether target ``hw`` prices encoder-decoder layer shapes: a HAT device model, or
    a user's target fitted on HAT subnets (read from its record, nothing is fitted)."""
    if hw in HAT_DEVICES:
        return True
    try:
        target = get_hardware(hw)
    except ValueError:
        return False
    record = getattr(target, "record", None)
    return record is not None and record.family == "hat"


def _hat_target(hw: str) -> ShapePricer:
    """The target ``hw`` names, as a pricer of layer shapes."""
    target = get_hardware(hw)
    if not hasattr(target, "shape_latency_ms"):
        raise ValueError(f"a HAT subnet's latency is priced by a model of its layer shapes: "
                         f"--hw {' / '.join(sorted(HAT_DEVICES))} or a target added with "
                         f"`nas hw add --supernet hat`; got {hw!r}")
    return target


def _seq2seq_costs(src: Source, budget: Budget, eta: float
                   ) -> tuple[Cost, Cost | None, float]:
    """An encoder-decoder's pruning cost, its latency cost on ``budget.hw`` (``None``
    where neither the budget nor ``--eta`` needs one) and the fraction of the source to
    reach."""
    workload = src.data.task.workload()
    latency = hat_latency_cost(_hat_target(budget.hw), src.data.task) if (
        budget.hw not in DEVICES) else None
    if budget.params is not None:
        if budget.count != "all":
            raise ValueError("--count encoder is for encoder-only models; a HAT subnet's "
                             "--target-params counts all its parameters")
        return SEQ2SEQ_PARAMS, latency, budget.params
    if budget.macs is not None:
        return seq2seq_macs_cost(workload), latency, budget.macs
    predicted = latency(src.model)
    if budget.latency_ms >= predicted:
        raise ValueError(f"the source already runs in {predicted:.2f} ms (predicted) on "
                         f"{budget.hw}, within --target-latency {budget.latency_ms:g} ms; "
                         f"nothing to prune")
    return latency, latency, budget.latency_ms / predicted


def _modelled_report(source: DenseSeq2Seq, model: DenseSeq2Seq, latency: Cost, budget: Budget
                     ) -> dict[str, Any]:
    """Predicted latency before and after, and the device model's held-out error."""
    target = _hat_target(budget.hw)
    if isinstance(target, HATLatencyTarget):
        mape = target.fit().heldout["mape"]
        method = ("predicted by HAT's device model (heldout_mape: on HAT's own WMT "
                  "measurements; smaller subnets are extrapolated), not measured")
    else:
        mape = target.provenance().error["mape"]
        method = (f"predicted by {budget.hw}'s law (heldout_mape: leave-one-out on the "
                  f"device's measurements), not measured")
    return {"hw": budget.hw, "source_predicted_ms": latency(source),
            "predicted_ms": latency(model), "heldout_mape": mape, "method": method}


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
    if _is_seq2seq(source):
        raise ValueError(f"subclone takes one-stream transformers; {source} is an "
                         f"encoder-decoder (HAT): prune it with nas compress prune")
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
    compressed: DenseTransformer | DenseSeq2Seq,
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
        "shape": _shape(compressed),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    summary["params"]["fraction"] = summary["params"]["compressed"] / summary["params"]["original"]
    check_output(out, kind="dir", force=overwrite)  # files may have appeared meanwhile
    family = SEQ2SEQ_FAMILY if isinstance(compressed, DenseSeq2Seq) else FAMILY
    save_subnet(compressed.eval(), out, family=family, metadata=summary, overwrite=overwrite)
    return summary


def _shape(model: DenseTransformer | DenseSeq2Seq) -> dict[str, Any]:
    """The compressed model's widths: one embedding width and its blocks, or an
    encoder-decoder's two and its encoder and decoder blocks."""
    config = model.subnet_config()
    keys = (("encoder_dim", "decoder_dim", "encoder_layers", "decoder_layers")
            if isinstance(model, DenseSeq2Seq) else ("embed_dim", "layers"))
    return {key: config[key] for key in keys}
