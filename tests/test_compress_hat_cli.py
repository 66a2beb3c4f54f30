"""``nas compress prune`` on a HAT subnet folder as ``nas studies export`` writes it, to a
latency on rpi4's device model: the main job's front, compressed further."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nas import get_hardware, get_supernet, get_task, load_subnet
from nas.compress._seq2seq import DenseSeq2Seq
from nas.compress._seq2seq_cost import hat_latency_cost
from nas.hardware._latency_dataset import spread_configs
from nas.supernets._export import save_subnet
from tests.cli_helpers import nas, one_line_error
from tests.test_compress_cli import summary_of

EVAL_LIMIT = 48


def add_board(tmp_path, hat, task) -> str:
    """A user's device (`nas hw add`), fitted on 8 subnets priced by the xeon model and
    the other two HAT devices as references."""
    xeon = get_hardware("xeon")
    rows = ["config_json,latency_ms"] + [
        '"{}",{}'.format(c.to_json().replace('"', '""'), xeon.latency_ms(hat, c, task))
        for c in spread_configs(hat.space, 8, seed=0)]
    (tmp_path / "board.csv").write_text("\n".join(rows) + "\n")
    assert nas("hw", "add", "board", "--supernet", "hat", "--from", str(tmp_path / "board.csv"),
               "--reference", "rpi4,titanxp").exit_code == 0
    return "board"


@pytest.mark.slow
@pytest.mark.parametrize(("device", "fraction"), [("rpi4", 0.7), ("board", 0.9)])
def test_hat_subnet_prunes_to_a_device_latency_and_loads_back(tmp_path, device,
                                                              fraction) -> None:
    """A HAT device model, and a user's device fitted on HAT subnets (whose fixed costs
    are a larger share: a smaller cut keeps a model that still translates after two
    steps of training)."""
    hat = get_supernet("hat")
    task = get_task(hat.task_name)
    if device == "board":
        add_board(tmp_path, hat, task)
    target = get_hardware(device)
    config = hat.space.sample(np.random.default_rng(1))
    exported = save_subnet(hat.extract(config), tmp_path / "export", family="hat",
                           metadata={"task": hat.task_name, "hardware": "rpi4",
                                     "config": dict(config)})
    document = json.loads((exported / "config.json").read_text())
    document["eval_limit"] = EVAL_LIMIT  # as nas studies export records the study's
    (exported / "config.json").write_text(json.dumps(document))
    source_ms = target.latency_ms(hat, config, task)
    target_ms = round(fraction * source_ms, 2)  # the model's own figure, not a fixed budget
    out = tmp_path / "pruned"
    args = ("compress", "prune", "--model", str(exported), "--hw", device, "--target-latency",
            f"{target_ms}ms", "--steps", "2", "--saliency-batches", "8", "--distil-steps", "2",
            "--out", str(out))
    summary = summary_of(nas(*args, "--json"))

    latency = summary["latency"]
    assert latency["source_predicted_ms"] == pytest.approx(source_ms)
    assert latency["predicted_ms"] <= target_ms
    assert summary["task"] == "g2p-cmudict" and summary["cost"]["name"] == f"latency on {device}"
    for side in ("source", "compressed"):
        assert summary["score"][side]["n"] == EVAL_LIMIT
        assert 0 <= summary["score"][side]["per"] < float("inf")
    assert summary["score"]["source"]["per"] <= 1.5
    assert summary["score"]["source"]["accuracy"] > 0.5  # the shipped supernet's subnet

    model = load_subnet(out)
    assert isinstance(model, DenseSeq2Seq)
    assert hat_latency_cost(target, task)(model) == pytest.approx(
        latency["predicted_ms"])
    assert task.evaluate(model, limit=EVAL_LIMIT) == pytest.approx(
        summary["score"]["compressed"])
    assert all(task.transcribe(model, ["phoneme", "tree"]))  # it translates

    before = (out / "model.safetensors").read_bytes()
    one_line_error(nas(*args), "already holds", "--force")
    assert (out / "model.safetensors").read_bytes() == before
    one_line_error(nas("compress", "prune", "--model", str(exported), "--hw", "local-cpu",
                       "--target-latency", "5ms", "--out", str(tmp_path / "x")),
                   "a model of its layer shapes", "nas hw add --supernet hat")
    one_line_error(nas("compress", "subclone", "--model", str(exported), "--layers", "1",
                       "--hidden", "32", "--out", str(tmp_path / "z")), "encoder-decoder")
    one_line_error(nas("compress", "prune", "--model", "matformer", "--hw", "rpi4",
                       "--target-params", "0.5", "--out", str(tmp_path / "y")),
                   "encoder-decoder (HAT) models only")
