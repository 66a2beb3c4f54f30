"""Memory and time to refuse a tampered export, as its config grows, against building it.

A real export of the shipped MatFormer's smallest subnet has its ``ffn_dims`` multiplied
by 4, 16, ..., 4096 in ``config.json`` (the weights file unchanged). Side by side,
each in a fresh process after one untimed load of the pristine export (so one-off
costs are not counted), with the peak resident set reset first: the baseline builds the
model the config describes, as loading did before its checks (``MatFormerLM(**config)``);
``load_subnet`` refuses it. The refusal's cost should stay flat while the baseline's
grows with the config. Writes ``benchmarks/results/untrusted_load.json``.

    python benchmarks/bench_untrusted_load.py [--factors 4,16,64,256,1024,4096]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import write_results

import nas

RESULTS = Path(__file__).parent / "results" / "untrusted_load.json"

PROBE = """
import json, shutil, sys, time
from pathlib import Path
import nas
from nas import SUBNET_BUILDERS
from nas.hardware._agent import _reset_peak_rss, _status_mib
pristine, folder, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
nas.load_subnet(pristine)  # one-off costs (torch's lazy meta-device imports) go first
document = json.loads((folder / "config.json").read_text())
assert _reset_peak_rss(), "this system does not let a process reset its peak RSS"
before = _status_mib("VmRSS")
started = time.perf_counter()
try:
    if mode == "build":
        SUBNET_BUILDERS.entry(document["family"]).factory(**document["subnet_config"])
        outcome = "built"
    else:
        nas.load_subnet(folder)
        outcome = "loaded"
except ValueError as err:
    outcome = "refused: " + str(err)[:120]
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "peak_growth_mb": _status_mib("VmHWM") - before,
                  "outcome": outcome}))
"""


def probe(pristine: Path, folder: Path, mode: str) -> dict:
    run = subprocess.run([sys.executable, "-c", PROBE, str(pristine), str(folder), mode],
                         capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--factors", default="4,16,64,256,1024,4096")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.perf_counter()
    supernet = nas.get_supernet("matformer")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pristine = nas.save_subnet(supernet.extract(supernet.space.smallest()),
                                   Path(tmp) / "pristine", family=supernet.family)
        folder = Path(shutil.copytree(pristine, Path(tmp) / "tampered"))
        original = json.loads((folder / "config.json").read_text())
        weights_mb = (folder / "model.safetensors").stat().st_size / 2**20
        for factor in (int(f) for f in args.factors.split(",")):
            document = json.loads(json.dumps(original))
            config = document["subnet_config"]
            config["ffn_dims"] = [d * factor for d in config["ffn_dims"]]
            (folder / "config.json").write_text(json.dumps(document))
            row = {"factor": factor, "ffn_dims": config["ffn_dims"],
                   "baseline_build": probe(pristine, folder, "build"),
                   "checked_load": probe(pristine, folder, "load")}
            rows.append(row)
            print(f"x{factor}: build {row['baseline_build']['peak_growth_mb']:.0f} MB "
                  f"{row['baseline_build']['seconds']:.2f} s; checked load "
                  f"{row['checked_load']['peak_growth_mb']:.1f} MB "
                  f"{row['checked_load']['seconds']:.3f} s")
    write_results(args.out, {"model": "matformer smallest subnet", "weights_mb": weights_mb,
                             "rows": rows}, started)


if __name__ == "__main__":
    main()
