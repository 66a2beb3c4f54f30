"""``load_subnet`` trusts neither export file: a tampered one is refused in one line naming
the file, before its model is allocated; exports get the user's umask."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import nas
from nas._registry import Registry, UnknownNameError
from nas.hardware._agent import _reset_peak_rss, _status_mib
from nas.supernets._untrusted import build_on_meta
from tests.cli_helpers import nas as run_nas
from tests.cli_helpers import one_line_error

MAX_GROWTH_MB = 200
"""Peak resident-set growth allowed while a tampered export is refused: far below what
its config describes (gigabytes), far above what reading two small files needs."""


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    """Real exports of shipped supernets' smallest subnets (a 10 KB MLP, a 0.7 MB HAT
    SubTransformer, a 1.6 MB LM), loaded once so that torch's one-off meta-device imports
    are not counted below."""
    folders = {}
    for name in ("sortednet", "hat", "matformer"):
        supernet = nas.get_supernet(name)
        folder = tmp_path_factory.mktemp(name) / "export"
        nas.save_subnet(supernet.extract(supernet.space.smallest()), folder,
                        family=supernet.family, metadata={"task": supernet.task_name})
        nas.load_subnet(folder)
        folders[name] = folder
    return folders


@pytest.fixture
def export(pristine, tmp_path) -> Callable[[str], Path]:
    """A fresh copy of a pristine export, to tamper with."""
    def copy(name: str) -> Path:
        return Path(shutil.copytree(pristine[name], tmp_path / name))
    return copy


def edit_config(folder: Path, change: Callable[[dict[str, Any]], object]) -> Path:
    document = json.loads((folder / "config.json").read_text())
    change(document)
    (folder / "config.json").write_text(json.dumps(document))
    return folder


def edit_weights(folder: Path, change: Callable[[dict[str, torch.Tensor]], object]) -> Path:
    tensors = load_file(folder / "model.safetensors")
    change(tensors)
    save_file(tensors, folder / "model.safetensors")
    return folder


def refused(folder: Path, error: type[Exception] = ValueError) -> str:
    """The one-line message ``load_subnet`` refuses ``folder`` with; it names the file."""
    with pytest.raises(error) as err:
        nas.load_subnet(folder)
    message = str(err.value)
    assert "\n" not in message and str(folder) in message, message
    return message


@pytest.fixture
def peak_growth_mb() -> Iterator[Callable[[], float]]:
    """Resets the kernel's peak resident set; the function returns its growth since."""
    if not _reset_peak_rss():
        pytest.skip("this system does not let a process reset its peak resident set")
    before = _status_mib("VmRSS")
    yield lambda: _status_mib("VmHWM") - before


