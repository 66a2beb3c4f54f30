"""Writing a benchmark's figures (run the benchmarks as ``python benchmarks/bench_*.py``)."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch


def write_results(path: Path, result: dict[str, Any], started: float) -> None:
    """Add the wall time since ``started`` (``time.perf_counter``) and the machine to
    ``result`` and write it to ``path`` as indented JSON."""
    result["seconds_total"] = time.perf_counter() - started
    result["machine"] = {"platform": platform.platform(), "torch": torch.__version__,
                         "threads": torch.get_num_threads()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
