"""One validation pass of a subnet: through the supernet (weight slicing) vs extracted dense.

Weight slicing pays for the slicing on every forward; the extracted model holds
contiguous copies. Both run the same validation examples in the same process, side by
side, with the same thread count. Writes ``benchmarks/results/slicing_vs_dense.json``.

    python benchmarks/bench_slicing_vs_dense.py [--repeats 3] [--limit 2000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

import numpy as np
import torch
from _timing import median_seconds

import nas

RESULTS = Path(__file__).parent / "results" / "slicing_vs_dense.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="validation examples")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    supernet = nas.get_supernet("hat")
    task = nas.get_task(supernet.task_name)
    space = supernet.space
    rng = np.random.default_rng(0)
    configs = {"smallest": space.smallest(), "largest": space.largest()}
    configs.update({f"random-{i}": space.sample(rng) for i in range(3)})

    rows = []
    for label, config in configs.items():
        dense = supernet.extract(config)

        def sliced(config=config) -> None:
            supernet.activate(config)
            task.evaluate(supernet, split="validation", limit=args.limit, per=False)

        def extracted(dense=dense) -> None:
            task.evaluate(dense, split="validation", limit=args.limit, per=False)

        t_sliced = median_seconds(sliced, args.repeats)
        t_dense = median_seconds(extracted, args.repeats)
        rows.append({"config": label, "sliced_s": t_sliced, "dense_s": t_dense,
                     "ratio_sliced_over_dense": t_sliced / t_dense})
        print(f"{label:10s} sliced {t_sliced:.3f}s  dense {t_dense:.3f}s  "
              f"ratio {t_sliced / t_dense:.2f}")

    document = {
        "benchmark": "one validation pass: weight-sliced supernet vs extracted dense subnet",
        "examples": args.limit or "all validation",
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "rows": rows,
        "median_ratio": statistics.median(r["ratio_sliced_over_dense"] for r in rows),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"median ratio sliced/dense {document['median_ratio']:.2f}; wrote {args.out}")


if __name__ == "__main__":
    main()
