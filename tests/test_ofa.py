"""OFA's MobileNetV3 supernet: its space and OFA encoding, weight slicing and extraction,
kernel transformation, channel sorting, BN recalibration, progressive shrinking, the
shipped checkpoint and the search/export job on it."""

from __future__ import annotations

import ast
import inspect
import json
import math

import numpy as np
import pytest
import torch

import nas
from nas.supernets._export import load_subnet, save_subnet
from nas.supernets.ofa import OFAMobileNetV3, calibration_images, digits_task
from nas.supernets.ofa import _dense as _ofa_dense
from nas.supernets.ofa._dense import OFASubnet, set_running_statistics
from nas.supernets.ofa._scheme import ProgressiveShrinking
from nas.supernets.ofa._space import DIGITS_SPACE, MOBILENETV3_SPACE, OFADesignSpace
from nas.supernets.training._loop import read_checkpoint_meta, train_supernet
from nas.supernets.training._zoo import zoo_dir
from tests.budgets import feasible_budget
from tests.cli_helpers import nas as run_nas

TINY = OFADesignSpace("ofa-tiny", stages=2, resolutions=(12, 16))
TINY_ARCH = {"widths": (16, 24), "strides": (2, 2), "activations": ("relu", "hswish"),
             "se": (False, True), "final_expand": 48, "feature_mix": 64}


