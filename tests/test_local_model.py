"""The ``local-cpu-model`` target (hardware/_local_model.py), its calibrate command
(nas/cli/_calibrate.py) and the scoring helpers of benchmarks/bench_local_latency_model.py."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from standins import StandInTask
from typer.testing import CliRunner

from nas._task import Workload
from nas.cli._calibrate import calibrate
from nas.hardware._latency_dataset import ProfileSettings
from nas.hardware._local_model import (
    CALIBRATE_COMMAND,
    LocalCalibration,
    LocalModelTarget,
    calibrate_local,
    load_calibration,
    machine_fingerprint,
    probe_workload,
    roofline_ms,
    save_calibration,
)
from nas.hardware._macs import (
    DENSE_HAT_DECODING,
    DecoderLayerDims,
    EncoderLayerDims,
    Seq2SeqShape,
    seq2seq_macs,
)
from nas.supernets import G2P_SPACE, HATSuperTransformer

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_local_latency_model.py"
TINY = ProfileSettings(threads=1, warmup=0, min_repeats=6, max_repeats=6, rel_ci=0.5)
"""Six runs per figure: enough to exercise the path, not to time anything."""


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_local_latency_model", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def supernet() -> HATSuperTransformer:
    return HATSuperTransformer(G2P_SPACE, src_vocab=33, tgt_vocab=73).eval()


@pytest.fixture(scope="module")
def task() -> StandInTask:
    return StandInTask(Workload(src_len=8.5, tgt_len=7.3))


@pytest.fixture(scope="module")
def calibration(supernet: HATSuperTransformer, task: StandInTask) -> LocalCalibration:
    return calibrate_local(supernet, task, n=8, seed=0, settings=TINY)


# -- calibration -------------------------------------------------------------------------


def test_calibration_records_what_it_was_made_with(calibration: LocalCalibration) -> None:
    assert calibration.machine == machine_fingerprint()
    assert calibration.n == 8 and calibration.space == "hat-g2p"
    assert calibration.workload == Workload(src_len=8, tgt_len=7)  # the probe's, not the mean
    assert calibration.heldout["n"] == 2  # a quarter held out
    assert 0 <= calibration.heldout["median_ape"] < math.inf


def test_round_trip_gives_the_same_predictions(
    calibration: LocalCalibration, supernet: HATSuperTransformer, task: StandInTask,
    tmp_path: Path,
) -> None:
    path = save_calibration(calibration, tmp_path / "sub" / "cal.json")
    assert load_calibration(path) == calibration
    target = LocalModelTarget(path=path)
    rng = np.random.default_rng(1)
    for config in (supernet.space.sample(rng) for _ in range(5)):
        shape = Seq2SeqShape.from_subnet(supernet.describe(config))
        expected = calibration.coefficients.breakdown(
            shape, Workload(8, 7), DENSE_HAT_DECODING).total_ms
        assert target.latency_ms(supernet, config, task) == pytest.approx(expected, rel=1e-12)
    assert target.fingerprint == f"local-cpu-model:{calibration.digest}"


def test_calibrate_local_uses_the_environment_cache(
    calibration: LocalCalibration, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAS_CACHE", str(tmp_path))
    assert save_calibration(calibration) == tmp_path / "local-cpu-model.json"
    assert LocalModelTarget().calibration() == calibration


def test_calibrate_local_rejects_too_few_samples(
    supernet: HATSuperTransformer, task: StandInTask
) -> None:
    with pytest.raises(ValueError, match=r"n must be in \[8, "):
        calibrate_local(supernet, task, n=7, settings=TINY)


# -- refusing a calibration ----------------------------------------------------------------


def _one_line_naming_the_command(err: pytest.ExceptionInfo[BaseException]) -> None:
    message = str(err.value)
    assert "\n" not in message
    assert f"`{CALIBRATE_COMMAND}`" in message


def test_another_machine_is_refused_in_one_line(
    calibration: LocalCalibration, supernet: HATSuperTransformer, task: StandInTask,
    tmp_path: Path,
) -> None:
    other = dataclasses.replace(calibration, machine={**calibration.machine, "cpu": "Other CPU"})
    target = LocalModelTarget(path=save_calibration(other, tmp_path / "cal.json"))
    with pytest.raises(ValueError, match="made on Other CPU") as err:
        target.latency_ms(supernet, supernet.space.smallest(), task)
    _one_line_naming_the_command(err)
    with pytest.raises(ValueError):
        target.provenance()


def test_no_calibration_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no local-cpu-model calibration") as err:
        LocalModelTarget(path=tmp_path / "missing.json").provenance()
    _one_line_naming_the_command(err)


def test_another_format_version_is_refused(calibration: LocalCalibration, tmp_path: Path) -> None:
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({**calibration.to_dict(), "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99") as err:
        load_calibration(path)
    _one_line_naming_the_command(err)


# -- the predictions ----------------------------------------------------------------------


def test_bigger_subnets_are_never_predicted_faster(
    calibration: LocalCalibration, supernet: HATSuperTransformer, task: StandInTask,
    tmp_path: Path,
) -> None:
    """NNLS keeps every coefficient >= 0, so raising any width or depth (more layers,
    more MACs) cannot lower the prediction."""
    assert all(v >= 0 for v in calibration.coefficients.to_dict().values())
    target = LocalModelTarget(path=save_calibration(calibration, tmp_path / "cal.json"))
    space = supernet.space
    every_gene = space.largest().to_dict()  # values for the layers a deeper config adds
    rng = np.random.default_rng(2)
    for base in (space.sample(rng) for _ in range(10)):
        before = target.latency_ms(supernet, base, task)
        for gene in space.genes:
            values = {**every_gene, **base.to_dict(), gene.name: max(gene.choices)}
            bigger = space.config(values)
            assert target.latency_ms(supernet, bigger, task) >= before - 1e-12, gene.name
    smallest = target.latency_ms(supernet, space.smallest(), task)
    largest = target.latency_ms(supernet, space.largest(), task)
    assert 0 < smallest < largest


def test_provenance_states_method_error_and_n(
    calibration: LocalCalibration, tmp_path: Path
) -> None:
    provenance = LocalModelTarget(path=save_calibration(calibration, tmp_path / "c.json")
                                  ).provenance()
    assert provenance.method == "calibrated"
    assert provenance.error == calibration.heldout
    assert "fitted on 8 random subnets" in provenance.source
    assert any("held out" in note for note in provenance.notes)


def test_probe_workload_is_the_example_not_the_mean(task: StandInTask) -> None:
    assert probe_workload(task) == Workload(src_len=8, tgt_len=7)


def test_roofline_by_hand() -> None:
    """One encoder and one decoder layer, widths 2 and 4, 3 source tokens, 2 steps."""
    shape = Seq2SeqShape(
        encoder=(EncoderLayerDims(embed_dim=2, ffn_dim=4, qkv_dim=2),),
        decoder=(DecoderLayerDims(embed_dim=2, ffn_dim=4, qkv_dim=2, cross_qkv_dim=2,
                                  ende_layers=1, encoder_embed_dim=2),),
        decoder_embed_dim=2, tgt_vocab=5,
    )
    workload = Workload(src_len=3, tgt_len=2)
    macs = seq2seq_macs(shape, workload, DENSE_HAT_DECODING)
    # Unlimited bandwidth: the arithmetic alone, 2 FLOPs per MAC at 1 GFLOP/s.
    assert roofline_ms(shape, workload, 1.0, 1e30) == pytest.approx(2 * macs.total / 1e6)
    # Unlimited arithmetic: fp32 weights read at 1 GB/s: the encoder layer's 4*2*2 + 2*2*4
    # = 32 once; per step the decoder layer's 4*2*2 + 2*2*2 + 2*2*4 = 40 and the output
    # projection's 2*5 = 10, two steps: 32 + 2 * 50 = 132 weights, 528 bytes.
    assert roofline_ms(shape, workload, 1e30, 1.0) == pytest.approx(528 / 1e6)
    with pytest.raises(ValueError, match="must be > 0"):
        roofline_ms(shape, workload, 0.0, 1.0)


# -- the command ---------------------------------------------------------------------------


@pytest.fixture
def cli() -> typer.Typer:
    """``nas hw`` with only ``calibrate`` (the real app registers it the same way)."""
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("calibrate")(calibrate)
    return app


def test_calibrate_command_writes_the_file(
    cli: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAS_CACHE", str(tmp_path))
    result = CliRunner().invoke(cli, ["calibrate", "local-cpu-model", "--samples", "8",
                                      "--seed", "3", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    written = tmp_path / "local-cpu-model.json"
    assert document["path"] == str(written)
    saved = load_calibration(written)
    assert (saved.n, saved.seed, saved.space) == (8, 3, "hat-g2p")
    assert saved.heldout["n"] == 2


def test_calibrate_command_rejects_other_targets(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["calibrate", "rpi4"])
    assert result.exit_code == 2
    assert "target must be one of ['local-cpu-model']" in result.output


# -- the benchmark's scoring ----------------------------------------------------------------


bench = _load_bench()


def test_score_by_hand() -> None:
    # APEs 1.1, 0.1, 0, 0.25; one swapped pair of ranks out of six.
    s = bench.score([1, 2, 4, 8], [2.1, 1.8, 4, 10])
    assert s["median_ape"] == pytest.approx(0.175)
    assert s["p90_ape"] == pytest.approx(0.25 + 0.7 * 0.85)  # sorted, position 0.9 * 3
    assert s["mape"] == pytest.approx(1.45 / 4)
    assert s["spearman"] == pytest.approx(1 - 6 * 2 / (4 * 15))
    assert s["kendall"] == pytest.approx(4 / 6)
    assert s["n"] == 4


def test_fit_scale_and_repeat_noise_by_hand() -> None:
    assert bench.fit_scale([1, 2, 3], [2, 4, 6.3]) == pytest.approx(28.9 / 14)
    assert bench.repeat_noise([1.1, 2.0], [1.0, 2.5]) == pytest.approx(0.15)


def test_plan_mixes_fit_heldout_and_repeats() -> None:
    fit, held, order = bench.plan(10, 4, 2, seed=0)
    assert len(fit) == 4 and len(held) == 6 and not set(fit) & set(held)
    assert sorted(order) == sorted([*range(10), *held[:2]])
    with pytest.raises(ValueError, match="train <= n - repeats"):
        bench.plan(10, 9, 2, seed=0)