def set_config(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda document: document["subnet_config"].__setitem__(key, value)


# -- sizes: refused before memory is allocated -------------------------------------------


@pytest.mark.parametrize(
    ("name", "key", "value", "message"),
    [
        ("sortednet", "width", 2**22, "subnet_config width is 4194304, over the limit of "
         "65536 (model.safetensors holds 2410 values)"),
        ("matformer", "ffn_dims", [2**22] * 4, "ffn_dims[3] is 4194304, over the limit of 406784"),
        # Within the size bound, so the meta build and the header check refuse them: d_model
        # 65536 describes 50 GB of weights, depth 2 x width 60000 a 14 GB layer.
        ("matformer", "d_model", 2**16, "'trunk.blocks.0.attn.proj.bias' is F32 [128] in the "
         "file, but subnet_config builds F32 [65536]"),
        ("sortednet", "width", 60_000, "does not match config.json: 'head.weight' is F32 "
         "[10, 32] in the file, but subnet_config builds F32 [10, 60000]"),
    ],
    ids=["mlp-width-2**22", "ffn-2**22", "d_model-2**16", "mlp-width-60000"],
)
def test_a_huge_size_is_refused_before_any_memory_is_allocated(export, peak_growth_mb, name,
                                                                key, value, message):
    folder = edit_config(export(name), set_config(key, value))
    assert message in refused(folder)
    assert peak_growth_mb() < MAX_GROWTH_MB


def test_a_huge_depth_is_refused_without_building_it(export, peak_growth_mb):
    folder = edit_config(export("sortednet"), set_config("depth", 2**30))
    assert "subnet_config depth is 1073741824, over the limit of 65536" in refused(folder)
    # Within the size bound: the meta build is cut off by what the file holds (4 tensors).
    edit_config(folder, set_config("depth", 50_000))
    assert ("builds more than 1088 modules and tensors, far more than the 4 tensors in "
            "model.safetensors need") in refused(folder)
    assert peak_growth_mb() < MAX_GROWTH_MB


class _CpuTable(nn.Module):
    """A builder that computes a table on the CPU by name, as HAT's positions do."""

    def __init__(self, rows: int) -> None:
        super().__init__()
        self.register_buffer("table", torch.ones(rows, 1024, device=torch.device("cpu")))


def test_the_meta_build_allocates_nothing_even_for_tensors_made_on_the_cpu(peak_growth_mb):
    planned = build_on_meta(_CpuTable, {"rows": 2**20}, config_path=Path("config.json"),
                            weights=Path("model.safetensors"), tensors=1)
    assert planned.table.is_meta and planned.table.shape == (2**20, 1024)  # 4 GiB if real
    assert peak_growth_mb() < MAX_GROWTH_MB


# -- malformed documents -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(subnet_config=None), "subnet_config must be a JSON object, got "
                                                 "NoneType None"),
        (lambda d: d.update(subnet_config=[1, 2]), "subnet_config must be a JSON object"),
        (lambda d: d.update(family=["sortednet"]), "subnet family must be a name (a string), "
                                                   "got ['sortednet']; known: flexibert"),
        (lambda d: d.update(family=None), "subnet family must be a name"),
        (lambda d: d.update(metadata="notes"), "metadata must be a JSON object, got str"),
        (set_config("width", -3), "does not build a model: width must be a positive integer, "
                                  "got -3"),
        (set_config("width", "wide"), "does not build a model: width must be a positive"),
        (set_config("bogus", 1), "does not build a model: DenseSortedMLP.__init__() got an "
                                 "unexpected keyword argument 'bogus'"),
    ],
    ids=["null-config", "list-config", "list-family", "null-family", "text-metadata",
         "negative-width", "text-width", "unknown-argument"],
)
def test_a_malformed_config_json_is_one_line_naming_it(export, change, message):
    folder = edit_config(export("sortednet"), change)
    text = refused(folder)
    assert text.startswith(f"{folder / 'config.json'}: ") and message in text, text


def test_a_negative_width_is_a_value_error_not_a_torch_traceback(export):
    folder = edit_config(export("hat"), lambda d: d["subnet_config"]["config"].update(
        {"encoder.0.ffn_dim": -1}))
    assert "does not build a model: Trying to create tensor with negative dimension -1" in \
        refused(folder)


def test_positions_computed_on_the_cpu_are_checked_on_meta(export, peak_growth_mb):
    folder = edit_config(export("hat"), set_config("max_positions", 150_000))
    assert "'decoder_positions' is F32 [65, 64] in the file, but subnet_config builds F32 " \
        "[150001, 64]" in refused(folder)
    assert peak_growth_mb() < MAX_GROWTH_MB


def test_a_json_bomb_of_nesting_is_refused(export):
    folder = export("sortednet")
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    assert "is not valid JSON" in refused(folder)


# -- weights that do not match -----------------------------------------------------------


def test_a_missing_or_extra_tensor_is_refused(export):
    folder = edit_weights(export("sortednet"), lambda t: t.pop("head.bias"))
    assert "does not match config.json: missing ['head.bias'], unexpected []" in \
        refused(folder)
    edit_weights(folder, lambda t: t.update({"head.bias": torch.zeros(10),
                                             "extra": torch.zeros(1)}))
    assert "missing [], unexpected ['extra']" in refused(folder)


