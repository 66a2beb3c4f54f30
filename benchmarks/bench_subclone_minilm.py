"""Weight subcloning of MiniLM to about half its size, vs random neurons and random init.

The pretrained all-MiniLM-L6-v2 (converted to a :class:`DenseTransformer`) is subcloned
(:func:`nas.compress._subclone.subclone`, calibration on pydoc *training* paragraphs) to
three targets of about half its size (:data:`TARGETS`: half the blocks; 46% of the
parameters outside the word table; 49% of all parameters), each three ways:

- ``subclone``: activation-magnitude ranking (the paper);
- ``random_neurons``: the same block removal and rescaling with random neuron choices;
- ``random_init``: the same architecture, PyTorch's default initialisation.

Each is then distilled for the same short budget (AdamW, ``1 - cosine`` to MiniLM's
sentence embedding of pydoc training paragraphs, as ``minilm-distill-pydoc`` does). The
figure is the mean cosine of its sentence embeddings (mean pooling, L2-normalised) to
MiniLM's on every pydoc *validation* paragraph (64 tokens), at step 0 and at the end,
and the step at which each reaches the random init's final training loss (the paper's
"4x faster training" check).

Parameters are counted three ways: ``all``; ``no_word`` (all but the 30,522 x C
word-embedding table, which dominates MiniLM); ``encoder`` (the blocks only, as
``bench_prune_minilm.py`` counts them). Writes ``benchmarks/results/subclone_minilm.json``.

    OMP_NUM_THREADS=1 python benchmarks/bench_subclone_minilm.py [--steps 150] [--seeds 3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _results import write_results

from nas.compress._convert import bert_from_minilm
from nas.compress._prune import count_params
from nas.compress._sentence_data import (
    MAX_TOKENS,
    SentenceDistillation,
    distil_loss,
    embed_all,
)
from nas.compress._subclone import measure_importance, subclone
from nas.compress._train import train
from nas.compress._transformer import FAMILY, DenseTransformer
from nas.supernets._export import load_subnet, save_subnet
from nas.supernets.tasks._minilm import load_minilm

RESULTS = Path(__file__).parent / "results" / "subclone_minilm.json"
TARGETS = {"3L-384": {"layers": 3, "hidden": 384}, "4L-320": {"layers": 4, "hidden": 320},
           "4L-256": {"layers": 4, "hidden": 256}}
"""Half the blocks at full width; 46% of the non-embedding parameters; 49% of all of them."""


def steps_to_reach(curves: dict[str, list[float]], window: int = 10) -> dict[str, int | None]:
    """Per init, the first step whose mean loss over ``window`` steps is at most the random
    init's mean over its last ``window`` steps (None: never within the budget)."""
    final = sum(curves["random_init"][-window:]) / len(curves["random_init"][-window:])
    out: dict[str, int | None] = {}
    for init, losses in curves.items():
        means = [sum(losses[i:i + window]) / window for i in range(len(losses) - window + 1)]
        out[init] = next((i for i, v in enumerate(means) if v <= final), None)
    return out


