"""HAWQ on a supernet's subnets: ``nas quant sensitivity`` and ``nas quant allocate``."""

from __future__ import annotations

import json
import math

import pytest

import nas
from nas.quant import calibration_batches, module_bits, size_bytes
from nas.quant._hawq import hawq_policy, subnet_sensitivity
from tests.cli_helpers import nas as run
from tests.cli_helpers import one_line_error


@pytest.fixture(scope="module")
def sortednet_omega():
    supernet = nas.get_supernet("sortednet")
    task = nas.get_task(supernet.task_name)
    arch = supernet.space.largest()
    model, layers, omega = subnet_sensitivity(supernet, task, arch, (32, 8, 4),
                                              batches=calibration_batches(task, samples=64))
    return supernet, arch, model, layers, omega


def test_omega_grows_as_bits_fall(sortednet_omega):
    *_, layers, omega = sortednet_omega
    assert set(omega) == set(layers) == {"hidden.0", "hidden.1", "hidden.2"}
    for per_unit in omega.values():
        assert per_unit[32] == 0.0
        assert per_unit[4] > per_unit[8] > 0.0


def test_the_allocation_costs_what_the_weights_file_holds(sortednet_omega):
    supernet, arch, model, layers, omega = sortednet_omega
    fp32_mb = size_bytes(model, {}) / 1e6
    for budget in (0.5 * fp32_mb, 0.3 * fp32_mb):
        policy, size = hawq_policy(omega, model, layers, size_budget_mb=budget)
        assert size <= budget
        bits = module_bits(model, supernet.quant_modules(arch), policy)
        assert math.isclose(size * 1e6, size_bytes(model, bits, calibrated=len(bits)))
    with pytest.raises(ValueError, match="below the smallest this subnet reaches"):
        hawq_policy(omega, model, layers, size_budget_mb=0.01 * fp32_mb)


def test_sensitivity_and_allocate_commands():
    shown = run("quant", "sensitivity", "--supernet", "sortednet", "--bits", "8,4",
                "--samples", "4", "--json")
    assert shown.exit_code == 0, shown.output
    units = json.loads(shown.stdout)["units"]
    scores = [u["sensitivity"]["4"] for u in units]
    assert scores == sorted(scores, reverse=True) and len(units) == 3
    allocated = run("quant", "allocate", "--supernet", "sortednet", "--bits", "32,8,4",
                    "--samples", "4", "--size-budget", "0.3MB", "--json")
    assert allocated.exit_code == 0, allocated.output
    document = json.loads(allocated.stdout)
    assert document["size_mb"] <= 0.3 and set(document["bits"].values()) <= {32, 8, 4}


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["sensitivity", "--supernet", "sortednet", "--bits", "9"], ["--bits must be widths"]),
        (["sensitivity", "--supernet", "nb201"], ["no weights to quantize"]),
        (["allocate", "--supernet", "sortednet", "--size-budget", "1kB", "--samples", "2"],
         ["below the smallest this subnet reaches"]),
    ],
)
def test_bad_input_is_one_line(args, fragments):
    one_line_error(run("quant", *args), *fragments)