def test_a_dtype_mismatch_is_refused(export):
    folder = edit_weights(export("sortednet"), lambda t: t.update(
        {"head.weight": t["head.weight"].half()}))
    assert ("'head.weight' is F16 [10, 32] in the file, but subnet_config builds F32 "
            "[10, 32]") in refused(folder)


@pytest.mark.parametrize("cut", [lambda b: b[:-7], lambda b: b[:5], lambda b: b"garbage" * 9])
def test_truncated_or_garbage_weights_are_refused(export, cut):
    folder = export("matformer")
    weights = folder / "model.safetensors"
    weights.write_bytes(cut(weights.read_bytes()))
    assert f"{weights} is not a readable safetensors file" in refused(folder)


def test_missing_weights_are_a_file_not_found_error(export):
    folder = export("sortednet")
    (folder / "model.safetensors").unlink()
    assert "model.safetensors is missing" in refused(folder, FileNotFoundError)


def test_an_untampered_export_still_loads(export):
    model = nas.load_subnet(export("matformer"))
    assert not model.training and all(not p.is_meta for p in model.parameters())


# -- permissions, the registry, the compress CLI -----------------------------------------


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664)])
def test_exported_files_follow_the_umask(tmp_path, umask, mode):
    supernet = nas.get_supernet("sortednet")
    previous = os.umask(umask)
    try:
        folder = nas.save_subnet(supernet.extract(supernet.space.smallest()), tmp_path / "sub",
                                 family=supernet.family)
    finally:
        os.umask(previous)
    for name in ("config.json", "model.safetensors"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == mode, name
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]


def test_a_registry_refuses_a_name_that_is_not_a_string():
    registry: Registry[object] = Registry("widget")
    registry.register("knob")(object)
    for name in (["knob"], {"a": 1}, None, 3):
        with pytest.raises(UnknownNameError) as err:
            registry.entry(name)
        assert str(err.value).startswith("widget must be a name (a string), got ")
        assert str(err.value).endswith("; known: knob")
        assert name not in registry
    assert registry.entry("knob").factory is object


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (set_config("ffn_dims", [2**22] * 4), "ffn_dims[3] is 4194304, over the limit"),
        (set_config("d_model", -128), "does not build a model: d_model must be"),
        (lambda d: d.update(family=["matformer"]), "subnet family must be a name"),
        (lambda d: d.update(metadata=[1]), "metadata must be a JSON object, got list"),
    ],
    ids=["huge-ffn", "negative-width", "list-family", "list-metadata"],
)
@pytest.mark.parametrize("command", [["prune", "--target-params", "0.5"],
                                     ["subclone", "--layers", "1", "--hidden", "64"]])
def test_compress_refuses_a_tampered_export_in_one_line(export, tmp_path, change, fragment,
                                                       command):
    folder = edit_config(export("matformer"), change)
    result = run_nas("compress", command[0], "--model", str(folder), *command[1:], "--out",
                     str(tmp_path / "out"))
    one_line_error(result, str(folder / "config.json"), fragment)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_compress_refuses_garbage_config_json_in_one_line(export, tmp_path):
    folder = export("matformer")
    (folder / "config.json").write_text('{"format": "nas-subnet/1", "family": ')
    one_line_error(run_nas("compress", "prune", "--model", str(folder), "--target-params",
                           "0.5", "--out", str(tmp_path / "out")),
                   str(folder / "config.json"), "is not valid JSON")


def test_a_resolution_that_no_weight_bounds_is_refused(tmp_path: Path) -> None:
    """An OFA subnet's input side is not a weight size, so the file cannot bound it: a
    tampered one would make every forward pass allocate gigapixel images."""
    supernet = nas.get_supernet("ofa")
    folder = nas.save_subnet(supernet.extract(supernet.space.smallest()), tmp_path / "ofa",
                             family="ofa")
    edit_config(folder, lambda d: d["subnet_config"].update(resolution=50_000))
    assert "resolution must be from 8 to 1024" in refused(folder)
