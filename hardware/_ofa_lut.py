"""OFA's published latency lookup tables, read for subnets of OFA's MobileNetV3 space.

Once-for-All (Cai et al., ICLR 2020) ships per-device lookup tables (Samsung Note10 and
others): one YAML file per input resolution, ``<resolution>_lookup_table.yaml``, mapping
a layer key to its measured latency (``{key: {"mean": ms, ...}}``). A subnet's latency
is the sum of its layers' entries. This module builds those keys for a subnet given in
OFA's own encoding (``{"ks": [20 kernels], "e": [20 expand ratios], "d": [5 depths],
"r": [resolution]}``) of the published space ``ofa_mbv3_d234_e346_k357_w1.0``, so the
tables (and predictors trained on that encoding) plug in unchanged. No table ships
with the project (they are OFA's files); point :meth:`OFALatencyTable.from_folder` at
a folder of them.

The layer layout follows OFA's MobileNetV3 (facts from OFA's paper and code):
first conv 3->16 (stride 2); a fixed first block 16->16 (kernel 3, expand 1, identity
skip); five stages of up to 4 blocks with widths 24, 40, 80, 112, 160, strides
2, 2, 2, 1, 2, SE in stages 2, 4, 5 and h-swish in stages 3-5; a block's middle width
is ``make_divisible(round(in * e), 8)``; a block has an identity skip when its stride
is 1 and its input and output widths match; then the final expand 160->960, global
pooling, the feature mix 960->1280 and the 1000-way classifier.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nas._hardware import HardwareTarget, Provenance
from nas._space import Config
from nas._supernet import Supernet
from nas._task import Task

STAGE_WIDTHS = (24, 40, 80, 112, 160)
STAGE_STRIDES = (2, 2, 2, 1, 2)
STAGE_SE = (False, True, False, True, True)
STAGE_HSWISH = (False, False, True, True, True)
BLOCKS_PER_STAGE = 4
FIRST_CONV, FIRST_BLOCK, FINAL_EXPAND, FEATURE_MIX, CLASSES = 16, 16, 960, 1280, 1000
KERNELS, EXPANDS, DEPTHS = (3, 5, 7), (3, 4, 6), (2, 3, 4)
PUBLISHED_SPACE = "ofa-mbv3"
"""The search-space name of OFA's published MobileNetV3 space (``nas.supernets.ofa``)."""
_TABLE_FILE = re.compile(r"^(\d+)_lookup_table\.ya?ml$")


