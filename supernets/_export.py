"""Export of a dense subnet as ``model.safetensors`` + ``config.json``, and loading it back.

The two files alone rebuild the model: ``config.json`` names the family, whose dense
builder (registered in :data:`nas.SUBNET_BUILDERS`) takes ``subnet_config``; the weights
are safetensors, so loading never runs pickled code. A quantized subnet's
``config.json`` also lists its quantized layers, whose integers and scales the weights
file holds.

Loading trusts neither file (an agent receives both from the network): the document's
types are checked here, and :mod:`nas.supernets._untrusted` checks the config against
the weights file before anything real is allocated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from nas._files import atomic_write, write_text_atomic
from nas._registry import UnknownNameError
from nas._supernet import SUBNET_BUILDERS
from nas.quant import quantization_document, read_quantization, with_quantized_layers
from nas.supernets._untrusted import (
    build_checked,
    build_on_meta,
    check_fits_weights,
    check_sizes,
    read_weights_header,
)

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
    quantization = quantization_document(model)
    if quantization is not None:
        document["quantization"] = quantization
    atomic_write(out / WEIGHTS, lambda tmp: save_model(model, str(tmp)))
    write_text_atomic(out / CONFIG, json.dumps(document, indent=2) + "\n")
    return out


def load_subnet(path: str | Path) -> nn.Module:
    """Rebuild an exported dense subnet from ``config.json`` + ``model.safetensors``.

    Returns the model in eval mode. Raises ``FileNotFoundError`` or ``ValueError`` with
    a one-line message naming the file and what is wrong with it; a config that does not
    describe the weights is refused before its model is allocated (module docstring).
    """
    folder = Path(path)
    document = read_subnet_config(folder)
    builder = SUBNET_BUILDERS.entry(document["family"]).factory
    config, config_path, weights = document["subnet_config"], folder / CONFIG, folder / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing; an export holds {WEIGHTS} and {CONFIG}")
    header = read_weights_header(weights)
    check_sizes(config, header, config_path=config_path, weights=weights)
    layers = read_quantization(document, config_path)
    planned = build_on_meta(builder, config, config_path=config_path, weights=weights,
                            tensors=len(header))
    planned = with_quantized_layers(planned, layers, config_path)
    check_fits_weights(planned, header, config_path=config_path, weights=weights)
    model = with_quantized_layers(build_checked(builder, config, config_path), layers,
                                  config_path)
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
    """The validated ``config.json`` of an export: an object with the format, a
    registered family and a ``subnet_config`` object (``metadata``, if any, an object)."""
    path = folder / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; an export holds {WEIGHTS} and {CONFIG}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, too many digits
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    except RecursionError:
        raise ValueError(f"{path} is not valid JSON: nested too deeply") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"{path} is not a subnet export (expected \"format\": \"{FORMAT}\")")
    for key in ("family", "subnet_config"):
        if key not in document:
            raise ValueError(f"{path} lacks the key {key!r}")
    try:
        SUBNET_BUILDERS.entry(document["family"])
    except UnknownNameError as err:
        raise UnknownNameError(f"{path}: {err}") from None
    for key in ("subnet_config", "metadata"):
        value = document.get(key, {})
        if not isinstance(value, dict):
            raise ValueError(f"{path}: {key} must be a JSON object, got "
                             f"{type(value).__name__} {repr(value)[:60]}")
    return document