def params(model: DenseTransformer) -> dict[str, int]:
    total = count_params(model)
    return {"all": total, "no_word": total - model.word.weight.numel(),
            "encoder": count_params(model, which="encoder")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150, help="distillation steps")
    parser.add_argument("--batch", type=int, default=16, help="paragraphs per batch")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--calibration-batches", type=int, default=8)
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the calibration "
                        "draw, random neurons, random init and batches")
    args = parser.parse_args()
    started = time.perf_counter()
    minilm, tokenizer = load_minilm()
    dense = bert_from_minilm(minilm).eval()
    sentences = SentenceDistillation.build(dense, tokenizer)
    train_ids, val_ids, val_mask = sentences.train_ids, sentences.val_ids, sentences.val_mask
    cosine = sentences.cosine

    dense_params = params(dense)
    result: dict = {
        "model": "all-MiniLM-L6-v2 as DenseTransformer",
        "method": "weight subcloning (Samragh et al. 2023), compress/_subclone.py",
        "data": {"train_paragraphs": len(train_ids), "validation_paragraphs": len(val_ids),
                 "max_tokens": MAX_TOKENS, "source": "pydoc_data topics (CPython docs)"},
        "budget": {"distil_steps": args.steps, "batch": args.batch, "lr": args.lr,
                   "optimiser": "AdamW (weight decay 0.01)", "loss": "1 - cosine",
                   "calibration_batches": args.calibration_batches, "seeds": args.seeds},
        "dense": {"params": dense_params, "cosine": cosine(dense)},
        "runs": [],
    }
    for seed, name in itertools.product(range(args.seeds), args.targets):
        calib_draw = sentences.batches(args.batch, torch.Generator().manual_seed(seed + 1))
        calibration = [calib_draw()[:2] for _ in range(args.calibration_batches)]
        if name == args.targets[0]:
            result["dense"].setdefault("block_change", []).append(
                [round(float(c), 4) for c in measure_importance(dense, calibration).change])
        target = TARGETS[name]
        t0 = time.perf_counter()
        models = {"subclone": subclone(dense, calibration, **target)}
        narrower = target["hidden"] < dense.embed_dim
        if narrower:  # at full width every neuron is kept: random ranking is the same model
            models["random_neurons"] = subclone(dense, calibration, ranking="random",
                                                seed=seed, **target)
        torch.manual_seed(seed)
        models["random_init"] = DenseTransformer(**models["subclone"].subnet_config())
        subclone_seconds = time.perf_counter() - t0
        counted = params(models["subclone"])
        run: dict = {
            "target": name, "seed": seed, **target,
            "embed_dim": models["subclone"].embed_dim,
            "layers_config": [{k: s[k] for k in ("heads", "qk_dim", "v_dim", "ffn_dim")}
                              for s in models["subclone"].subnet_config()["layers"]],
            "params": counted,
            "fraction": {k: v / dense_params[k] for k, v in counted.items()},
            "subclone_seconds": subclone_seconds,
            "inits": {},
        }
        if narrower:  # the sqrt(D/d) LayerNorm rescaling, ablated at step 0
            run["cosine_step0_without_rescale"] = cosine(
                subclone(dense, calibration, rescale=False, **target))
        else:
            run["note"] = ("full width: no neuron is removed, so random-neuron subcloning "
                           "is the same model and rescaling is the identity; only block "
                           "removal acts")
        curves: dict[str, list[float]] = {}
        for init, model in models.items():
            t1 = time.perf_counter()
            start = cosine(model)
            losses = train(model, distil_loss,
                           sentences.batches(args.batch,
                                             torch.Generator().manual_seed(seed)),
                           steps=args.steps, lr=args.lr, progress=True)
            curves[init] = losses
            run["inits"][init] = {
                "cosine_step0": start, "cosine_final": cosine(model),
                "train_loss_first10": sum(losses[:10]) / max(len(losses[:10]), 1),
                "train_loss_last10": sum(losses[-10:]) / max(len(losses[-10:]), 1),
                "train_loss_every10": [round(v, 4) for v in losses[::10]],
                "seconds": time.perf_counter() - t1,
            }
            print(json.dumps({"target": name, "seed": seed, "init": init,
                              **{k: v for k, v in run["inits"][init].items()
                                 if k != "train_loss_every10"}}), flush=True)
        run["steps_to_random_init_final_loss"] = steps_to_reach(curves)
        with tempfile.TemporaryDirectory() as tmp:
            student = models["subclone"]
            loaded = load_subnet(save_subnet(student, tmp, family=FAMILY))
            run["export_roundtrip_max_abs_diff"] = float(
                (embed_all(loaded, val_ids[:8], val_mask[:8])
                 - embed_all(student, val_ids[:8], val_mask[:8])).abs().max())
        result["runs"].append(run)
    result["mean"] = {
        f"{name}/{init}": {key: statistics.mean(
            r["inits"][init][key] for r in result["runs"]
            if r["target"] == name and init in r["inits"]) for key in ("cosine_step0",
                                                                     "cosine_final")}
        for name in args.targets for init in ("subclone", "random_neurons", "random_init")
        if any(r["target"] == name and init in r["inits"] for r in result["runs"])}
    write_results(RESULTS, result, started)


if __name__ == "__main__":
    main()