def randomised(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter and BN statistic drawn at random, so a wrongly copied tensor (or a
    statistic left at its default) changes the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.rand(tensor.shape, generator=generator)
                tensor.copy_(0.5 + noise if name.endswith("running_var") else noise - 0.5)
    return net


@pytest.fixture(scope="module")
def task() -> nas.Task:
    return digits_task()


@pytest.fixture(scope="module")
def images(task) -> torch.Tensor:
    return task.split("validation")[0][:16]


@pytest.fixture(scope="module")
def random_net() -> OFAMobileNetV3:
    torch.manual_seed(0)
    return randomised(OFAMobileNetV3(), seed=1).eval()


def some_configs(space: nas.SearchSpace, n: int = 4) -> list[nas.Config]:
    rng = np.random.default_rng(7)
    return [space.smallest(), space.largest(), *(space.sample(rng) for _ in range(n))]


# -- space and OFA encoding ----------------------------------------------------------------


def test_space_sizes() -> None:
    per_stage = sum(9 ** d for d in (2, 3, 4))  # kernel x expand = 9 choices per block
    assert DIGITS_SPACE.build().cardinality() == 3 * per_stage ** 4
    published = MOBILENETV3_SPACE.build()
    assert published.cardinality() == 25 * per_stage ** 5  # ~5.5e20 (OFA: >10^19 per r)
    assert len(published) == 1 + 5 * (1 + 4 * 2)
    assert MOBILENETV3_SPACE.resolutions == tuple(range(128, 225, 4))


@pytest.mark.parametrize("design", [DIGITS_SPACE, MOBILENETV3_SPACE], ids=lambda d: d.name)
def test_ofa_encoding_round_trip(design: OFADesignSpace) -> None:
    space = design.build()
    for config in some_configs(space, 20):
        arch = design.to_ofa(config)
        assert [len(arch[k]) for k in ("ks", "e", "d", "r")] == [design.blocks,
                                                                 design.blocks,
                                                                 design.stages, 1]
        assert design.from_ofa(arch) == config
    # An OFA dict as sample_active_subnet draws it (values for skipped blocks too).
    rng = np.random.default_rng(3)
    raw = {"ks": rng.choice([3, 5, 7], design.blocks).tolist(),
           "e": rng.choice([3, 4, 6], design.blocks).tolist(),
           "d": rng.choice([2, 3, 4], design.stages).tolist(),
           "r": [int(rng.choice(design.resolutions))]}
    back = design.to_ofa(design.from_ofa(raw))
    assert back["d"] == raw["d"] and back["r"] == raw["r"]
    for s, depth in enumerate(raw["d"]):
        run = slice(s * 4, s * 4 + depth)
        assert back["ks"][run] == raw["ks"][run] and back["e"][run] == raw["e"][run]
    assert MOBILENETV3_SPACE.blocks == 20


def test_ofa_encoding_rejects_bad_input() -> None:
    good = DIGITS_SPACE.to_ofa(DIGITS_SPACE.build().largest())
    with pytest.raises(ValueError, match="'ks' must be a list of 16"):
        DIGITS_SPACE.from_ofa(good | {"ks": [7] * 20})
    with pytest.raises(ValueError, match="missing \\['r'\\]"):
        DIGITS_SPACE.from_ofa({k: v for k, v in good.items() if k != "r"})
    with pytest.raises(ValueError, match="must be one of"):
        DIGITS_SPACE.from_ofa(good | {"r": [224]})
    with pytest.raises(ValueError, match="kernel_sizes must be odd"):
        OFADesignSpace("bad", stages=2, kernel_sizes=(3, 4))


# -- slicing, extraction, kernel transform --------------------------------------------------


@pytest.mark.parametrize("calibrated", [False, True], ids=["shared-stats", "recalibrated"])
def test_extract_equals_activated_supernet(random_net, task, images, calibrated) -> None:
    random_net.set_calibration(calibration_images(task) if calibrated else None)
    try:
        for config in some_configs(random_net.space):
            random_net.activate(config)
            with torch.no_grad():
                expected = random_net(images)
                dense = random_net.extract(config)
                got = dense(images)
            assert isinstance(dense, OFASubnet)
            assert dense.resolution == config["resolution"]
            assert len(dense.blocks) == sum(config[f"stage{s}.depth"] for s in range(4))
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    finally:
        random_net.set_calibration(None)


def test_published_mobilenetv3_size() -> None:
    """The supernet builds at OFA's published size and slices exactly there too."""
    torch.manual_seed(0)
    net = OFAMobileNetV3(
        MOBILENETV3_SPACE, widths=(24, 40, 80, 112, 160), strides=(2, 2, 2, 1, 2),
        activations=("relu", "relu", "hswish", "hswish", "hswish"),
        se=(False, True, False, True, True), in_channels=3, num_classes=1000,
        final_expand=960, feature_mix=1280,
    ).eval()
    assert len(net.blocks) == 20
    assert net.blocks[-1].expand_conv.shape == (960, 160, 1, 1)  # 160 x expand 6
    assert net.blocks[-1].se_reduce.weight.shape == (240, 960, 1, 1)  # SE reduction 4
    images = torch.randn(1, 3, 224, 224)
    for config in some_configs(net.space, 1)[::2]:
        net.activate(config)
        with torch.no_grad():
            torch.testing.assert_close(net.extract(config)(images), net(images), atol=1e-5,
                                       rtol=0)


def test_recalibration_changes_statistics(random_net, task, images) -> None:
    """Recalibrated statistics are the subnet's own: the batch mean/var of each BN input."""
    config = random_net.space.smallest()
    dense = random_net.extract(config)  # shared (random) statistics
    before = dense.stem.bn.running_mean.clone()
    calib = calibration_images(task)
    set_running_statistics(dense, calib.split(50))
    with torch.no_grad():
        stem_out = dense.stem.conv(_ofa_dense.resize(calib, dense.resolution))
    torch.testing.assert_close(dense.stem.bn.running_mean, stem_out.mean((0, 2, 3)))
    per_batch = torch.stack([b.var((0, 2, 3), unbiased=False) for b in stem_out.split(50)])
    torch.testing.assert_close(dense.stem.bn.running_var, per_batch.mean(0))  # OFA's average
    assert not torch.allclose(before, dense.stem.bn.running_mean)
    assert not dense.training


def test_kernel_transformation(random_net) -> None:
    dw = random_net.blocks[5].dw
    mid = dw.weight.shape[0]
    seven = dw.kernel(mid, 7)
    five = dw.kernel(mid, 5)
    three = dw.kernel(mid, 3)
    expected_five = (seven[:, :, 1:6, 1:6].reshape(mid, 25) @ dw.matrices["7to5"].T)
    torch.testing.assert_close(five, expected_five.reshape(mid, 1, 5, 5))
    expected_three = five[:, :, 1:4, 1:4].reshape(mid, 9) @ dw.matrices["5to3"].T
    torch.testing.assert_close(three, expected_three.reshape(mid, 1, 3, 3))
    assert dw.matrices["7to5"].shape == (25, 25) and dw.matrices["5to3"].shape == (9, 9)
    fresh = OFAMobileNetV3().blocks[0].dw  # identity at initialisation: a plain centre crop
    torch.testing.assert_close(fresh.kernel(8, 3), fresh.weight[:8, :, 2:5, 2:5])


def test_channel_sorting_keeps_function_and_orders_importance(random_net, images) -> None:
    net = OFAMobileNetV3(TINY, **TINY_ARCH)
    randomised(net, seed=4).eval()
    largest = net.space.largest()
    net.activate(largest)
    with torch.no_grad():
        before = net(images)
    block = net.blocks[5]  # stage 1, has SE
    old_importance = block.importance()
    order = block.sort_channels(0)
    net.sort_channels(0)
    with torch.no_grad():
        torch.testing.assert_close(net(images), before, atol=1e-5, rtol=0)
    importance = block.importance()
    assert not torch.equal(order, torch.arange(len(order)))  # it did permute
    assert torch.all(importance[:-1] >= importance[1:])
    torch.testing.assert_close(importance.sort().values, old_importance.sort().values)
    se_importance = block.se_expand.weight.abs().sum((0, 2, 3))
    assert torch.all(se_importance[:-1] >= se_importance[1:])
    # Stage 2 keeps OFA's nesting: channels inside the width of expand 4 stay there.
    w3, w4 = block.mid(3), block.mid(4)
    kept = set(block.project_conv[:, :w4].abs().sum((0, 2, 3)).tolist())
    block.sort_channels(2)
    importance = block.importance()
    assert set(importance[:w4].tolist()) == kept
    for group in (importance[:w3], importance[w3:w4], importance[w4:]):
        assert torch.all(group[:-1] >= group[1:])


def test_describe_and_architecture(random_net) -> None:
    config = random_net.space.smallest()
    shape = random_net.describe(config)
    assert shape.family == "ofa" and shape.count("mbconv") == 1 + 4 * 2
    assert shape.dims["resolution"] == 12
    assert shape.layers[0].dims["in_size"] == 12 and shape.layers[1].dims["in_size"] == 6
    first = shape.layers[2].dims
    assert (first["kernel"], first["mid"], first["stride"]) == (3, 48, 2)
    rebuilt = OFAMobileNetV3.from_architecture(json.loads(json.dumps(random_net.architecture())))
    assert rebuilt.architecture() == random_net.architecture()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in random_net.state_dict().items()}


