"""Hessian-aware vs magnitude structural pruning of MiniLM to half its parameters.

The pretrained all-MiniLM-L6-v2 (converted to a :class:`BertEncoder`) is pruned globally
(heads, query/key and value widths, FFN units, embedding width) to 50 % of its
parameters, counted two ways, each by both criteria with the same schedule and the same
short distillation on pydoc *training* paragraphs:

- ``all``: every parameter (22.6 M; the word-embedding table alone is 11.7 M, so reaching
  half of all forces the embedding width down);
- ``encoder``: the six blocks only (10.6 M), the embedding tables and their LayerNorm not
  counted.

Saliency loss: a random projection of the L2-normalised sentence embedding (the
Gauss-Newton curvature of embedding distillation, :func:`random_probe_loss`); distillation
loss: ``1 - cosine`` to the dense MiniLM's embedding, AdamW. Figure: the mean cosine of
the pruned model's sentence embeddings to the dense MiniLM's on every pydoc *validation*
paragraph (64 tokens, as the ``minilm-distill-pydoc`` task), before any distillation
(the first step's pruning alone) and at the end. Writes
``benchmarks/results/prune_minilm.json``.

    OMP_NUM_THREADS=1 python benchmarks/bench_prune_minilm.py [--steps 4] [--distil-steps 30]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from nas.compress._bert import FAMILY, bert_from_minilm
from nas.compress._prune import PruneStep, count_params, prune
from nas.compress._saliency import random_probe_loss
from nas.compress._sentence_data import (
    MAX_TOKENS,
    SentenceDistillation,
    distil_loss,
    embed_all,
    sentence_embedding,
)
from nas.supernets._export import load_subnet, save_subnet
from nas.supernets._minilm import load_minilm

RESULTS = Path(__file__).parent / "results" / "prune_minilm.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="pruning steps")
    parser.add_argument("--distil-steps", type=int, default=30, help="AdamW steps per step")
    parser.add_argument("--saliency-batches", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16, help="paragraphs per batch")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    minilm, tokenizer = load_minilm()
    dense = bert_from_minilm(minilm).eval()
    sentences = SentenceDistillation.build(dense, tokenizer)
    train_ids, val_ids, val_mask = sentences.train_ids, sentences.val_ids, sentences.val_mask
    cosine = sentences.cosine

    result: dict = {
        "model": "all-MiniLM-L6-v2 as BertEncoder",
        "data": {"train_paragraphs": len(train_ids), "validation_paragraphs": len(val_ids),
                 "max_tokens": MAX_TOKENS, "source": "pydoc_data topics (CPython docs)"},
        "budget": {"steps": args.steps, "distil_steps_per_step": args.distil_steps,
                   "saliency_batches_per_step": args.saliency_batches, "batch": args.batch,
                   "lr": args.lr, "optimiser": "AdamW", "seed": args.seed},
        "dense": {"params_all": count_params(dense),
                  "params_encoder": count_params(dense, which="encoder"),
                  "cosine": cosine(dense)},
        "runs": [],
    }
    for which in ("encoder", "all"):
        for criterion in ("hessian", "magnitude"):
            generator = torch.Generator().manual_seed(args.seed)
            data = sentences.batches(args.batch, generator)
            steps: list[PruneStep] = []
            t0 = time.perf_counter()
            no_distil = prune(dense, data, target_params=0.5, which=which, criterion=criterion,
                              saliency_loss=random_probe_loss(sentence_embedding, seed=args.seed),
                              steps=1, saliency_batches=args.saliency_batches, progress=False)
            generator.manual_seed(args.seed)
            pruned = prune(dense, data, target_params=0.5, which=which, criterion=criterion,
                           saliency_loss=random_probe_loss(sentence_embedding, seed=args.seed),
                           distil_loss=distil_loss, steps=args.steps,
                           saliency_batches=args.saliency_batches,
                           distil_steps=args.distil_steps, lr=args.lr, on_step=steps.append)
            seconds = time.perf_counter() - t0
            with tempfile.TemporaryDirectory() as tmp:
                loaded = load_subnet(save_subnet(pruned, tmp, family=FAMILY))
                roundtrip = float((embed_all(loaded, val_ids[:8], val_mask[:8])
                                   - embed_all(pruned, val_ids[:8], val_mask[:8])).abs().max())
            cfg = pruned.subnet_config()
            result["runs"].append({
                "count": which, "criterion": criterion,
                "params_all": count_params(pruned),
                "params_encoder": count_params(pruned, which="encoder"),
                "fraction_all": count_params(pruned) / result["dense"]["params_all"],
                "fraction_encoder": count_params(pruned, which="encoder")
                / result["dense"]["params_encoder"],
                "cosine_one_shot_no_distillation": cosine(no_distil),
                "cosine": cosine(pruned),
                "embed_dim": cfg["embed_dim"],
                "layers": [{k: s[k] for k in ("heads", "qk_dim", "v_dim", "ffn_dim")}
                           for s in cfg["layers"]],
                "steps": [{"step": s.step, "params_all": s.params,
                           "params_encoder": s.encoder_params, "removed": dict(s.removed),
                           "distil_loss_tail": s.distil_loss} for s in steps],
                "export_roundtrip_max_abs_diff": roundtrip,
                "seconds": seconds,
            })
            print(json.dumps({k: v for k, v in result["runs"][-1].items()
                              if k not in ("layers", "steps")}))
    result["seconds_total"] = time.perf_counter() - started
    result["machine"] = {"platform": platform.platform(), "torch": torch.__version__,
                         "threads": torch.get_num_threads()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
