"""OFA's published artifacts as they are: lookup tables of the width-1.0 and width-1.2
networks, the accuracy predictor's one-hot and state dict, and `nas search --space` with
an external accuracy predictor. Small tables and a random-weight predictor of OFA's
exact shape stand in for OFA's files (which the repository does not ship)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cli_helpers import nas, one_line_error

from nas.hardware._ofa_lut import OFAEncoding, OFALatencyTable, layer_keys, widths_for
from nas.predictors.ofa import (
    OFA_STATE_SHAPES,
    OFAAccuracyPredictor,
    OFAOneHotFeatures,
)
from nas.supernets.ofa._space import DIGITS_SPACE, MOBILENETV3_SPACE

RESOLUTIONS = (160, 176, 192, 208, 224)


def _value(key: str) -> float:
    """A deterministic latency (ms) per key: 0.05 .. 1.05."""
    return 0.05 + int(hashlib.sha256(key.encode()).hexdigest()[:4], 16) / 65535


def write_tables(folder: Path, *, width_mult: float, resolutions=RESOLUTIONS,
                 drop: str | None = None) -> Path:
    """Complete OFA-style tables (``<r>_lookup_table.yaml``, ``{key: {mean, std, count}}``)
    for the network at ``width_mult``: every key of the uniform full-depth subnets."""
    from nas.hardware._ofa_lut import OFAWidths

    folder.mkdir(parents=True, exist_ok=True)
    widths = OFAWidths.at(width_mult)
    for r in resolutions:
        keys: set[str] = set()
        for k in (3, 5, 7):
            for e in (3, 4, 6):
                keys.update(layer_keys(OFAEncoding((k,) * 20, (e,) * 20, (4,) * 5, r), widths))
        document = {key: {"count": 100, "mean": _value(key), "std": 0.01}
                    for key in sorted(keys) if key != drop}
        (folder / f"{r}_lookup_table.yaml").write_text(yaml.safe_dump(document))
    return folder


def write_predictor(path: Path, *, seed: int = 0) -> Path:
    """A random-weight MLP 128-400-400-400-1 saved like OFA's (state dict of a Sequential)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(128, 400), torch.nn.ReLU(), torch.nn.Linear(400, 400), torch.nn.ReLU(),
        torch.nn.Linear(400, 400), torch.nn.ReLU(), torch.nn.Linear(400, 1))
    torch.save(model.state_dict(), path)
    return path


# -- lookup tables of both published widths --------------------------------------------


def test_keys_of_the_width_12_network_are_ofas() -> None:
    """Keys as OFA's Note10 tables spell them (copied from those files)."""
    from nas.hardware._ofa_lut import OFAWidths

    w = OFAWidths.at(1.2)
    assert (w.stem, w.first, w.stages, w.final_expand, w.feature_mix) == (
        24, 24, (32, 48, 96, 136, 192), 1152, 1536)
    keys = layer_keys(OFAEncoding((7,) * 20, (6,) * 20, (4,) * 5, 224), w)
    assert keys[0] == "Conv-input:224x224x3-output:112x112x24"
    assert keys[1] == ("expanded_conv-input:112x112x24-output:112x112x24-expand:24-kernel:3"
                       "-stride:1-idskip:1-se:0-hs:0")
    assert keys[2] == ("expanded_conv-input:112x112x24-output:56x56x32-expand:144-kernel:7"
                       "-stride:2-idskip:0-se:0-hs:0")
    assert ("expanded_conv-input:14x14x96-output:14x14x136-expand:576-kernel:7-stride:1"
            "-idskip:0-se:1-hs:1") in keys
    assert keys[-4:] == ["Conv_1-input:7x7x192-output:7x7x1152",
                         "AvgPool2D-input:7x7x1152-output:1x1x1152",
                         "Conv_2-input:1x1x1152-output:1x1x1536",
                         "Logits-input:1x1x1536-output:1000"]
    small = layer_keys(OFAEncoding((3,) * 20, (3,) * 20, (2,) * 5, 160), w)
    assert "expanded_conv-input:10x10x136-output:5x5x192-expand:408-kernel:3-stride:2" \
           "-idskip:0-se:1-hs:1" in small


