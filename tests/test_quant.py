"""Quantization policies searched with the architecture: the joint space, the units of
every family, fake quantization against real int8 kernels, sizes, and ``nas search
--quantize``."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

import nas
from nas._space import SearchSpace
from nas.quant import (
    BITS_PREFIX,
    calibrate,
    calibration_batches,
    fake_quantize,
    fake_quantize_weight,
    int8_kernels,
    joint_space,
    module_bits,
    quantize_weight,
    size_bytes,
    split_config,
    uniform_policy,
)
from nas.quant._modules import QUANTIZABLE
from tests.budgets import feasible_budget
from tests.cli_helpers import nas as run
from tests.cli_helpers import one_line_error

FAMILIES = ["hat", "ofa", "matformer", "flexibert", "sortednet"]


@pytest.fixture(scope="module")
def hat():
    return nas.get_supernet("hat")


def test_joint_space_adds_one_conditional_bit_gene_per_unit(hat):
    space = joint_space(hat.space, hat.quant_units(), (32, 8))
    bit_genes = [g for g in space.genes if g.name.startswith(BITS_PREFIX)]
    assert [g.name for g in bit_genes] == [f"bits.{u.name}" for u in hat.quant_units()]
    layer_condition = hat.space.gene("encoder.3.ffn_dim").active_if
    assert space.gene("bits.encoder.3.ffn").active_if == layer_condition
    # a unit of a layer the depth removes is inactive: its gene is dropped (canonical form)
    shallow = {**hat.space.smallest(), **{g.name: 8 for g in bit_genes}}
    config = space.config(shallow)
    assert "bits.encoder.3.ffn" not in config and "bits.encoder.0.ffn" in config
    assert config == space.config({**shallow, "bits.encoder.3.ffn": 32})
    # vectors, Optuna distributions and predictor features cover the new genes
    assert space.from_vector(space.to_vector(config)) == config
    assert set(space.optuna_distributions()) == set(space.names)
    assert space.to_features(config).shape == (len(space.feature_names),)
    arch, policy = split_config(config, hat.space)
    assert arch == hat.space.smallest() and set(policy.values()) == {8}
    assert set(policy) == set(hat.quant_modules(arch))


def _dominant_share(config):
    widths = [v for k, v in config.items() if k.startswith(BITS_PREFIX)]
    return max(widths.count(b) for b in set(widths)) / len(widths)


@pytest.mark.parametrize("bits", [(32, 8), (8, 6, 4, 2)])
def test_joint_samples_reach_nearly_uniform_policies(hat, bits):
    """Drawn gene by gene, a policy rarely has most units at one width (the front's
    ends): 2% of 32/8 policies have 80% of their units at one, 1.5% of 8/6/4/2 ones 60%;
    drawn mix first, 44% and 35%. With two widths the share at each is uniform."""
    space = joint_space(hat.space, hat.quant_units(), bits)
    rng = np.random.default_rng(0)
    configs = [space.sample(rng) for _ in range(2000)]
    dominant = np.array([_dominant_share(c) for c in configs])
    gene_by_gene = np.array([_dominant_share(SearchSpace.sample(space, rng))
                             for _ in range(2000)])
    threshold = 0.8 if len(bits) == 2 else 0.6
    assert np.mean(dominant >= threshold) > 10 * np.mean(gene_by_gene >= threshold)
    if len(bits) == 2:
        shares = [np.mean([v == 8 for k, v in c.items() if k.startswith(BITS_PREFIX)])
                  for c in configs]
        assert np.histogram(shares, bins=5, range=(0, 1))[0].min() > 0.6 * len(configs) / 5
    assert all(space.config(c) == c for c in configs[:50])  # canonical configs of the space
    again = np.random.default_rng(0)
    assert [space.sample(again) for _ in range(50)] == configs[:50]


@pytest.mark.parametrize("family", FAMILIES)
def test_units_name_the_layers_of_the_extracted_subnet(family):
    supernet = nas.get_supernet(family)
    units = {u.name for u in supernet.quant_units()}
    for config in (supernet.space.largest(), supernet.space.smallest()):
        model = supernet.extract(config)
        modules = supernet.quant_modules(config)
        assert set(modules) <= units and modules
        bits = module_bits(model, modules, uniform_policy(modules, 8))
        assert bits and all(isinstance(dict(model.named_modules())[n], QUANTIZABLE) for n in bits)
        # every unit of the subnet quantizes at least one layer
        covered = {u for u, prefixes in modules.items()
                   if any(n == p or n.startswith(p + ".") for n in bits for p in prefixes)}
        assert covered == set(modules)


def test_nb201_has_no_weights_to_quantize(tmp_path):
    assert nas.get_supernet("nb201").quant_units() == ()
    result = run("search", "--supernet", "nb201", "--hw", "pixel3", "--budget", "50ms",
                 "--quantize", "int8", "--storage", f"sqlite:///{tmp_path / 's.db'}")
    one_line_error(result, "no weights to quantize", "--quantize none")


def test_weights_quantize_per_channel_symmetric():
    weight = torch.randn(6, 10) * torch.arange(1, 7).reshape(6, 1)
    q, scales = quantize_weight(weight, 8)
    assert q.dtype == torch.int8 and q.abs().max() == 127
    assert torch.allclose(scales, weight.abs().amax(1) / 127)
    fake = fake_quantize_weight(weight, 8)
    assert torch.allclose(fake, q.float() * scales[:, None])
    assert torch.allclose(fake_quantize_weight(-weight, 4), -fake_quantize_weight(weight, 4))
    assert ((fake - weight).abs() <= scales[:, None] / 2 + 1e-6).all()
    assert fake_quantize_weight(weight, 32) is weight


def test_size_counts_packed_integers_and_scales():
    model = nn.Sequential(nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, 3))
    fp32 = 4 * (60 + 6 + 18 + 3)
    assert size_bytes(model, {}) == fp32
    int8 = 60 + 4 * 6 + 4 * 6 + 4 * (18 + 3)
    assert size_bytes(model, {"0": 8}) == int8
    assert size_bytes(model, {"0": 4}) == 30 + 4 * 6 + 4 * 6 + 4 * (18 + 3)
    assert size_bytes(model, {"0": 8}, calibrated=1) == int8 + 10


@pytest.mark.parametrize("family", ["hat", "ofa", "sortednet"])
def test_fake_quantization_scores_what_int8_kernels_score(family):
    """The fake-quantized subnet and the one on torch's int8 kernels agree within 0.2
    accuracy points (the same integers, the same calibrated grids)."""
    supernet = nas.get_supernet(family)
    task = nas.get_task(supernet.task_name)
    config = supernet.space.smallest()
    model = supernet.extract(config).eval()
    modules = supernet.quant_modules(config)
    bits = module_bits(model, modules, uniform_policy(modules, 8))
    ranges = calibrate(model, bits, task, calibration_batches(task, samples=64))
    assert set(ranges) == set(bits)
    fake = fake_quantize(copy.deepcopy(model), bits, ranges)
    real = int8_kernels(copy.deepcopy(fake))
    fp32 = task.evaluate(model, split="validation", limit=300)["accuracy"]
    fake_acc = task.evaluate(fake, split="validation", limit=300)["accuracy"]
    real_acc = task.evaluate(real, split="validation", limit=300)["accuracy"]
    assert abs(fake_acc - real_acc) <= 0.002
    assert abs(fake_acc - fp32) <= 0.02  # int8 costs little accuracy without retraining
    assert any(type(m).__name__.startswith("Int8") for m in real.modules())


def _search(tmp_path, *extra: str, study: str = "q", budget: str | None = None):
    budget = budget or feasible_budget("sortednet", factor=50.0)[1]
    return run("search", "--supernet", "sortednet", "--hw", "local-cpu", "--budget", budget,
               "--evals", "6", "--eval-limit", "200", "--study", study,
               "--storage", f"sqlite:///{tmp_path / 's.db'}", "--json", *extra)


@pytest.mark.slow
def test_mixed_search_front_carries_bits_and_size(tmp_path):
    result = _search(tmp_path, "--quantize", "mixed", "--size-budget", "1MB")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["quantize"] == "mixed" and document["pareto"]
    supernet = nas.get_supernet("sortednet")
    for point in document["pareto"]:
        assert 0 < point["size_mb"] <= 1.0
        arch = {k: v for k, v in point["config"].items() if not k.startswith(BITS_PREFIX)}
        assert set(point["bits"]) == set(supernet.quant_modules(arch))
        assert set(point["bits"].values()) <= {32, 8}
    sizes = [p["size_mb"] for p in document["pareto"]]
    assert np.isfinite(sizes).all()

    # a resumed study keeps its policy: left out, it is the study's; another is refused
    again = _search(tmp_path, "--size-budget", "1MB")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["new_evaluations"] == 0
    refused = _search(tmp_path, "--quantize", "int8", "--size-budget", "1MB")
    one_line_error(refused, "--quantize mixed", "not --quantize int8")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--quantize", "int4"], ["--quantize must be one of none, int8, mixed", "'int4'"]),
        (["--size-budget", "2"], ["size budget '2' needs a unit", "MB"]),
        (["--objective", "speed"], ["--objective must be size or memory", "speed"]),
    ],
)
def test_bad_quantization_options_are_one_line(tmp_path, args, fragments):
    one_line_error(_search(tmp_path, *args, budget="50ms"), *fragments)


def test_a_target_without_quantized_latencies_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_AGENT_TOKEN", "unused")  # refused before any connection
    result = run("search", "--supernet", "hat", "--hw", "remote:127.0.0.1:9", "--budget",
                 "50ms", "--quantize", "mixed", "--storage", f"sqlite:///{tmp_path / 's.db'}")
    one_line_error(result, "'remote:127.0.0.1:9' has no latency for quantized subnets",
                   "local-cpu, local-cpu-model, rpi4, xeon, titanxp")
    assert not (tmp_path / "s.db").exists()


@pytest.mark.slow
def test_linas_searches_the_joint_space(tmp_path):
    """SimQ-NAS's loop (predictors refit on every measurement, NSGA-II on them) takes the
    bit genes like any other."""
    result = run("search", "--supernet", "sortednet", "--hw", "local-cpu",
                 "--budget", feasible_budget("sortednet", factor=50.0)[1], "--quantize", "mixed",
                 "--algorithm", "linas", "--evals", "24", "--eval-limit", "200",
                 "--storage", f"sqlite:///{tmp_path / 's.db'}", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["algorithm"] == "linas" and document["evaluations"] == 24
    assert all(set(p["bits"].values()) <= {32, 8} for p in document["pareto"])
