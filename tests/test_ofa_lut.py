"""OFA's published latency lookup tables: keys in OFA's format, sums, and bad input."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import yaml

import nas
from nas.hardware._ofa_lut import OFAEncoding, OFALatencyTable, layer_keys, make_divisible

LARGEST = {"ks": [7] * 20, "e": [6] * 20, "d": [4] * 5, "r": [224]}
SMALLEST = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": [160]}


def test_make_divisible_matches_mobilenet_rounding() -> None:
    assert [make_divisible(v) for v in (48, 96, 240, 20, 11, 3)] == [48, 96, 240, 24, 16, 8]


def test_keys_follow_ofa_layout() -> None:
    keys = layer_keys(OFAEncoding.from_dict(LARGEST))
    assert len(keys) == 1 + 1 + 20 + 4
    assert keys[0] == "Conv-input:224x224x3-output:112x112x16"
    assert keys[1] == (
        "expanded_conv-input:112x112x16-output:112x112x16-expand:16-kernel:3-stride:1"
        "-idskip:1-se:0-hs:0"
    )
    # stage 1, block 0: stride 2, 16 -> 24, middle make_divisible(16 * 6) = 96, no skip
    assert keys[2] == (
        "expanded_conv-input:112x112x16-output:56x56x24-expand:96-kernel:7-stride:2"
        "-idskip:0-se:0-hs:0"
    )
    # stage 4 (112 wide, stride 1): its first block changes width, so no skip; SE + h-swish
    stage4_first = keys[2 + 12]
    assert stage4_first.startswith("expanded_conv-input:14x14x80-output:14x14x112-expand:480")
    assert stage4_first.endswith("-stride:1-idskip:0-se:1-hs:1")
    assert keys[2 + 13].endswith("-stride:1-idskip:1-se:1-hs:1")
    assert keys[-4:] == [
        "Conv_1-input:7x7x160-output:7x7x960",
        "AvgPool2D-input:7x7x960-output:1x1x960",
        "Conv_2-input:1x1x960-output:1x1x1280",
        "Logits-input:1x1x1280-output:1000",
    ]
    small = layer_keys(OFAEncoding.from_dict(SMALLEST))
    assert len(small) == 1 + 1 + 10 + 4 and small[0] == "Conv-input:160x160x3-output:80x80x16"
    assert "-expand:48-kernel:3-stride:2-" in small[2]  # 16 * 3


def test_only_the_first_d_blocks_of_a_stage_count() -> None:
    encoding = dict(LARGEST, d=[2, 4, 4, 4, 4], ks=[3, 3, 7, 7] + [5] * 16)
    keys = layer_keys(OFAEncoding.from_dict(encoding))
    assert len(keys) == 24
    assert all("-kernel:7-" not in key for key in keys[2:4])  # blocks 2, 3 of stage 1 skipped


def _write_tables(folder, encodings) -> dict[int, dict[str, float]]:
    tables: dict[int, dict[str, float]] = {}
    for encoding in encodings:
        parsed = OFAEncoding.from_dict(encoding)
        for key in layer_keys(parsed):
            tables.setdefault(parsed.r, {})[key] = 0.1 + (len(key) % 17) / 10
    for resolution, entries in tables.items():
        document = {key: {"mean": value, "std": 0.01, "count": 10}
                    for key, value in entries.items()}
        (folder / f"{resolution}_lookup_table.yaml").write_text(yaml.safe_dump(document))
    return tables


def test_prediction_is_the_sum_of_the_layers(tmp_path) -> None:
    tables = _write_tables(tmp_path, [LARGEST, SMALLEST])
    (tmp_path / "README.txt").write_text("not a table")
    lut = OFALatencyTable.from_folder(tmp_path)
    assert lut.resolutions == (160, 224)
    for encoding in (LARGEST, SMALLEST):
        parsed = OFAEncoding.from_dict(encoding)
        expected = sum(tables[parsed.r][key] for key in layer_keys(parsed))
        assert lut.predict_ms(encoding) == pytest.approx(expected)
    assert lut.predict_ms(dict(LARGEST, r=224)) == lut.predict_ms(LARGEST)  # r as an int


def test_missing_entries_and_resolutions_are_named(tmp_path) -> None:
    _write_tables(tmp_path, [LARGEST])
    lut = OFALatencyTable.from_folder(tmp_path)
    with pytest.raises(ValueError, match=r"no OFA latency table for resolution 160.*\[224\]"):
        lut.predict_ms(SMALLEST)
    with pytest.raises(ValueError, match="has no entry 'expanded_conv-input:112x112x16-output:56"):
        lut.predict_ms(dict(LARGEST, ks=[3] * 20))


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5}, "missing \\['r'\\]"),
        (dict(LARGEST, ks=[7] * 19), "'ks' must list 20 values"),
        (dict(LARGEST, e=[5] * 20), "'e' must list 20 values from \\[3, 4, 6\\]"),
        (dict(LARGEST, d=[1] * 5), "'d' must list 5 values"),
    ],
)
def test_bad_encodings_are_named(encoding, message) -> None:
    with pytest.raises(ValueError, match=message):
        OFAEncoding.from_dict(encoding)


def test_bad_folders_and_files_are_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        OFALatencyTable.from_folder(tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="<resolution>_lookup_table.yaml"):
        OFALatencyTable.from_folder(tmp_path)
    (tmp_path / "224_lookup_table.yaml").write_text(yaml.safe_dump({"Conv-x": {"std": 1}}))
    with pytest.raises(ValueError, match="224_lookup_table.yaml: entry 'Conv-x' has no numeric"):
        OFALatencyTable.from_folder(tmp_path)
    (tmp_path / "224_lookup_table.yaml").write_text("- a list\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        OFALatencyTable.from_folder(tmp_path)


def test_the_target_prices_subnets_of_the_published_space(tmp_path) -> None:
    from nas.supernets.ofa._space import DIGITS_SPACE, MOBILENETV3_SPACE

    space = MOBILENETV3_SPACE.build()
    published = SimpleNamespace(space=space, design=MOBILENETV3_SPACE)
    rng = np.random.default_rng(0)
    configs = [space.sample(rng) for _ in range(5)]
    configs += [space.config(dict(c.to_dict(), resolution=224)) for c in configs]
    tables = _write_tables(tmp_path, [MOBILENETV3_SPACE.to_ofa(c) for c in configs])
    target = nas.get_hardware(f"ofa-lut:{tmp_path}")
    for config in configs:
        encoding = OFAEncoding.from_dict(MOBILENETV3_SPACE.to_ofa(config))
        expected = sum(tables[encoding.r][key] for key in layer_keys(encoding))
        assert target.latency_ms(published, config, task=None) == pytest.approx(expected)
    assert target.provenance().method == "predicted"
    assert target.fingerprint == nas.get_hardware(f"ofa-lut:{tmp_path}").fingerprint

    digits = SimpleNamespace(space=DIGITS_SPACE.build(), design=DIGITS_SPACE)
    with pytest.raises(ValueError, match="published MobileNetV3 space .*'ofa-digits' is not it"):
        target.latency_ms(digits, digits.space.largest(), task=None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        nas.get_hardware(f"ofa-lut:{tmp_path / 'none'}")