@pytest.mark.parametrize("width_mult", [1.0, 1.2])
def test_tables_of_either_width_are_read_and_priced(tmp_path, width_mult) -> None:
    write_tables(tmp_path, width_mult=width_mult)
    lut = OFALatencyTable.from_folder(tmp_path)
    assert lut.widths.width_mult == width_mult
    assert lut.resolutions == RESOLUTIONS
    lut.check_complete()
    encoding = OFAEncoding((5,) * 20, (4,) * 20, (3,) * 5, 192)
    expected = sum(_value(k) for k in layer_keys(encoding, lut.widths))
    assert lut.predict_ms(encoding) == pytest.approx(expected)


def test_tables_of_another_width_are_refused_in_one_line(tmp_path) -> None:
    (tmp_path / "160_lookup_table.yaml").write_text(yaml.safe_dump(
        {"Conv-input:160x160x3-output:80x80x40": {"mean": 1.0}}))
    with pytest.raises(ValueError, match="matches none of OFA's published widths.*80x80x40"):
        OFALatencyTable.from_folder(tmp_path)
    table = {"Conv-input:160x160x3-output:80x80x24": 1.0,
             "Conv_2-input:1x1x1152-output:1x1x1536": 1.0}
    assert widths_for(table, 160).width_mult == 1.2


def test_a_missing_key_names_the_key_and_the_file(tmp_path) -> None:
    drop = ("expanded_conv-input:56x56x32-output:28x28x48-expand:192-kernel:5-stride:2"
            "-idskip:0-se:1-hs:0")
    write_tables(tmp_path, width_mult=1.2, resolutions=(224,), drop=drop)
    lut = OFALatencyTable.from_folder(tmp_path)
    with pytest.raises(ValueError, match=f"224_lookup_table.yaml has no entry '{drop}'"):
        lut.check_complete()


# -- OFA's one-hot and predictor --------------------------------------------------------


def test_one_hot_layout() -> None:
    """60 kernel entries, 60 expand entries (3 per slot, skipped slots zero), 8 for r."""
    encoding = {"ks": [3, 5, 7, 3] + [7] * 16, "e": [4, 6, 3, 6] + [3] * 16,
                "d": [2, 4, 4, 4, 3], "r": [176]}
    row = OFAOneHotFeatures.from_ofa(encoding)
    assert row.shape == (128,) and row.sum() == 2 * 17 + 1
    assert list(row[0:6]) == [1, 0, 0, 0, 1, 0]  # slot 0 kernel 3, slot 1 kernel 5
    assert row[6:12].sum() == 0  # slots 2, 3 of stage 0 skipped (depth 2)
    assert list(row[60:66]) == [0, 1, 0, 0, 0, 1]  # slot 0 expand 4, slot 1 expand 6
    assert list(row[120:]) == [0, 0, 0, 0, 1, 0, 0, 0]  # (176 - 112) // 16 = 4
    design = dataclasses.replace(MOBILENETV3_SPACE, resolutions=RESOLUTIONS)
    encoder = OFAOneHotFeatures(design.build())
    config = design.from_ofa(encoding)
    np.testing.assert_array_equal(encoder.encode(config), row)


def test_an_encoder_that_does_not_match_the_space_is_refused() -> None:
    with pytest.raises(ValueError, match="does not match space 'ofa-digits'.*--space ofa-mbv3"):
        OFAOneHotFeatures(DIGITS_SPACE.build())
    with pytest.raises(ValueError, match="gene 'resolution' has choice.*132.*encodes \\[112"):
        OFAOneHotFeatures(MOBILENETV3_SPACE.build())  # 128..224 step 4: 132 has no slot


