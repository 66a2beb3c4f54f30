"""Regenerate ``data/implementation_calibration.json``: ``python -m nas.hardware.calibrate``
(``--quantized``: ``data/quantized_cpu_calibration.json``, the int8 costs the modelled
HAT targets price quantized subnets with; about two minutes).

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
    parser.add_argument("--quantized", action="store_true",
                        help="write the int8 calibration instead (local-cpu-model's form)")
    parser.add_argument("--samples", type=int, default=QUANTIZED_SAMPLES,
                        help=f"subnets of the int8 calibration (default {QUANTIZED_SAMPLES}: "
                             f"a quarter, 30, held out)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.quantized:
        return _quantized(args.out, args.samples, args.seed)

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


QUANTIZED_SAMPLES = 120


def _quantized(out: Path | None, samples: int, seed: int) -> int:
    from nas._supernet import get_supernet
    from nas.hardware._local_model import calibrate_local, save_calibration, shipped_quantized_path

    supernet = get_supernet("hat")
    calibration = calibrate_local(supernet, get_task(supernet.task_name), n=samples, seed=seed,
                                  quantized=True, progress=True)
    path = save_calibration(calibration, out or shipped_quantized_path())
    logger.info("fp32 held out: %s", calibration.heldout)
    logger.info("int8 held out: %s", calibration.quantized.heldout)
    logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
