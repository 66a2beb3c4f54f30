"""The shape memory model: exact weights, its stated error, and who uses it."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import nas
from nas._hardware import MEMORY_MODELS, model_memory
from nas._supernet import SubnetShape
from nas._task import Workload
from nas.hardware._memory import weights_bytes
from nas.hardware._memory_model import _errors
from tests.cli_helpers import nas as run


@pytest.fixture(scope="module", params=["ofa", "sortednet", "hat", "matformer", "nb201"])
def supernet_and_task(request):
    supernet = nas.get_supernet(request.param)
    return supernet, nas.get_task(supernet.task_name)


def _configs(supernet, count: int = 3):
    rng = np.random.default_rng(1)
    space = supernet.space
    return [space.smallest(), space.largest(), *(space.sample(rng) for _ in range(count))]


def test_modelled_weights_are_the_dense_models_own(supernet_and_task):
    supernet, task = supernet_and_task
    for config in _configs(supernet):
        modelled = model_memory(supernet.describe(config), task.workload()).weights_bytes
        measured = weights_bytes(supernet.extract(config))
        # HAT's are within 0.1%: its position tables' rows are not in the shape.
        assert modelled == pytest.approx(measured, rel=1e-3 if supernet.family == "hat" else 0)


def test_the_model_stays_within_the_error_hw_show_states(supernet_and_task):
    supernet, task = supernet_and_task
    stated = _errors()[supernet.family]
    assert stated["n"] >= 10
    local = nas.get_hardware("local-cpu")
    for config in _configs(supernet, count=2):
        measured = local.memory(supernet, config, task)
        modelled = model_memory(supernet.describe(config), task.workload())
        assert measured.method == "measured" and modelled.method == "modelled"
        assert modelled.kv_cache_bytes == measured.kv_cache_bytes
        error = abs(modelled.peak_bytes - measured.peak_bytes) / measured.peak_bytes
        assert error <= stated["max_ape"] + 1e-6, (config.key, error, stated)


def test_a_predicted_target_prices_memory_by_the_model():
    supernet = nas.get_supernet("hat")
    task = nas.get_task(supernet.task_name)
    config = supernet.space.largest()
    for name in ("rpi4", "xeon", "titanxp"):
        target = nas.get_hardware(name)
        assert target.memory(supernet, config, task) == model_memory(
            supernet.describe(config), task.workload())
        assert target.memory_provenance().method == "predicted"
    # the KV cache is part of the activations, and grows with the decoder's width
    estimate = model_memory(supernet.describe(config), task.workload())
    assert 0 < estimate.kv_cache_bytes < estimate.activation_bytes


def test_a_family_without_a_model_is_named_in_one_line():
    shape = SubnetShape(family="nothing-here", layers=())
    with pytest.raises(ValueError, match="no memory model for supernet family 'nothing-here'"
                                         ".*hat.*measured on local-cpu"):
        model_memory(shape, Workload(src_len=1, tgt_len=1))
    assert {"hat", "ofa", "sortednet", "matformer", "nb201"} <= set(MEMORY_MODELS.names())


def test_hw_show_states_the_memory_models_error():
    result = run("hw", "show", "rpi4")
    assert result.exit_code == 0, result.output
    hat = _errors()["hat"]
    assert "memory: predicted, modelled from the subnet's shapes" in result.output
    assert f"memory model hat: mean error {hat['mape']:.1%}" in result.output
    measured = run("hw", "show", "local-cpu")
    assert "memory: measured, measured here" in measured.output


def test_memory_changes_the_cache_key_only_when_searched():
    supernet = nas.get_supernet("sortednet")
    task = nas.get_task(supernet.task_name)
    config = supernet.space.smallest()
    keys = {}
    for name in ("rpi4", "local-cpu"):
        target = nas.get_hardware(name)
        plain = nas.Evaluator(supernet, task, target)
        memory = nas.Evaluator(supernet, task, target, memory=True)
        assert plain.fingerprint.endswith(f"|{target.fingerprint}")  # as before memory
        assert memory.cache_key(config) != plain.cache_key(config)
        keys[name] = memory.fingerprint.rsplit("|memory=", 1)[1]
    assert keys == {"rpi4": "memory-model:sortednet:1", "local-cpu":
                    f"measured:torch-{torch.__version__}"}


def test_a_user_registered_target_prices_memory_by_the_model(tmp_path):
    """`nas hw add` targets inherit the contract's memory: modelled, error in hw show."""
    from nas.hardware._latency_dataset import dataset_columns, spread_configs

    supernet = nas.get_supernet("hat")
    task = nas.get_task(supernet.task_name)
    rpi4 = nas.get_hardware("rpi4")
    path = tmp_path / "board.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, dataset_columns(supernet.space), restval="0")
        writer.writeheader()
        for config in spread_configs(supernet.space, 12, seed=0):  # a board 1.5x the Pi
            writer.writerow({"config_json": config.to_json(),
                             "latency_ms": 1.5 * rpi4.latency_ms(supernet, config, task)})
    added = run("hw", "add", "board", "--supernet", "hat", "--from", str(path),
                "--reference", "rpi4,xeon")
    assert added.exit_code == 0, added.output
    board = nas.get_hardware("board")
    config = supernet.space.largest()
    assert board.memory(supernet, config, task) == model_memory(
        supernet.describe(config), task.workload())
    shown = run("hw", "show", "board")
    assert "memory: predicted" in shown.output and "memory model hat" in shown.output