def test_predictor_matches_torch_and_reads_only_state_dicts(tmp_path) -> None:
    path = write_predictor(tmp_path / "acc_predictor.pth")
    model = OFAAccuracyPredictor.from_file(path)
    assert model.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    X = np.random.default_rng(0).integers(0, 2, size=(5, 128)).astype(float)
    torch_model = torch.nn.Sequential(
        torch.nn.Linear(128, 400), torch.nn.ReLU(), torch.nn.Linear(400, 400), torch.nn.ReLU(),
        torch.nn.Linear(400, 400), torch.nn.ReLU(), torch.nn.Linear(400, 1))
    torch_model.load_state_dict(torch.load(path, weights_only=True))
    with torch.no_grad():
        expected = torch_model(torch.tensor(X, dtype=torch.float32))[:, 0].numpy()
    np.testing.assert_allclose(model.predict(X), expected, atol=1e-5)

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a torch state dict readable with weights_only"):
        OFAAccuracyPredictor.from_file(bad)
    torch.save({"0.weight": torch.zeros(400, 127)}, bad)
    with pytest.raises(ValueError, match="lacks \\['0.bias'"):
        OFAAccuracyPredictor.from_file(bad)
    state = {k: torch.zeros(shape) for k, shape in OFA_STATE_SHAPES.items()}
    state["2.weight"] = torch.zeros(400, 300)
    torch.save(state, bad)
    with pytest.raises(ValueError, match="2.weight has shape \\(400, 300\\), not \\(400, 400\\)"):
        OFAAccuracyPredictor.from_file(bad)
    torch.save([1, 2, 3], bad)
    with pytest.raises(ValueError, match="is not a state dict"):
        OFAAccuracyPredictor.from_file(bad)
    with pytest.raises(FileNotFoundError, match="no OFA accuracy predictor file"):
        OFAAccuracyPredictor.from_file(tmp_path / "none.pth")


# -- nas search --space ofa-mbv3 --accuracy-predictor ... --------------------------------


@pytest.fixture
def ofa_files(tmp_path):
    tables = write_tables(tmp_path / "note10", width_mult=1.2)
    predictor = write_predictor(tmp_path / "acc_predictor.pth")
    return tables, predictor, f"sqlite:///{tmp_path / 'studies.db'}"


def _search(tables, predictor, storage, *extra):
    return nas("search", "--space", "ofa-mbv3", "--accuracy-predictor", f"ofa:{predictor}",
               "--hw", f"ofa-lut:{tables}", "--budget", "15ms", "--evals", "12",
               "--algorithm", "evo", "--storage", storage, "--study", "s", *extra)


@pytest.mark.slow
def test_search_with_ofa_files_end_to_end(ofa_files, tmp_path) -> None:
    tables, predictor, storage = ofa_files
    result = _search(tables, predictor, storage, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout[result.stdout.index("{"):])
    assert document["evaluations"] == 12
    assert document["space"] == "ofa-mbv3@r160-176-192-208-224"
    assert document["accuracy_predictor"] == f"ofa:{predictor}"
    assert document["accuracy_predictor_sha256"] == hashlib.sha256(
        predictor.read_bytes()).hexdigest()
    assert "accuracy was predicted" in document["accuracy_note"]
    model = OFAAccuracyPredictor.from_file(predictor)
    design = MOBILENETV3_SPACE
    for point in document["pareto"]:
        assert point["latency_ms"] <= 15
        assert point["config"]["resolution"] in RESOLUTIONS
        row = OFAOneHotFeatures.from_ofa(design.to_ofa(point["config"]))
        assert point["accuracy"] == pytest.approx(float(model.predict(row)[0]))

    again = _search(tables, predictor, storage)  # a rerun resumes: nothing new
    assert again.exit_code == 0, again.output
    assert "searching resolutions [160, 176, 192, 208, 224] of ofa-mbv3's 25" in again.output
    assert "12 evaluations (0 new)" in again.output
    assert "best predicted accuracy" in again.output

    shown = nas("studies", "show", "s", "--storage", storage)
    assert shown.exit_code == 0, shown.output
    assert "accuracy was predicted by ofa:" in shown.output.replace("\n", "")

    report = nas("report", "--study", "s", "--out", str(tmp_path / "r.html"),
                 "--storage", storage)
    assert report.exit_code == 0, report.output
    html = (tmp_path / "r.html").read_text()
    assert "accuracy was predicted by ofa:" in html and "searched without weights" in html
    table = nas("studies", "export", "s", "--format", "csv", "--out",
                str(tmp_path / "s.csv"), "--storage", storage)
    assert table.exit_code == 0, table.output
    assert "accuracy_method" in (tmp_path / "s.csv").read_text().splitlines()[0]
    one_line_error(nas("export", "--study", "s", "--trial", "0", "--out", str(tmp_path / "x"),
                       "--storage", storage), "without weights", "no subnet to export")

    other = write_predictor(tmp_path / "other.pth", seed=1)
    one_line_error(_search(tables, other, storage), "study 's' scored accuracy with",
                   "sha256", "same --accuracy-predictor")


