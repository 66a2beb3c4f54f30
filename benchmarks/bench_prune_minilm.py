"""Hessian-aware vs magnitude structural pruning of MiniLM to half its parameters.

The pretrained all-MiniLM-L6-v2 (converted to a :class:`DenseTransformer`) is pruned globally
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
(the first step's pruning alone) and at the end, for ``--seeds`` seeds (batches and
probes). Saliency batches hold 4 paragraphs each: every batch's gradient is one sample of
the Fisher. Last, MiniLM is pruned to half its latency on this CPU, modelled by a latency
model calibrated on 32 shapes (64 tokens, one thread), and the pruned model is timed.
Writes ``benchmarks/results/prune_minilm.json``.

    OMP_NUM_THREADS=1 python benchmarks/bench_prune_minilm.py [--seeds 3] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _results import write_results

from nas.compress._convert import bert_from_minilm
from nas.compress._cost import ENCODER_PARAMS, PARAMS, latency_cost
from nas.compress._latency import calibrate, measure_ms
from nas.compress._prune import PruneStep, count_params, prune
from nas.compress._sentence_data import MAX_TOKENS, SentenceDistillation, embed_all
from nas.compress._transformer import FAMILY
from nas.supernets._export import load_subnet, save_subnet
from nas.supernets.tasks._minilm import load_minilm

RESULTS = Path(__file__).parent / "results" / "prune_minilm.json"
COSTS = {"encoder": ENCODER_PARAMS, "all": PARAMS}


def prune_run(dense, sentences, which: str, criterion: str, seed: int, args) -> dict:
    """One pruning of MiniLM to half its ``which`` parameters; the one-shot model (first
    step's pruning alone, no distillation) and the distilled one, scored and round-tripped
    through an export."""
    def batches() -> tuple:
        return (sentences.batches(args.batch, torch.Generator().manual_seed(seed)),
                sentences.batches(args.saliency_batch, torch.Generator().manual_seed(seed + 1)))

    common = dict(target=0.5, cost=COSTS[which], criterion=criterion,
                  saliency_loss=sentences.saliency_loss(seed),
                  saliency_batches=args.saliency_batches)
    data, small = batches()
    no_distil = prune(dense, data, saliency_data=small, steps=1, progress=False, **common)
    data, small = batches()
    steps: list[PruneStep] = []
    started = time.perf_counter()
    pruned = prune(dense, data, saliency_data=small, distil_loss=sentences.distil_loss,
                   steps=args.steps, distil_steps=args.distil_steps, lr=args.lr,
                   on_step=steps.append, **common)
    seconds = time.perf_counter() - started
    ids, mask = sentences.val_ids[:8], sentences.val_mask[:8]
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_subnet(save_subnet(pruned, tmp, family=FAMILY))
        roundtrip = float((embed_all(loaded, ids, mask) - embed_all(pruned, ids, mask)).abs().max())
    cfg = pruned.subnet_config()
    return {
        "count": which, "criterion": criterion, "seed": seed,
        "params_all": count_params(pruned),
        "params_encoder": count_params(pruned, which="encoder"),
        "cosine_one_shot_no_distillation": sentences.cosine(no_distil),
        "cosine": sentences.cosine(pruned),
        "embed_dim": cfg["embed_dim"],
        "layers": [{k: s[k] for k in ("heads", "qk_dim", "v_dim", "ffn_dim")}
                   for s in cfg["layers"]],
        "steps": [{"step": s.step, "params_all": s.params, "params_encoder": s.encoder_params,
                   "removed": dict(s.removed), "distil_loss_tail": s.distil_loss}
                  for s in steps],
        "export_roundtrip_max_abs_diff": roundtrip,
        "seconds": seconds,
    }


def latency_run(dense, sentences, args) -> dict:
    """MiniLM pruned to half its modelled latency on this CPU (64 tokens, one thread)."""
    calibration = calibrate(dense, tokens=MAX_TOKENS, samples=32, progress=False)
    cost = latency_cost(calibration.model)
    pruned = prune(dense, sentences.batches(args.batch, torch.Generator().manual_seed(0)),
                   target=0.5, cost=cost, saliency_loss=sentences.saliency_loss(0),
                   saliency_batches=args.saliency_batches,
                   saliency_data=sentences.batches(args.saliency_batch,
                                                   torch.Generator().manual_seed(1)),
                   distil_loss=sentences.distil_loss, steps=args.steps,
                   distil_steps=args.distil_steps, lr=args.lr, progress=False)
    cfg = pruned.subnet_config()
    return {"heldout": calibration.heldout, "source_predicted_ms": cost(dense),
            "source_measured_ms": measure_ms(dense, tokens=MAX_TOKENS),
            "target_ms": 0.5 * cost(dense), "pruned_predicted_ms": cost(pruned),
            "pruned_measured_ms": measure_ms(pruned, tokens=MAX_TOKENS),
            "params_all": count_params(pruned), "cosine": sentences.cosine(pruned),
            "embed_dim": cfg["embed_dim"],
            "layers": [{k: s[k] for k in ("heads", "qk_dim", "v_dim", "ffn_dim")}
                       for s in cfg["layers"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="pruning steps")
    parser.add_argument("--distil-steps", type=int, default=30, help="AdamW steps per step")
    parser.add_argument("--saliency-batches", type=int, default=64)
    parser.add_argument("--saliency-batch", type=int, default=4, help="paragraphs per "
                        "saliency batch (each batch's gradient is one sample of the Fisher)")
    parser.add_argument("--batch", type=int, default=16, help="paragraphs per batch")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    minilm, tokenizer = load_minilm()
    dense = bert_from_minilm(minilm).eval()
    sentences = SentenceDistillation.build(dense, tokenizer)
    result: dict = {
        "model": "all-MiniLM-L6-v2 as DenseTransformer",
        "data": {"train_paragraphs": len(sentences.train_ids),
                 "validation_paragraphs": len(sentences.val_ids), "max_tokens": MAX_TOKENS,
                 "source": "pydoc_data topics (CPython docs)"},
        "budget": {"steps": args.steps, "distil_steps_per_step": args.distil_steps,
                   "saliency_batches_per_step": args.saliency_batches,
                   "saliency_batch": args.saliency_batch, "batch": args.batch,
                   "lr": args.lr, "optimiser": "AdamW", "seeds": args.seeds},
        "dense": {"params_all": count_params(dense),
                  "params_encoder": count_params(dense, which="encoder"),
                  "cosine": sentences.cosine(dense)},
        "runs": [],
    }
    for seed in range(args.seeds):
        for which in COSTS:
            for criterion in ("hessian", "magnitude"):
                run = prune_run(dense, sentences, which, criterion, seed, args)
                result["runs"].append(run)
                print(json.dumps({k: v for k, v in run.items() if k not in ("layers", "steps")}))
    result["mean"] = {
        f"{which}/{criterion}": {key: statistics.mean(
            r[key] for r in result["runs"] if (r["count"], r["criterion"]) == (which, criterion))
            for key in ("cosine_one_shot_no_distillation", "cosine", "params_all",
                        "params_encoder")}
        for which in COSTS for criterion in ("hessian", "magnitude")}
    result["half_latency"] = latency_run(dense, sentences, args)
    print(json.dumps(result["mean"]), json.dumps(result["half_latency"]))
    write_results(RESULTS, result, started)


if __name__ == "__main__":
    main()
