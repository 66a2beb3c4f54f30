"""OFA's published latency lookup tables, read for subnets of OFA's MobileNetV3 space.

Once-for-All (Cai et al., ICLR 2020) ships per-device lookup tables (Samsung Note10 and
others): one YAML file per input resolution, ``<resolution>_lookup_table.yaml``, mapping
a layer key to its measured latency (``{key: {"mean": ms, ...}}``). A subnet's latency
is the sum of its layers' entries. This module builds those keys for a subnet given in
OFA's own encoding (``{"ks": [20 kernels], "e": [20 expand ratios], "d": [5 depths],
"r": [resolution]}``) of the published spaces ``ofa_mbv3_d234_e346_k357_w1.0`` and
``..._w1.2``, so the tables (and predictors trained on that encoding) plug in unchanged.
No table ships with the project (they are OFA's files); point
:meth:`OFALatencyTable.from_folder` at a folder of them.

Widths: OFA publishes the network at width multipliers 1.0 and 1.2; the Note10 tables
are for 1.2 (stem 24, first block 24, stages 32/48/96/136/192, head 1152/1536). Every
width is ``make_divisible(base * multiplier)`` of the 1.0 network's; the table reader
finds the multiplier from the stem and head entries a table holds
(:func:`widths_for`, :meth:`OFALatencyTable.from_folder`).

The layer layout follows OFA's MobileNetV3 (facts from OFA's paper and code):
first conv 3->16 (stride 2); a fixed first block 16->16 (kernel 3, expand 1, identity
skip); five stages of up to 4 blocks with widths 24, 40, 80, 112, 160, strides
2, 2, 2, 1, 2, SE in stages 2, 4, 5 and h-swish in stages 3-5; a block's middle width
is ``make_divisible(round(in * e), 8)`` (OFA's table code writes ``round(in * e)``; every
published width times 3, 4 or 6 is a multiple of 8, so both agree); a block has an
identity skip when its stride
is 1 and its input and output widths match; then the final expand 160->960, global
pooling, the feature mix 960->1280 and the 1000-way classifier.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nas._hardware import HARDWARE_SCHEMES, HardwareTarget, Provenance
from nas._messages import one_line
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
WIDTH_MULTS = (1.0, 1.2)
"""The width multipliers OFA publishes its MobileNetV3 at (``..._w1.0``, ``..._w1.2``)."""
PUBLISHED_SPACE = "ofa-mbv3"
"""The search-space name of OFA's published MobileNetV3 space (``nas.supernets.ofa``);
a space restricted to some resolutions is named ``ofa-mbv3@r...`` (same genes)."""
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


@dataclass(frozen=True)
class OFAWidths:
    """Channel widths of OFA's MobileNetV3 at one width multiplier."""

    stem: int
    first: int
    stages: tuple[int, ...]
    final_expand: int
    feature_mix: int
    width_mult: float = 1.0

    @classmethod
    def at(cls, width_mult: float) -> OFAWidths:
        """OFA's widths at ``width_mult``: ``make_divisible(base * width_mult)`` each.

        Raises:
            ValueError: a multiplier that is not a positive number.
        """
        if isinstance(width_mult, bool) or not isinstance(width_mult, int | float) \
                or not width_mult > 0:
            raise ValueError(f"width_mult must be a positive number, got {width_mult!r}")
        scale = float(width_mult)
        return cls(
            stem=make_divisible(FIRST_CONV * scale), first=make_divisible(FIRST_BLOCK * scale),
            stages=tuple(make_divisible(w * scale) for w in STAGE_WIDTHS),
            final_expand=make_divisible(FINAL_EXPAND * scale),
            feature_mix=make_divisible(FEATURE_MIX * scale), width_mult=scale,
        )

    def describe(self) -> str:
        return (f"width {self.width_mult:g} (stem {self.stem}, stages "
                f"{'/'.join(map(str, self.stages))}, head {self.final_expand}/{self.feature_mix})")