def test_a_fitted_predictor_folder_is_an_objective(tmp_path) -> None:
    """`nas predictor fit --space table` on a CSV whose feature columns are the space's
    genes, then `nas search --accuracy-predictor DIR`."""
    tables = write_tables(tmp_path / "lut", width_mult=1.0, resolutions=(160, 224))
    space = MOBILENETV3_SPACE.build()
    rng = np.random.default_rng(0)
    names = list(space.names)
    lines = [",".join([*names, "accuracy"])]
    for _ in range(30):
        config = space.sample(rng)
        values = [float(config.get(n, 0)) for n in names]
        lines.append(",".join([*map(str, values), str(0.5 + values[0] / 1000)]))
    (tmp_path / "acc.csv").write_text("\n".join(lines) + "\n")
    fitted = nas("predictor", "fit", "--space", "table", "--data", str(tmp_path / "acc.csv"),
                 "--target", "accuracy", "--model", "ridge", "--out", str(tmp_path / "pred"))
    assert fitted.exit_code == 0, fitted.output
    result = nas("search", "--space", "ofa-mbv3", "--accuracy-predictor", str(tmp_path / "pred"),
                 "--hw", f"ofa-lut:{tables}", "--budget", "20ms", "--evals", "6",
                 "--storage", f"sqlite:///{tmp_path / 'db.db'}")
    assert result.exit_code == 0, result.output
    # a --space search's default algorithm
    assert "evo-budget, seed 0" in result.output.replace("\n", "")
    assert "searching resolutions [160, 224]" in result.output
    assert "accuracy was predicted by" in result.output.replace("\n", "")

    # a table predictor whose columns are not genes of the space: one line
    (tmp_path / "other.csv").write_text("x,accuracy\n1,0.5\n2,0.6\n3,0.7\n")
    assert nas("predictor", "fit", "--space", "table", "--data", str(tmp_path / "other.csv"),
               "--target", "accuracy", "--model", "ridge",
               "--out", str(tmp_path / "bad")).exit_code == 0
    one_line_error(
        nas("search", "--space", "ofa-mbv3", "--accuracy-predictor", str(tmp_path / "bad"),
            "--hw", f"ofa-lut:{tables}", "--budget", "20ms", "--evals", "2",
            "--storage", f"sqlite:///{tmp_path / 'db2.db'}"),
        "does not match space", "['x']")


def test_bad_inputs_are_one_line(ofa_files, tmp_path) -> None:
    tables, predictor, storage = ofa_files
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 64)
    one_line_error(_search(tables, garbage, storage), "garbage.pth",
                   "not a torch state dict")
    wrong = tmp_path / "wrong.pth"
    torch.save({"0.weight": torch.zeros(400, 100)}, wrong)
    one_line_error(_search(tables, wrong, storage), "not OFA's accuracy predictor",
                   "128-400-400-400-1")
    drop = ("expanded_conv-input:88x88x24-output:44x44x32-expand:72-kernel:3-stride:2"
            "-idskip:0-se:0-hs:0")
    holed = write_tables(tmp_path / "holed", width_mult=1.2, drop=drop)
    one_line_error(_search(holed, predictor, storage), "176_lookup_table.yaml", drop)
    one_line_error(
        nas("search", "--supernet", "ofa", "--accuracy-predictor", f"ofa:{predictor}",
            "--hw", f"ofa-lut:{tables}", "--budget", "20ms", "--storage", storage),
        "supernet 'ofa' has its own task", "--space ofa-mbv3")
    one_line_error(
        nas("search", "--space", "ofa-mbv3", "--hw", f"ofa-lut:{tables}", "--budget", "20ms",
            "--storage", storage), "no weights", "--accuracy-predictor ofa:PATH")
    one_line_error(
        nas("search", "--hw", f"ofa-lut:{tables}", "--budget", "20ms", "--storage", storage),
        "--supernet NAME", "--space NAME")
    one_line_error(
        nas("search", "--space", "nope", "--accuracy-predictor", f"ofa:{predictor}",
            "--hw", f"ofa-lut:{tables}", "--budget", "20ms"), "unknown space 'nope'", "ofa-mbv3")
    one_line_error(_search(tables, tmp_path / "none.pth", storage), "no OFA accuracy predictor")