def make_divisible(value: float, divisor: int = 8) -> int:
    """OFA's (and MobileNet's) channel rounding: nearest multiple of ``divisor``, never
    below 90 % of ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@dataclass(frozen=True)
class OFAEncoding:
    """A subnet of OFA's published MobileNetV3 space in OFA's own encoding."""

    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    r: int

    @classmethod
    def from_dict(cls, encoding: Mapping[str, Sequence[int] | int]) -> OFAEncoding:
        """Validate OFA's ``{"ks", "e", "d", "r"}`` dict (``r`` a list of one or an int).

        Raises:
            ValueError: a missing key, a list of the wrong length or a value outside
                OFA's choices; the message names the key.
        """
        missing = [key for key in ("ks", "e", "d", "r") if key not in encoding]
        if missing:
            raise ValueError(f"an OFA encoding needs the keys ks, e, d and r; missing {missing}")
        r = encoding["r"]
        resolution = int(r[0] if isinstance(r, Sequence) and len(r) == 1 else r)  # type: ignore[arg-type]
        blocks = len(STAGE_WIDTHS) * BLOCKS_PER_STAGE
        out = cls(
            ks=tuple(int(v) for v in encoding["ks"]),  # type: ignore[union-attr]
            e=tuple(int(v) for v in encoding["e"]),  # type: ignore[union-attr]
            d=tuple(int(v) for v in encoding["d"]),  # type: ignore[union-attr]
            r=resolution,
        )
        for key, values, length, choices in (
            ("ks", out.ks, blocks, KERNELS),
            ("e", out.e, blocks, EXPANDS),
            ("d", out.d, len(STAGE_WIDTHS), DEPTHS),
        ):
            if len(values) != length or not set(values) <= set(choices):
                raise ValueError(
                    f"OFA encoding {key!r} must list {length} values from {list(choices)}, "
                    f"got {list(values)}"
                )
        return out


def layer_keys(encoding: OFAEncoding) -> list[str]:
    """The lookup-table keys of every layer the subnet runs, in order."""
    size = encoding.r
    half = (size + 1) // 2
    keys = [f"Conv-input:{size}x{size}x3-output:{half}x{half}x{FIRST_CONV}"]
    size = half
    keys.append(_block_key(size, FIRST_CONV, FIRST_BLOCK, FIRST_BLOCK, 3, 1, True, False, False))
    channels = FIRST_BLOCK
    for stage, width in enumerate(STAGE_WIDTHS):
        for block in range(encoding.d[stage]):
            index = stage * BLOCKS_PER_STAGE + block
            stride = STAGE_STRIDES[stage] if block == 0 else 1
            out_size = int((size - 1) / stride + 1)
            keys.append(_block_key(
                size, channels, width, make_divisible(round(channels * encoding.e[index])),
                encoding.ks[index], stride, stride == 1 and channels == width,
                STAGE_SE[stage], STAGE_HSWISH[stage], out_size=out_size,
            ))
            size, channels = out_size, width
    keys += [
        f"Conv_1-input:{size}x{size}x{channels}-output:{size}x{size}x{FINAL_EXPAND}",
        f"AvgPool2D-input:{size}x{size}x{FINAL_EXPAND}-output:1x1x{FINAL_EXPAND}",
        f"Conv_2-input:1x1x{FINAL_EXPAND}-output:1x1x{FEATURE_MIX}",
        f"Logits-input:1x1x{FEATURE_MIX}-output:{CLASSES}",
    ]
    return keys


def _block_key(
    size: int, channels: int, width: int, middle: int, kernel: int, stride: int,
    skip: bool, se: bool, hswish: bool, *, out_size: int | None = None,
) -> str:
    out_size = size if out_size is None else out_size
    return (
        f"expanded_conv-input:{size}x{size}x{channels}-output:{out_size}x{out_size}x{width}"
        f"-expand:{middle}-kernel:{kernel}-stride:{stride}-idskip:{int(skip)}"
        f"-se:{int(se)}-hs:{int(hswish)}"
    )


class OFALatencyTable:
    """Per-resolution lookup tables: ``{resolution: {layer key: ms}}``.

    Args:
        tables: the entries of each resolution's table, in milliseconds.
        source: where the tables came from (named in errors and provenance).
    """

    def __init__(self, tables: Mapping[int, Mapping[str, float]], *, source: str = "") -> None:
        if not tables:
            raise ValueError("an OFA latency table needs at least one resolution's entries")
        self.tables = {int(r): dict(entries) for r, entries in tables.items()}
        self.source = source

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(sorted(self.tables))

    @classmethod
    def from_folder(cls, folder: str | Path) -> OFALatencyTable:
        """Read every ``<resolution>_lookup_table.yaml`` in ``folder`` (OFA's layout).

        Raises:
            FileNotFoundError: no such folder, or no table file in it.
            ValueError: a file that is not a mapping of keys to ``{"mean": number}``;
                the message names the file and the key.
        """
        import yaml

        root = Path(folder)
        if not root.is_dir():
            raise FileNotFoundError(f"OFA latency table folder {str(root)!r} does not exist")
        tables: dict[int, dict[str, float]] = {}
        for path in sorted(root.iterdir()):
            match = _TABLE_FILE.match(path.name)
            if match:
                tables[int(match.group(1))] = _read_table(path, yaml.safe_load(path.read_text()))
        if not tables:
            raise FileNotFoundError(
                f"{root} holds no OFA table; expected files named <resolution>_lookup_table.yaml"
            )
        return cls(tables, source=str(root))

    def predict_ms(self, encoding: OFAEncoding | Mapping[str, Sequence[int] | int]) -> float:
        """The subnet's latency: the sum of its layers' entries at its resolution.

        Raises:
            ValueError: an invalid encoding, a resolution without a table, or a layer
                missing from the table (the key is named).
        """
        if not isinstance(encoding, OFAEncoding):
            encoding = OFAEncoding.from_dict(encoding)
        table = self.tables.get(encoding.r)
        if table is None:
            raise ValueError(
                f"no OFA latency table for resolution {encoding.r}; "
                f"the tables cover {list(self.resolutions)}"
            )
        total = 0.0
        for key in layer_keys(encoding):
            if key not in table:
                raise ValueError(f"the resolution-{encoding.r} OFA table has no entry {key!r}")
            total += table[key]
        return total


def _read_table(path: Path, document: object) -> dict[str, float]:
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a mapping of layer keys, got {type(document).__name__}")
    entries = {}
    for key, value in document.items():
        mean = value.get("mean") if isinstance(value, dict) else None
        if not isinstance(mean, int | float) or isinstance(mean, bool):
            raise ValueError(f"{path}: entry {key!r} has no numeric 'mean'")
        entries[str(key)] = float(mean)
    return entries


class OFALookupTarget(HardwareTarget):
    """``ofa-lut:FOLDER``: OFA's published lookup tables in FOLDER as a hardware target.

    It predicts the latency of OFA's *published* MobileNetV3 at a subnet's choices, so it
    accepts supernets on that space only (``space.name == "ofa-mbv3"``, with a
    ``design.to_ofa(config)`` that gives OFA's encoding); the figures are the tables'.
    """

    PREFIX = "ofa-lut:"

    def __init__(self, table: OFALatencyTable) -> None:
        self.table = table
        self.name = f"{self.PREFIX}{table.source}"
        self.description = f"OFA lookup tables in {table.source}"

    @classmethod
    def from_spec(cls, spec: str) -> OFALookupTarget:
        """``ofa-lut:FOLDER`` -> the target reading FOLDER's tables."""
        folder = spec.removeprefix(cls.PREFIX)
        if not folder:
            raise ValueError("an OFA lookup-table target is named ofa-lut:FOLDER, got no folder")
        return cls(OFALatencyTable.from_folder(folder))

    def _latency_ms(self, supernet: Supernet, config: Config, task: Task) -> float:
        design = getattr(supernet, "design", None)
        if supernet.space.name != PUBLISHED_SPACE or not hasattr(design, "to_ofa"):
            raise ValueError(
                f"{self.name} predicts OFA's published MobileNetV3 space "
                f"({PUBLISHED_SPACE!r}); supernet space {supernet.space.name!r} is not it"
            )
        return self.table.predict_ms(design.to_ofa(config))

    def provenance(self) -> Provenance:
        return Provenance(
            method="predicted",
            source=f"OFA latency lookup tables ({self.table.source}), resolutions "
            f"{list(self.table.resolutions)}",
            notes=(
                "Sum of per-layer entries measured by whoever built the tables; OFA reports "
                "lookup-table sums within a few percent of measured latency on its devices.",
            ),
        )

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for resolution in self.table.resolutions:
            for key, value in sorted(self.table.tables[resolution].items()):
                digest.update(f"{resolution}|{key}|{value!r}".encode())
        return f"ofa-lut:{digest.hexdigest()[:16]}"
