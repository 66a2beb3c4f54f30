"""The tabular NAS-Bench-201 benchmark: space, arch strings, table, true front, hv gap."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pytest
from optuna.storages import InMemoryStorage

from nas import Objective, Problem, UnknownNameError, run_search
from nas._pareto import pareto_front
from nas.algorithms import get_algorithm
from nas.studies import StudyMeta, open_study
from nas.supernets.nb201 import (
    DEFAULT_CSV,
    GENE_NAMES,
    NB201_SPACE,
    OPERATIONS,
    NB201Table,
    arch_str_to_config,
    config_to_arch_str,
    get_table,
    hv_gap,
    is_degenerate,
    list_tables,
    true_front,
    true_front_found,
)

SHARED_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / (
    "nb201_cifar_latency.csv"
)
ARCH = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
        "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
HEADER = "arch_idx,arch_str,acc_cifar10,lat_raspi4\n"


@pytest.fixture(scope="module")
def table() -> NB201Table:
    return NB201Table.default()


@pytest.fixture(scope="module")
def csv_rows() -> list[dict[str, str]]:
    with DEFAULT_CSV.open(newline="") as f:
        return list(csv.DictReader(f))


def all_configs() -> list[dict[str, str]]:
    return [dict(zip(GENE_NAMES, ops, strict=True))
            for ops in itertools.product(OPERATIONS, repeat=len(GENE_NAMES))]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.csv"
    path.write_text(text)
    return path


# -- space and arch strings -------------------------------------------------------------


def test_space_has_six_edges_of_five_operations() -> None:
    assert NB201_SPACE.name == "nb201"
    assert NB201_SPACE.names == ("edge.1<-0", "edge.2<-0", "edge.2<-1",
                                 "edge.3<-0", "edge.3<-1", "edge.3<-2")
    assert all(g.choices == OPERATIONS for g in NB201_SPACE.genes)
    assert NB201_SPACE.cardinality() == 15_625


def test_arch_str_round_trip_for_every_cell() -> None:
    strings = set()
    for values in all_configs():
        config = NB201_SPACE.config(values)
        s = config_to_arch_str(config)
        assert arch_str_to_config(NB201_SPACE, s) == config
        strings.add(s)
    assert len(strings) == 15_625
    config = arch_str_to_config(NB201_SPACE, ARCH)
    assert config["edge.2<-1"] == "avg_pool_3x3" and config["edge.3<-2"] == "skip_connect"
    assert config_to_arch_str(config) == ARCH


@pytest.mark.parametrize("bad", [
    "", "|none~0|+|none~0|none~1|", "none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
    "|none~0|+|none~0|+|none~0|none~1|none~2|", "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",
    "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
])
def test_malformed_arch_strings_name_the_string_and_the_form(bad: str) -> None:
    with pytest.raises(ValueError, match=r"\|op~0\|\+\|op~0\|op~1\|") as err:
        arch_str_to_config(NB201_SPACE, bad)
    assert repr(bad) in str(err.value)


# -- the table ----------------------------------------------------------------------------


def test_shipped_table_is_the_shared_one() -> None:
    if not SHARED_CSV.is_file():
        pytest.skip("shared/ is not beside the checkout")
    assert DEFAULT_CSV.read_bytes() == SHARED_CSV.read_bytes()


def test_table_has_every_cell_and_keeps_degenerate_ones(table: NB201Table) -> None:
    assert len(table) == 15_625
    assert table.devices == ("raspi4", "pixel3", "gold_6226", "titanxp_1", "1080ti_32")
    assert table.datasets == ("acc_cifar10", "acc_cifar100", "acc_imagenet16")
    rows = np.arange(len(table))
    acc = table.accuracy(rows)
    degenerate = table.is_degenerate()
    assert degenerate.sum() == 341 and np.all(acc[degenerate] == 0.10)
    near_zero = degenerate & (table.latency_ms(rows, device="raspi4") < 0.1)
    assert near_zero.sum() == 157  # shared/data/README.md's "about 157"
    assert is_degenerate("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert not is_degenerate(ARCH)


def test_lookups_equal_the_csv(table: NB201Table, csv_rows: list[dict[str, str]]) -> None:
    for row in csv_rows[::97]:
        config = arch_str_to_config(NB201_SPACE, row["arch_str"])
        got = table.lookup(config, device="pixel3", dataset="acc_cifar100")
        assert got == {"accuracy": pytest.approx(float(row["acc_cifar100"]) / 100),
                       "latency_ms": pytest.approx(float(row["lat_pixel3"]))}
    assert table.lookup(ARCH) == {"accuracy": pytest.approx(0.9366)}
    assert table.lookup(ARCH, device="lat_raspi4", dataset="cifar10")["latency_ms"] == (
        pytest.approx(54.7774))


def test_vectorised_lookups_equal_scalar_ones(table: NB201Table) -> None:
    configs = [NB201_SPACE.config(v) for v in all_configs()]
    many = table.lookup_many(configs, device="raspi4")
    vectors = np.array([NB201_SPACE.to_vector(c) for c in configs])
    fast = table.lookup_many(vectors, device="raspi4")
    for name in ("accuracy", "latency_ms"):
        np.testing.assert_array_equal(many[name], fast[name])
    for i in range(0, len(configs), 1_001):
        one = table.lookup(configs[i], device="raspi4")
        assert one == {"accuracy": many["accuracy"][i], "latency_ms": many["latency_ms"][i]}
    assert sorted(table.rows(vectors).tolist()) == list(range(15_625))


def test_unknown_device_and_dataset_list_the_known_ones(table: NB201Table) -> None:
    with pytest.raises(UnknownNameError, match="unknown device 'rpi4'.*known: raspi4, pixel3"):
        table.lookup(ARCH, device="rpi4")
    with pytest.raises(UnknownNameError, match="unknown dataset 'mnist'.*acc_cifar10"):
        table.evaluator("raspi4", dataset="mnist")


def test_a_user_csv_with_a_subset_of_cells(tmp_path: Path) -> None:
    other = ARCH.replace("avg_pool_3x3", "none")
    path = write(tmp_path, HEADER + f"0,{ARCH},93.5,54.0\n1,{other},90,40\n")
    table = NB201Table.from_csv(path)
    assert len(table) == 2 and table.devices == ("raspi4",) and table.datasets == ("acc_cifar10",)
    assert table.lookup(other, device="raspi4") == {"accuracy": 0.9, "latency_ms": 40.0}
    with pytest.raises(ValueError, match="has no row for cell .*none~2"):
        table.lookup("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert get_table("nb201", data=path).sha256 == table.sha256


@pytest.mark.parametrize(("text", "message"), [
    ("", "the file is empty"),
    ("arch,acc_cifar10,lat_raspi4\nx,1,2\n", "no 'arch_str' column"),
    ("arch_str,lat_raspi4\nx,1\n", r"no accuracy column \(acc_<name>\)"),
    ("arch_str,acc_cifar10\nx,1\n", r"no latency column \(lat_<name>\)"),
    (HEADER, "no data rows"),
    (HEADER + f"0,{ARCH},93\n", "line 2: 3 fields, the header has 4"),
    (HEADER + f"0,{ARCH},high,54\n", "line 2: column 'acc_cifar10' must be a number, got 'high'"),
    (HEADER + f"0,{ARCH},0.93e3,54\n", r"line 2: acc_cifar10 must be .* in \[0, 100\]"),
    (HEADER + f"0,{ARCH},93,-1\n", "line 2: lat_raspi4 must be a latency in ms, >= 0"),
    (HEADER + "0,|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|,93,54\n",
     r"line 2: arch string .*'conv~0' must be op~0"),
    (HEADER + f"0,{ARCH},93,54\n1,{ARCH},93,54\n", "line 3: arch string .* repeats line 2"),
])
def test_bad_csvs_name_the_file_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=message) as err:
        NB201Table.from_csv(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file; expected a CSV with an 'arch_str'"):
        NB201Table.from_csv(tmp_path / "nope.csv")


def test_registry() -> None:
    assert "nb201" in list_tables()
    assert get_table("nb201") is NB201Table.default()
    with pytest.raises(UnknownNameError, match="unknown tabular benchmark 'nb101'; known: nb201"):
        get_table("nb101")


# -- true front and hypervolume gap -------------------------------------------------------


@pytest.mark.parametrize("device", ["raspi4", "1080ti_32"])
def test_true_front_is_exact_and_its_gap_is_zero(table: NB201Table, device: str) -> None:
    points = table.objectives(device=device)
    rows = table.front_rows(device=device)
    front_points = points[rows]
    # no cell dominates a front cell ...
    no_worse = (points[None, :, :] <= front_points[:, None, :]).all(axis=2)
    better = (points[None, :, :] < front_points[:, None, :]).any(axis=2)
    assert not (no_worse & better).any()
    # ... and every other cell is dominated by a front cell
    off = points[np.setdiff1d(np.arange(len(points)), rows)][:, None, :]
    dominated = ((front_points[None] <= off).all(axis=2) & (front_points[None] < off).any(axis=2))
    assert dominated.any(axis=1).all()
    np.testing.assert_array_equal(pareto_front(front_points), np.arange(len(rows)))
    front = true_front(table, device=device)
    assert len(front) == len(rows)
    latencies = [table.lookup(c, device=device)["latency_ms"] for c in front]
    assert latencies == sorted(latencies)
    assert hv_gap(front, table, device=device) == 0.0
    assert true_front_found(front, table, device=device) == len(rows)
    assert hv_gap([], table, device=device) == 1.0


def test_random_samples_leave_the_gap_the_data_readme_reports(table: NB201Table) -> None:
    def median_gap(n: int) -> float:
        gaps = [hv_gap(np.random.default_rng(seed).choice(len(table), n, replace=False),
                       table, device="raspi4") for seed in range(10)]
        return float(np.median(gaps))

    gap_250 = median_gap(250)
    assert 0.003 < gap_250 < 0.02  # README: 0.85% median after 250 evaluations
    assert median_gap(1_000) < gap_250 < median_gap(60)


def test_gap_inputs_agree(table: NB201Table) -> None:
    rows = np.random.default_rng(0).choice(len(table), 100, replace=False)
    strings = [table.arch_strs[r] for r in rows]
    configs = [arch_str_to_config(NB201_SPACE, s) for s in strings]
    vectors = np.array([NB201_SPACE.to_vector(c) for c in configs])
    gaps = {hv_gap(x, table, device="raspi4") for x in (rows, strings, configs, vectors,
                                                       configs + configs)}
    assert len(gaps) == 1 and 0 < gaps.pop() < 1


# -- search over the table ----------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["random", "nsga2"])
def test_run_search_on_the_table_closes_the_gap(table: NB201Table, algorithm: str) -> None:
    problem = Problem(NB201_SPACE, (Objective("accuracy", "maximize"),
                                    Objective("latency_ms", "minimize")))
    evaluator = table.evaluator("raspi4")
    assert table.sha256[:16] in evaluator.fingerprint and "acc_cifar10" in evaluator.fingerprint
    meta = StudyMeta.for_problem(problem, supernet="nb201", checkpoint_hash=table.sha256[:16],
                                 hardware="raspi4", hardware_fingerprint=evaluator.fingerprint,
                                 seed=0, algorithm=algorithm)
    study = open_study("nb201", InMemoryStorage(), meta=meta, space=NB201_SPACE)
    gaps = []
    for n in (20, 100):
        run_search(problem, get_algorithm(algorithm, problem, seed=0), evaluator, study,
                   n_evals=n, progress=False)
        configs = [t.config for t in study.trials()]
        assert len(configs) == n
        gaps.append(hv_gap(configs, table, device="raspi4"))
    assert 0 < gaps[1] < gaps[0] < 1
    trial = study.trials()[0]
    assert trial.metrics == table.lookup(trial.config, device="raspi4")
