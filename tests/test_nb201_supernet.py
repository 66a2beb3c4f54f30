"""The NAS-Bench-201 network (supernet and dense), its tabular task, the pixel3 and
gold6226 targets, and the search job running on them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import nas
import nas.hardware._nb201_targets  # noqa: F401  (registers pixel3, gold6226)
import nas.supernets.nb201.supernet  # noqa: F401  (registers nb201, nb201-cifar10)
from nas.cli import app
from nas.supernets._export import load_subnet, save_subnet
from nas.supernets.nb201 import (
    DEFAULT_CSV,
    GENE_NAMES,
    NB201_SPACE,
    arch_str_to_config,
    config_to_arch_str,
)
from nas.supernets.nb201._network import NB201Network, NB201SuperNetwork

BEST = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
        "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
MIXED = ("|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|"
         "+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|")
DEGENERATE = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|avg_pool_3x3~2|"  # 3 unreachable
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
CELLS = (BEST, MIXED, DEGENERATE, ALL_NONE)


def uniform(op: str) -> dict[str, str]:
    return dict.fromkeys(GENE_NAMES, op)


def table_rows() -> dict[str, dict[str, str]]:
    """The shipped CSV read with the csv module alone (independent of NB201Table)."""
    with DEFAULT_CSV.open(newline="") as f:
        return {row["arch_str"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def supernet() -> NB201SuperNetwork:
    """The registered supernet with every parameter and BN statistic randomised, so a
    wrongly copied tensor (or a BN left at its defaults) changes the outputs."""
    net = nas.get_supernet("nb201")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.rand(tensor.shape, generator=generator)
                tensor.copy_(0.5 + noise if name.endswith("running_var") else noise - 0.5)
    return net.eval()


@pytest.mark.parametrize("arch", CELLS)
def test_extract_equals_activate(supernet: NB201SuperNetwork, arch: str) -> None:
    config = arch_str_to_config(supernet.space, arch)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    supernet.activate(config)
    dense = supernet.extract(config)
    assert isinstance(dense, NB201Network) and not dense.training
    with torch.no_grad():
        assert torch.equal(supernet(images), dense(images))


def test_degenerate_cell_outputs_zeros_but_network_runs(supernet: NB201SuperNetwork) -> None:
    dense = supernet.extract(arch_str_to_config(supernet.space, DEGENERATE))
    cell = dense.cells[0]
    with torch.no_grad():
        assert torch.count_nonzero(cell(torch.randn(1, 16, 32, 32))) == 0
        assert dense(torch.randn(2, 3, 32, 32)).shape == (2, 10)  # no pruning


# Parameters of the dense network (BN running statistics are buffers, not counted).
# Fixed part: stem conv 3*16*9 = 432 + BN 2*16 = 32                        ->    464
#   reduction 16->32: conv_a 16*32*9 = 4608 + BN 64, conv_b 32*32*9 = 9216 + BN 64,
#                     shortcut 1x1 conv 16*32 = 512                        ->  14464
#   reduction 32->64: 32*64*9 = 18432 + 128, 64*64*9 = 36864 + 128, 32*64 = 2048
#                                                                          ->  57600
#   head BN 2*64 = 128 + linear 64*10 + 10 = 650                           ->    778
#   total                                                                  ->  73306
# Cells: none / skip / avg-pool edges hold no parameters; a nor_conv_kxk edge at C
# channels holds k*k*C*C + 2*C. All-3x3 cell, 6 edges, 5 cells per stage:
#   C=16: 5 * 6 * (2304 + 32) = 70080; C=32: 5 * 6 * (9216 + 64) = 278400;
#   C=64: 5 * 6 * (36864 + 128) = 1109760; with the fixed part -> 1531546
# (NAS-Bench-201 reports 0.0733 and 1.5315 M for these cells).
# All-1x1 cell: 5 * 6 * (C*C + 2*C) over C = 16, 32, 64 = 8640 + 32640 + 126720 = 168000
#   -> 241306.
@pytest.mark.parametrize(("op", "params"), [
    ("none", 73306), ("skip_connect", 73306), ("avg_pool_3x3", 73306),
    ("nor_conv_3x3", 1531546), ("nor_conv_1x1", 241306),
])
def test_dense_parameter_counts(op: str, params: int) -> None:
    model = NB201Network(config=uniform(op))
    assert sum(p.numel() for p in model.parameters()) == params


def test_task_accuracy_is_the_tables() -> None:
    task = nas.get_task("nb201-cifar10")
    rows = table_rows()
    for arch in CELLS:
        model = NB201Network(config=arch_str_to_config(NB201_SPACE, arch))
        expected = float(rows[arch]["acc_cifar10"]) / 100
        assert task.evaluate(model)["accuracy"] == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="split must be one of"):
        task.evaluate(model, split="train")
    with pytest.raises(TypeError, match="NB201SuperNetwork or NB201Network"):
        task.evaluate(torch.nn.Linear(2, 2))


def test_task_probe_runs_one_image(supernet: NB201SuperNetwork) -> None:
    task = nas.get_task("nb201-cifar10")
    (image,) = task.example_inputs()
    assert image.shape == (1, 3, 32, 32)
    task.latency_probe(supernet.extract(supernet.space.smallest()))()


@pytest.mark.parametrize(("target", "column"), [("pixel3", "lat_pixel3"),
                                                 ("gold6226", "lat_gold_6226")])
def test_target_latency_is_the_tables(supernet: NB201SuperNetwork, target: str,
                                      column: str) -> None:
    hw = nas.get_hardware(target)
    task = nas.get_task("nb201-cifar10")
    rows = table_rows()
    for arch in CELLS:
        config = arch_str_to_config(supernet.space, arch)
        assert hw.latency_ms(supernet, config, task) == float(rows[arch][column])
    provenance = hw.provenance()
    assert provenance.method == "measured" and "HELP" in provenance.source


def test_targets_refuse_other_supernets() -> None:
    class Other(NB201SuperNetwork):
        family = "hat"

    with pytest.raises(ValueError, match="covers only the 'nb201' supernet") as err:
        nas.get_hardware("pixel3").latency_ms(Other(), NB201_SPACE.smallest(),
                                              nas.get_task("nb201-cifar10"))
    assert "\n" not in str(err.value)


def test_search_pixel3_end_to_end(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    result = CliRunner().invoke(app, [
        "search", "--supernet", "nb201", "--hw", "pixel3", "--budget", "5ms",
        "--evals", "12", "--algorithm", "random", "--storage", storage, "--json",
    ])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output[result.output.index("{"):])
    assert document["evaluations"] == 12 and document["pareto"]
    rows = table_rows()
    for point in document["pareto"]:
        row = rows[config_to_arch_str(point["config"])]
        assert point["latency_ms"] == float(row["lat_pixel3"]) <= 5.0
        assert point["accuracy"] == pytest.approx(float(row["acc_cifar10"]) / 100)


def test_export_round_trip(supernet: NB201SuperNetwork, tmp_path: Path) -> None:
    config = arch_str_to_config(supernet.space, MIXED)
    dense = supernet.extract(config)
    save_subnet(dense, tmp_path / "subnet", family="nb201")
    loaded = load_subnet(tmp_path / "subnet")
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(loaded(images), dense(images))
    assert loaded.config == dict(config)
