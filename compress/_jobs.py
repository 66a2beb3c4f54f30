"""The compression jobs behind ``nas compress``: load, compress, distil, score, export.

A job reads the source encoder (``minilm``: the pretrained all-MiniLM-L6-v2 as a
:class:`BertEncoder`; or a folder a previous job or ``save_subnet`` wrote with family
``bert``), compresses it, scores its sentence embeddings against the source's on pydoc
validation paragraphs and writes the export (``model.safetensors`` + ``config.json``)
that ``nas.load_subnet`` reads back. The output folder is checked before any work, so a
refused run costs nothing and leaves what is there untouched.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from nas.compress._bert import FAMILY, BertEncoder, bert_from_minilm
from nas.compress._prune import check_target, count_params, prune
from nas.compress._saliency import random_probe_loss
from nas.compress._sentence_data import SentenceDistillation, distil_loss, sentence_embedding
from nas.compress._subclone import subclone
from nas.compress._train import train
from nas.supernets._export import CONFIG, WEIGHTS, load_subnet, save_subnet
from nas.supernets._minilm import MiniLMTokenizer, load_minilm

BUILTIN = "minilm"


def load_source(source: str) -> tuple[BertEncoder, MiniLMTokenizer]:
    """The encoder to compress and MiniLM's tokenizer (every source shares its vocabulary).

    Raises:
        MissingExtraError: the ``minilm`` extra is not installed.
        FileNotFoundError: ``source`` is neither ``minilm`` nor an existing folder.
        ValueError: the folder holds another family's subnet.
    """
    minilm, tokenizer = load_minilm()
    if source == BUILTIN:
        return bert_from_minilm(minilm).eval(), tokenizer
    folder = Path(source)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"--model must be {BUILTIN!r} or a folder written by nas compress, got {source!r}"
        )
    model = load_subnet(folder)
    if not isinstance(model, BertEncoder):
        raise ValueError(
            f"{folder} holds a {type(model).__name__}; nas compress works on BERT encoders "
            f"({BUILTIN!r} or a folder it wrote)"
        )
    return model, tokenizer


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an output folder that already holds an export, unless ``overwrite``."""
    if not overwrite and ((out / WEIGHTS).exists() or (out / CONFIG).exists()):
        raise FileExistsError(f"{out} already holds an exported model; pass --force to replace")


def prune_job(
    source: str,
    out: Path,
    *,
    target_params: float,
    count: str = "all",
    criterion: str = "hessian",
    steps: int = 4,
    saliency_batches: int = 8,
    distil_steps: int = 30,
    batch_size: int = 16,
    lr: float = 1e-4,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Prune ``source`` to ``target_params`` of its ``count`` parameters (NViT), distilling
    from it after every step; write the export to ``out``; return the summary."""
    check_target(target_params, criterion, count)  # before the minute of loading
    check_out(out, overwrite)
    started = time.perf_counter()
    dense, tokenizer = load_source(source)
    data = SentenceDistillation.build(dense, tokenizer)
    pruned = prune(
        dense, data.batches(batch_size, torch.Generator().manual_seed(seed)),
        target_params=target_params, which=count, criterion=criterion,
        saliency_loss=random_probe_loss(sentence_embedding, seed=seed),
        distil_loss=distil_loss, steps=steps, saliency_batches=saliency_batches,
        distil_steps=distil_steps, lr=lr, progress=progress,
    )
    settings = {"method": "prune", "criterion": criterion, "target_params": target_params,
                "count": count, "steps": steps, "saliency_batches": saliency_batches,
                "distil_steps": distil_steps, "batch_size": batch_size, "lr": lr, "seed": seed}
    return _finish(source, dense, pruned, data, out, settings, overwrite, started)


def subclone_job(
    source: str,
    out: Path,
    *,
    layers: int,
    hidden: int,
    ffn: int | None = None,
    heads: int | None = None,
    calibration_paragraphs: int = 128,
    distil_steps: int = 150,
    batch_size: int = 16,
    lr: float = 2e-4,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Initialise a smaller encoder from ``source`` by weight subcloning (activations on
    ``calibration_paragraphs`` training paragraphs), distil it for ``distil_steps``; write
    the export to ``out``; return the summary (with the cosine before distillation)."""
    check_out(out, overwrite)
    started = time.perf_counter()
    teacher, tokenizer = load_source(source)
    data = SentenceDistillation.build(teacher, tokenizer)
    student = subclone(teacher, data.calibration(calibration_paragraphs, batch_size),
                       layers=layers, hidden=hidden, ffn=ffn, heads=heads)
    before = data.cosine(student)
    train(student, distil_loss, data.batches(batch_size, torch.Generator().manual_seed(seed)),
          steps=distil_steps, lr=lr, progress=progress)
    settings = {"method": "subclone", "layers": layers, "hidden": hidden, "ffn": ffn,
                "heads": heads, "calibration_paragraphs": calibration_paragraphs,
                "distil_steps": distil_steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                "cosine_before_distillation": before}
    return _finish(source, teacher, student.eval(), data, out, settings, overwrite, started)


def _finish(
    source: str,
    original: BertEncoder,
    compressed: BertEncoder,
    data: SentenceDistillation,
    out: Path,
    settings: dict[str, Any],
    overwrite: bool,
    started: float,
) -> dict[str, Any]:
    """Score, export and summarise a compressed model."""
    summary = {
        "source": source,
        "out": str(out),
        **settings,
        "params": {"original": count_params(original), "compressed": count_params(compressed),
                   "original_encoder": count_params(original, which="encoder"),
                   "compressed_encoder": count_params(compressed, which="encoder")},
        "cosine_to_source": data.cosine(compressed),
        "validation_paragraphs": len(data.val_ids),
        "shape": {"embed_dim": compressed.embed_dim,
                  "layers": compressed.subnet_config()["layers"]},
        "wall_s": round(time.perf_counter() - started, 1),
    }
    summary["params"]["fraction"] = summary["params"]["compressed"] / summary["params"]["original"]
    save_subnet(compressed.eval(), out, family=FAMILY, metadata=summary, overwrite=overwrite)
    return summary

