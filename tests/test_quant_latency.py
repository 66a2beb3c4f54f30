"""The quantized latency model (hardware/_quant_latency.py, quant/_work.py) and the
targets that price quantized subnets with it: local-cpu-model and the HAT devices."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from nas._hardware import get_hardware
from nas._supernet import get_supernet
from nas._task import get_task
from nas.cli import app
from nas.hardware._latency_dataset import ProfileSettings
from nas.hardware._local_model import (
    LocalModelTarget,
    calibrate_local,
    load_calibration,
    read_calibration,
    save_calibration,
    shipped_quantized_path,
)
from nas.hardware._quant_latency import (
    MODELLED_BITS,
    QuantizedCosts,
    check_bits,
    fit_quantized_costs,
    random_policies,
)
from nas.quant import calibration_batches, joint_space
from nas.quant._subnet import quantized_subnet
from nas.quant._work import QuantizedWork, quantized_work

TINY = ProfileSettings(threads=1, warmup=0, min_repeats=6, max_repeats=6, rel_ci=0.5)


@pytest.fixture(scope="module")
def hat():
    net = get_supernet("hat")
    return net, get_task(net.task_name)


@pytest.fixture(scope="module")
def quantized_calibration_path(hat, tmp_path_factory: pytest.TempPathFactory) -> Path:
    net, task = hat
    calibration = calibrate_local(net, task, n=8, seed=0, settings=TINY, quantized=True)
    return save_calibration(calibration, tmp_path_factory.mktemp("cal") / "cal.json")


def _quantized_model(net, task, config, bits: int):
    """``config`` of ``net`` with every unit at ``bits``, fake-quantized."""
    units = net.quant_units()
    space = joint_space(net.space, units, sorted({bits, 32}))
    joint = space.config({**config, **{f"bits.{u.name}": bits for u in units}})
    return quantized_subnet(net, task, joint, mode="mixed",
                            batches=calibration_batches(task)[:1]).fake_quantized()


# -- what quantized layers do --------------------------------------------------------------


class _Probe:
    """A task whose probe runs one (2, 5, 4) batch through the model."""

    def latency_probe(self, model: nn.Module):
        x = torch.ones(2, 5, 4)
        return lambda: model(x)


def test_work_counts_calls_macs_and_elements_of_quantized_layers_only() -> None:
    from nas.quant import quantize_layers

    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 6))
    quantize_layers(model, {"0": 8}, None)
    work = quantized_work(model, _Probe())
    assert work == QuantizedWork(calls=1, mmacs=2 * 5 * 3 * 4 / 1e6, melems=(40 + 30) / 1e6)
    assert not any(isinstance(m, type(model[0])) and m._forward_hooks for m in model.modules())


def test_work_counts_every_decoder_step(hat) -> None:
    """Decoding calls each decoder layer once per step: the hook sees every call."""
    net, task = hat
    config = net.space.smallest()
    work8 = quantized_work(_quantized_model(net, task, config, 8), task)
    steps = task.example_inputs()[1].shape[1]
    assert work8.calls > steps  # at least one quantized decoder layer per step
    assert work8.mmacs > 0 and work8.melems > 0


def test_fit_recovers_the_costs_that_made_the_data() -> None:
    rng = np.random.default_rng(0)
    works = [QuantizedWork(*rng.uniform(1, 100, 3)) for _ in range(20)]
    truth = QuantizedCosts(call_ms=0.03, ms_per_melem=20.0, saved_ms_per_mmac=0.4)
    fitted = fit_quantized_costs(works, np.array([truth.delta_ms(w) for w in works]))
    for name, value in truth.to_dict().items():
        assert getattr(fitted, name) == pytest.approx(value, rel=1e-6)


def test_random_policies_span_fp32_to_int8(hat) -> None:
    net, _ = hat
    configs = [net.space.sample(np.random.default_rng(i)) for i in range(40)]
    shares = [np.mean([v == 8 for k, v in c.items() if k.startswith("bits.")])
              for c in random_policies(net, configs, seed=0)]
    assert min(shares) < 0.2 and max(shares) > 0.8
    assert random_policies(net, configs, seed=0) == random_policies(net, configs, seed=0)


def test_a_width_the_target_does_not_price_is_named(hat) -> None:
    net, task = hat
    model = _quantized_model(net, task, net.space.smallest(), 3)
    with pytest.raises(ValueError, match=r"^rpi4 has latencies for 8, 6, 4, 2-bit layers, "
                                         r"not 3-bit ones$"):
        check_bits(model, "rpi4", MODELLED_BITS)


# -- local-cpu-model -----------------------------------------------------------------------


def test_quantized_calibration_round_trips_and_prices_the_delta(
    hat, quantized_calibration_path: Path
) -> None:
    net, task = hat
    calibration = load_calibration(quantized_calibration_path)
    quantized = calibration.quantized
    assert quantized is not None and quantized.n == 8 and quantized.heldout["n"] == 2
    assert all(v >= 0 for v in quantized.costs.to_dict().values())
    target = LocalModelTarget(path=quantized_calibration_path)
    config = net.space.largest()
    for bits in MODELLED_BITS:
        model = _quantized_model(net, task, config, bits)
        expected = (target.latency_ms(net, config, task)
                    + quantized.costs.delta_ms(quantized_work(model, task)))
        assert target.quantized_latency_ms(net, config, model, task) == pytest.approx(expected)
    # narrower widths are priced as 8-bit ones: the same work
    assert (quantized_work(_quantized_model(net, task, config, 2), task)
            == quantized_work(_quantized_model(net, task, config, 8), task))


def test_a_calibration_without_int8_refuses_quantized_latency(hat, tmp_path: Path) -> None:
    net, task = hat
    plain = calibrate_local(net, task, n=8, seed=0, settings=TINY)
    assert plain.quantized is None
    path = save_calibration(plain, tmp_path / "plain.json")
    assert json.loads(path.read_text())["quantized"] is None
    target = LocalModelTarget(path=path)
    model = _quantized_model(net, task, net.space.smallest(), 8)
    with pytest.raises(ValueError, match=r"has no quantized latency model; run "
                                         r"`nas hw calibrate local-cpu-model --quantized"):
        target.quantized_latency_ms(net, net.space.smallest(), model, task)


def test_a_calibration_file_from_before_the_quantized_model_still_reads(
    quantized_calibration_path: Path, tmp_path: Path
) -> None:
    data = json.loads(quantized_calibration_path.read_text())
    del data["quantized"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    assert load_calibration(old).quantized is None


# -- the modelled HAT devices --------------------------------------------------------------


def test_shipped_int8_calibration_meets_the_stated_bar() -> None:
    """The shipped file is what the HAT devices price int8 with; its held-out error on
    30 subnets is the figure the issue asks for (Kendall >= 0.8, MAPE <= 10%)."""
    calibration = read_calibration(shipped_quantized_path())
    heldout = calibration.quantized.heldout
    assert heldout["n"] == 30
    assert heldout["kendall_tau"] >= 0.8 and heldout["mape"] <= 0.10


@pytest.mark.parametrize("device", ["rpi4", "xeon", "titanxp"])
def test_hat_devices_apply_the_cpu_int8_ratio(hat, device: str) -> None:
    net, task = hat
    target = get_hardware(device)
    assert target.quant_bits == MODELLED_BITS
    cpu = target.int8_model()
    config = net.space.sample(np.random.default_rng(3))
    model = _quantized_model(net, task, config, 4)
    ratio = (cpu.quantized_latency_ms(net, config, model, task)
             / cpu.latency_ms(net, config, task))
    assert target.quantized_latency_ms(net, config, model, task) == pytest.approx(
        target.latency_ms(net, config, task) * ratio)
    assert target.quantized_fingerprint.startswith(f"{target.fingerprint}:int8-")
    note = target.provenance().notes[-2:]
    assert any("modelled from int8 speedups measured on" in n for n in note)


@pytest.mark.slow
def test_search_quantizes_on_a_modelled_target(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'q.db'}"
    result = CliRunner().invoke(app, [
        "search", "--supernet", "hat", "--hw", "xeon", "--budget", "100ms",
        "--quantize", "mixed", "--evals", "4", "--storage", db, "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output[result.output.index("{"):])
    assert document["pareto"]
    for point in document["pareto"]:
        assert set(point["bits"].values()) <= set(MODELLED_BITS)
        assert point["size_mb"] > 0 and math.isfinite(point["latency_ms"])
