"""Regenerate ``data/implementation_calibration.json``: ``python -m nas.hardware.calibrate``.

Times our dense HAT model on this machine's CPU over subnets of the built-in G2P space
(untrained weights: timing does not depend on their values) and writes the fitted
coefficients, the implementation factors against HAT's Xeon E5-2640 and every timing,
with the CPU model, thread count, torch version and date. Takes about a minute.
Run it on an otherwise idle machine whose CPU is comparable to a Xeon E5-2640 (the
predicted targets assume so).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from nas._task import get_task
from nas.hardware._calibration import (
    calibrate_implementation,
    default_calibration_path,
    write_calibration,
)

logger = logging.getLogger("nas.hardware.calibrate")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nas.hardware.calibrate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output JSON (default: {default_calibration_path()})")
    parser.add_argument("--task", default="g2p-cmudict", help="task whose probe is timed")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds per point")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per point")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random subnets")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from nas.supernets import G2P_SPACE, HATSuperTransformer

    task = get_task(args.task)
    src_vocab = getattr(task, "src_vocab_size", 32)
    tgt_vocab = getattr(task, "tgt_vocab_size", 75)
    supernet = HATSuperTransformer(G2P_SPACE, src_vocab=src_vocab, tgt_vocab=tgt_vocab).eval()
    calibration = calibrate_implementation(
        supernet, task, threads=args.threads, warmup=args.warmup, repeats=args.repeats,
        seed=args.seed,
    )
    path = write_calibration(calibration, args.out)
    logger.info("local coefficients: %s", calibration.local)
    logger.info("factors (ours here / fairseq on %s): %s",
                calibration.reference_device, calibration.factors)
    logger.info("validation on held-out subnets: %s", calibration.validation)
    logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