def widths_for(table: Mapping[str, float], resolution: int, *, where: str = "the table"
               ) -> OFAWidths:
    """The published width (:data:`WIDTH_MULTS`) whose stem and head keys ``table`` holds.

    Raises:
        ValueError: the table matches no published width; the message names the stem
            key it holds and what each width would need.
    """
    smallest = OFAEncoding(ks=(3,) * 20, e=(3,) * 20, d=(2,) * 5, r=resolution)
    for mult in WIDTH_MULTS:
        widths = OFAWidths.at(mult)
        keys = layer_keys(smallest, widths)
        if keys[0] in table and keys[-2] in table:
            return widths
    stems = sorted(k for k in table if k.startswith("Conv-input:"))
    needs = "; ".join(f"{w.describe()} needs {layer_keys(smallest, w)[0]!r}"
                      for w in map(OFAWidths.at, WIDTH_MULTS))
    raise ValueError(f"{where} matches none of OFA's published widths: its stem entries are "
                     f"{stems or 'missing'}; {needs}")


def layer_keys(encoding: OFAEncoding, widths: OFAWidths | None = None) -> list[str]:
    """The lookup-table keys of every layer the subnet runs, in order (width 1.0 unless
    ``widths`` says otherwise)."""
    w = widths or OFAWidths.at(1.0)
    size = encoding.r
    half = (size + 1) // 2
    keys = [f"Conv-input:{size}x{size}x3-output:{half}x{half}x{w.stem}"]
    size = half
    keys.append(_block_key(size, w.stem, w.first, w.first, 3, 1, w.stem == w.first, False, False))
    channels = w.first
    for stage, width in enumerate(w.stages):
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
    head, mix = w.final_expand, w.feature_mix
    keys += [
        f"Conv_1-input:{size}x{size}x{channels}-output:{size}x{size}x{head}",
        f"AvgPool2D-input:{size}x{size}x{head}-output:1x1x{head}",
        f"Conv_2-input:1x1x{head}-output:1x1x{mix}",
        f"Logits-input:1x1x{mix}-output:{CLASSES}",
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
        width_mult: the network's width multiplier; None reads it from the tables
            (the published width whose stem and head entries they hold).
        files: the file of each resolution (named in errors).

    Raises:
        ValueError: no tables, or tables that match no published width.
    """

    def __init__(self, tables: Mapping[int, Mapping[str, float]], *, source: str = "",
                 width_mult: float | None = None,
                 files: Mapping[int, str] | None = None) -> None:
        if not tables:
            raise ValueError("an OFA latency table needs at least one resolution's entries")
        self.tables = {int(r): dict(entries) for r, entries in tables.items()}
        self.source = source
        self.files = {int(r): str(f) for r, f in (files or {}).items()}
        if width_mult is not None:
            self.widths = OFAWidths.at(width_mult)
        else:
            r = self.resolutions[0]
            self.widths = widths_for(self.tables[r], r, where=self.files.get(r, f"table {r}"))

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(sorted(self.tables))

    def covers(self, resolution: int) -> bool:
        return int(resolution) in self.tables

    @classmethod
    def from_folder(cls, folder: str | Path, *, width_mult: float | None = None
                    ) -> OFALatencyTable:
        """Read every ``<resolution>_lookup_table.yaml`` in ``folder`` (OFA's layout);
        ``width_mult`` None reads the network's width from the tables.

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
        files: dict[int, str] = {}
        for path in sorted(root.iterdir()):
            match = _TABLE_FILE.match(path.name)
            if match:
                try:
                    document = yaml.safe_load(path.read_text())
                except (yaml.YAMLError, UnicodeDecodeError) as err:
                    raise ValueError(f"{path} is not a YAML lookup table: "
                                     f"{one_line(err)}") from None
                tables[int(match.group(1))] = _read_table(path, document)
                files[int(match.group(1))] = str(path)
        if not tables:
            raise FileNotFoundError(
                f"{root} holds no OFA table; expected files named <resolution>_lookup_table.yaml"
            )
        return cls(tables, source=str(root), width_mult=width_mult, files=files)

    def check_complete(self, *, kernels: Sequence[int] = KERNELS,
                       expands: Sequence[int] = EXPANDS,
                       resolutions: Sequence[int] | None = None) -> None:
        """Refuse tables that lack a layer some subnet would need, before any search.

        Every block's key depends on its slot, kernel and expand ratio only, so the
        subnets with one kernel and one expand ratio everywhere, at full depth, name every
        key a table must hold.

        Raises:
            ValueError: a resolution without a table, or the first missing key and its file.
        """
        for resolution in self.resolutions if resolutions is None else resolutions:
            for kernel in kernels:
                for expand in expands:
                    self.predict_ms(OFAEncoding(ks=(kernel,) * 20, e=(expand,) * 20,
                                                d=(max(DEPTHS),) * 5, r=int(resolution)))

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
        for key in layer_keys(encoding, self.widths):
            value = table.get(key)
            if value is None:
                where = self.files.get(encoding.r, f"the resolution-{encoding.r} OFA table")
                raise ValueError(f"{where} has no entry {key!r} (OFA {self.widths.describe()})")
            total += value
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
        self._fingerprint: str | None = None
        self.name = f"{self.PREFIX}{table.source}"
        self.description = f"OFA lookup tables in {table.source}"

    @classmethod
    def from_spec(cls, spec: str) -> OFALookupTarget:
        """``ofa-lut:FOLDER`` -> the target reading FOLDER's tables."""
        folder = spec.removeprefix(cls.PREFIX)
        if not folder:
            raise ValueError("an OFA lookup-table target is named ofa-lut:FOLDER, got no folder")
        return cls(OFALatencyTable.from_folder(folder))

    @property
    def resolutions(self) -> tuple[int, ...]:
        """The input resolutions the tables price."""
        return self.table.resolutions

    def check_design(self, design: object) -> None:
        """Refuse tables that cannot price every subnet of ``design`` (an
        :class:`~nas.supernets.OFADesignSpace`), naming the first missing key and its file.

        Raises:
            ValueError: see :meth:`OFALatencyTable.check_complete`.
        """
        self.table.check_complete(
            kernels=getattr(design, "kernel_sizes", KERNELS),
            expands=getattr(design, "expand_ratios", EXPANDS),
            resolutions=getattr(design, "resolutions", None),
        )

    def _latency_ms(self, supernet: Supernet, config: Config, task: Task) -> float:
        design = getattr(supernet, "design", None)
        if supernet.space.name.split("@")[0] != PUBLISHED_SPACE or not hasattr(design, "to_ofa"):
            raise ValueError(
                f"{self.name} predicts OFA's published MobileNetV3 space "
                f"({PUBLISHED_SPACE!r}); supernet space {supernet.space.name!r} is not it"
            )
        return self.table.predict_ms(design.to_ofa(config))

    def provenance(self) -> Provenance:
        return Provenance(
            method="predicted",
            source=f"OFA latency lookup tables ({self.table.source}), "
            f"{self.table.widths.describe()}, resolutions {list(self.table.resolutions)}",
            notes=(
                "Sum of per-layer entries measured by whoever built the tables; OFA reports "
                "lookup-table sums within a few percent of measured latency on its devices.",
            ),
        )

    @property
    def fingerprint(self) -> str:
        # Tables never change after loading; hashing them once keeps a cheap evaluation
        # (every cache key reads the fingerprint) cheap.
        if self._fingerprint is None:
            self._fingerprint = self._hash_tables()
        return self._fingerprint

    def _hash_tables(self) -> str:
        digest = hashlib.sha256()
        if self.table.widths.width_mult != 1.0:  # width-1.0 studies keep their fingerprint
            digest.update(f"width={self.table.widths.width_mult!r}".encode())
        for resolution in self.table.resolutions:
            for key, value in sorted(self.table.tables[resolution].items()):
                digest.update(f"{resolution}|{key}|{value!r}".encode())
        return f"ofa-lut:{digest.hexdigest()[:16]}"


HARDWARE_SCHEMES.register(
    "ofa-lut", description="OFA's published latency lookup tables: ofa-lut:FOLDER")(
    OFALookupTarget.from_spec)
