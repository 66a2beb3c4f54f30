"""Export of a dense subnet as ``model.safetensors`` + ``config.json``, and loading it back.

The two files alone rebuild the model: ``config.json`` names the family, whose dense
builder (registered in :data:`nas.SUBNET_BUILDERS`) takes ``subnet_config``; the weights
are safetensors, so loading never runs pickled code.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from nas._supernet import SUBNET_BUILDERS

FORMAT = "nas-subnet/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save_subnet(
    model: nn.Module,
    out_dir: str | Path,
    *,
    family: str,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` (which must offer ``subnet_config()``) to ``out_dir``.

    Files are written to temporaries and renamed, so an interrupted export never leaves
    a half-written model; an existing export is kept unless ``overwrite``.

    Raises:
        FileExistsError: ``out_dir`` already holds an export and ``overwrite`` is false.
    """
    out = Path(out_dir)
    if not overwrite and ((out / WEIGHTS).exists() or (out / CONFIG).exists()):
        raise FileExistsError(
            f"{out} already holds an exported subnet; choose another directory or overwrite"
        )
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "format": FORMAT,
        "family": family,
        "subnet_config": model.subnet_config(),
        "metadata": metadata or {},
    }
    _atomic_write(out / WEIGHTS, lambda tmp: save_model(model, str(tmp)))
    _atomic_write(out / CONFIG, lambda tmp: tmp.write_text(json.dumps(document, indent=2) + "\n"))
    return out


def load_subnet(path: str | Path) -> nn.Module:
    """Rebuild an exported dense subnet from ``config.json`` + ``model.safetensors``.

    Returns the model in eval mode. Raises ``FileNotFoundError`` or ``ValueError`` with
    a one-line message naming the file and what is wrong with it.
    """
    folder = Path(path)
    document = read_subnet_config(folder)
    builder = SUBNET_BUILDERS.entry(document["family"]).factory
    try:
        model = builder(**document["subnet_config"])
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{folder / CONFIG}: subnet_config does not build a model: {err}"
        ) from None
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing; an export holds {WEIGHTS} and {CONFIG}")
    try:
        missing, unexpected = load_model(model, str(weights), strict=False)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{weights} is not a readable safetensors file: {err}") from None
    except RuntimeError as err:  # shape mismatch between the weights and the config
        first = str(err).strip().splitlines()[-1].strip()
        raise ValueError(f"{weights} does not match {CONFIG}: {first}") from None
    if missing or unexpected:
        raise ValueError(
            f"{weights} does not match {CONFIG}: missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}"
        )
    return model.eval()


def read_subnet_config(folder: Path) -> dict[str, Any]:
    """The validated ``config.json`` of an export."""
    path = folder / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; an export holds {WEIGHTS} and {CONFIG}")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"{path} is not a subnet export (expected \"format\": \"{FORMAT}\")")
    for key in ("family", "subnet_config"):
        if key not in document:
            raise ValueError(f"{path} lacks the key {key!r}")
    return document


def _atomic_write(target: Path, write: Any) -> None:
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