def test_bad_input_is_rejected(random_net) -> None:
    with pytest.raises(ValueError, match="'stage0.block0.kernel' must be one of"):
        random_net.activate(dict(random_net.space.largest()) | {"stage0.block0.kernel": 4})
    with pytest.raises(ValueError, match="widths must have one entry per stage"):
        OFAMobileNetV3(widths=(16, 24))
    with pytest.raises(ValueError, match="activations must be among"):
        OFAMobileNetV3(activations=("relu", "gelu", "relu", "relu"))
    with pytest.raises(ValueError, match="calibration images must be"):
        random_net.set_calibration(torch.zeros(3, 20, 20))


# -- dense model: export, reload, tracing ----------------------------------------------------


def test_dense_subnet_exports_and_reloads(random_net, images, tmp_path) -> None:
    config = random_net.space.sample(np.random.default_rng(11))
    dense = random_net.extract(config)
    json.dumps(dense.subnet_config())
    save_subnet(dense, tmp_path / "sub", family="ofa")
    loaded = load_subnet(tmp_path / "sub")
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), dense(images), atol=0, rtol=0)
        traced = torch.jit.trace(dense, images[:1])
        torch.testing.assert_close(traced(images), dense(images), atol=1e-5, rtol=0)
    tree = ast.parse(inspect.getsource(_ofa_dense))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any("ofa" in (m or "") and m != "nas.supernets.ofa._dense" for m in imported)
    with pytest.raises(ValueError, match="blocks\\[0\\] must have the keys"):
        OFASubnet(**dense.subnet_config() | {"blocks": [{"cin": 16}]})


# -- progressive shrinking: the property check ------------------------------------------------


