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
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.compress._bert import FAMILY, bert_from_minilm
from nas.compress._prune import PruneStep, count_params, prune
from nas.compress._saliency import random_probe_loss
from nas.supernets._export import load_subnet, save_subnet
from nas.supernets._minilm import load_minilm, mean_pool
from nas.supernets._pydoc_text import paragraphs

RESULTS = Path(__file__).parent / "results" / "prune_minilm.json"
MAX_TOKENS = 64


def sentence_embedding(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
    ids, mask = batch[0], batch[1]
    return F.normalize(mean_pool(model(ids, mask), mask), dim=-1)  # (B, C)


def distil_loss(student: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    return 1.0 - (sentence_embedding(student, batch) * batch[2]).sum(-1).mean()


def embed_all(model: nn.Module, ids: Tensor, mask: Tensor, batch: int = 64) -> Tensor:
    with torch.inference_mode():
        return torch.cat([sentence_embedding(model, (ids[i:i + batch], mask[i:i + batch]))
                          for i in range(0, len(ids), batch)])


def batches(ids: Tensor, mask: Tensor, target: Tensor, size: int,
            generator: torch.Generator) -> Callable[[], tuple[Tensor, Tensor, Tensor]]:
    """Random training batches ``(ids, mask, teacher embedding)``, padding columns cut."""

    def next_batch() -> tuple[Tensor, Tensor, Tensor]:
        pick = torch.randint(len(ids), (size,), generator=generator)
        width = int(mask[pick].sum(1).max())
        return ids[pick, :width], mask[pick, :width], target[pick]

    return next_batch


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
    train_ids, train_mask = tokenizer(list(paragraphs("train")), max_length=MAX_TOKENS)
    val_ids, val_mask = tokenizer(list(paragraphs("validation")), max_length=MAX_TOKENS)
    train_target = embed_all(dense, train_ids, train_mask)
    val_target = embed_all(dense, val_ids, val_mask)

    def cosine(model: nn.Module) -> float:
        return float((embed_all(model, val_ids, val_mask) * val_target).sum(-1).mean())

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
            data = batches(train_ids, train_mask, train_target, args.batch, generator)
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