def test_progressive_shrinking_on_digits(task) -> None:
    """A short PS run: phases widen in order, the teacher stays frozen, the kernel transform
    is learned and the smallest subnet ends well above chance."""
    torch.manual_seed(0)
    net = OFAMobileNetV3(TINY, **TINY_ARCH).set_calibration(calibration_images(task))
    scheme = ProgressiveShrinking()
    seen: list[tuple[str, list[nas.Config]]] = []
    frozen: dict[str, torch.Tensor] = {}

    def on_step(step: int, configs: list[nas.Config], loss: float) -> None:
        seen.append((scheme.phases[scheme.phase_at(step)].name, configs))
        if scheme.teacher is not None and not frozen:
            frozen.update({k: v.clone() for k, v in scheme.teacher.state_dict().items()})
            frozen["student"] = net.blocks[0].project_conv.detach().clone()

    recipe = train_supernet(net, task, steps=100, batch_size=32, lr=5e-3, seed=0, warmup=10,
                            scheme=scheme, progress=False, on_step=on_step)
    names = [name for name, _ in seen]
    assert names == sorted(names, key=[p.name for p in scheme.phases].index)
    for name, configs in seen:
        assert len({config["resolution"] for config in configs}) == 1  # one size per batch
        for config in configs:
            depths = {config[f"stage{s}.depth"] for s in range(2)}
            expands = {v for k, v in config.items() if k.endswith("expand")}
            kernels = {v for k, v in config.items() if k.endswith("kernel")}
            if name == "full":
                assert config == net.space.config(dict(net.space.largest())
                                                  | {"resolution": config["resolution"]})
            if name in ("kernel", "depth-1", "depth-2"):
                assert expands == {6}
            if name == "kernel":
                assert depths == {4}
            if name == "depth-1":
                assert depths <= {3, 4}
            if name.startswith("expand-1"):
                assert expands <= {4, 6}
            assert kernels <= {3, 5, 7}
    assert len(seen[-1][1]) == 4  # OFA's dynamic batch of the expand phase

    # The teacher: built after the full phase, frozen (weights and statistics) since.
    teacher = scheme.teacher
    assert teacher is not None and not any(p.requires_grad for p in teacher.parameters())
    for name, tensor in teacher.state_dict().items():
        assert torch.equal(tensor, frozen[name]), name
    assert not torch.equal(net.blocks[0].project_conv, frozen["student"])  # student trained

    # The kernel transformation is used: the 5x5 kernel is no longer the 7x7's centre.
    dw = net.blocks[1].dw
    mid = dw.weight.shape[0]
    centre = dw.kernel(mid, 7)[:, :, 1:6, 1:6]
    assert (dw.kernel(mid, 5) - centre).abs().max() > 1e-3

    metrics = recipe["metrics"]
    assert metrics["largest"]["accuracy"] > 0.7, metrics
    assert metrics["smallest"]["accuracy"] > 0.3, metrics  # chance is 0.1
    assert recipe["scheme"]["name"] == "progressive-shrinking"


# -- registry, shipped checkpoint, search and export -------------------------------------------


def test_registrations() -> None:
    assert "ofa" in nas.list_supernets()
    from nas._supernet import SUBNET_BUILDERS
    from nas._task import TASKS
    from nas.supernets import SUPERNET_FAMILIES, ZOO_RECIPES

    assert "ofa" in SUBNET_BUILDERS and "ofa" in SUPERNET_FAMILIES
    assert "digits-image" in TASKS
    recipe = ZOO_RECIPES["ofa"]
    assert recipe.stem == "ofa-digits" and isinstance(recipe.scheme(), ProgressiveShrinking)


def test_shipped_checkpoint(task) -> None:
    net = nas.get_supernet("ofa")
    meta = read_checkpoint_meta(zoo_dir() / "ofa-digits")
    assert isinstance(net, OFAMobileNetV3) and net.task_name == "digits-image"
    assert meta["recipe"]["scheme"]["name"] == "progressive-shrinking"
    assert meta["command"].startswith(
        "OMP_NUM_THREADS=1 nas train --supernet ofa --out supernets/zoo/ofa-digits")
    assert (zoo_dir() / "ofa-digits.safetensors").stat().st_size < 3_000_000
    assert net.calibration  # the registered supernet recalibrates per subnet
    for name in ("largest", "smallest"):
        net.activate(getattr(net.space, name)())
        accuracy = task.evaluate(net)["accuracy"]
        assert math.isclose(accuracy, meta["metrics"][name]["accuracy"], abs_tol=1e-9)
    assert meta["metrics"]["largest"]["accuracy"] > 0.95
    assert meta["metrics"]["smallest"]["accuracy"] > 0.9


@pytest.mark.slow
def test_search_and_export_end_to_end(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    result = run_nas("search", "--supernet", "ofa", "--hw", "local-cpu", "--budget",
                     feasible_budget("ofa")[1], "--evals", "6", "--storage", storage, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output[result.output.index("{"):])
    assert document["pareto"], document
    out = tmp_path / "export"
    result = run_nas("export", "--study", "ofa-local-cpu", "--pareto", "--storage", storage,
                     "--out", str(out), "--format", "safetensors,onnx,torchscript", "--json")
    assert result.exit_code == 0, result.output
    folders = sorted(p.parent for p in out.rglob("config.json"))
    assert len(folders) == len(document["pareto"])
    recorded = {row["trial"]: row["accuracy"] for row in document["pareto"]}
    task = digits_task()
    for folder in folders:
        model = load_subnet(folder)
        assert isinstance(model, OFASubnet)
        config = json.loads((folder / "config.json").read_text())
        assert config["batchnorm"].startswith("recalibrated by the supernet")
        # the exported model keeps the statistics the search scored it with
        trial = config["metadata"]["trial"]
        assert task.evaluate(model)["accuracy"] == pytest.approx(recorded[trial])
