"""Export of dense subnets: two files rebuild the model; bad files give clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import nas
from nas.supernets import G2P_SPACE, HATSuperTransformer


@pytest.fixture(scope="module")
def supernet() -> HATSuperTransformer:
    torch.manual_seed(0)
    return HATSuperTransformer(G2P_SPACE, src_vocab=31, tgt_vocab=45).eval()


@pytest.fixture
def exported(supernet, tmp_path):
    config = supernet.space.sample(np.random.default_rng(1))
    nas.save_subnet(supernet.extract(config), tmp_path / "sub", family="hat",
                    metadata={"trial": 7})
    return config, tmp_path / "sub"


def test_two_files_rebuild_an_equal_model(supernet, exported):
    config, folder = exported
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    model = nas.load_subnet(folder)
    supernet.activate(config)
    src = torch.randint(4, 31, (2, 8))
    prev = torch.randint(4, 45, (2, 6))
    with torch.inference_mode():
        assert torch.allclose(model(src, prev), supernet(src, prev), atol=1e-5)
    assert json.loads((folder / "config.json").read_text())["metadata"] == {"trial": 7}


def test_existing_export_is_kept_unless_overwrite(supernet, exported):
    config, folder = exported
    before = (folder / "model.safetensors").read_bytes()
    other = supernet.extract(supernet.space.smallest())
    with pytest.raises(FileExistsError, match="already holds"):
        nas.save_subnet(other, folder, family="hat")
    assert (folder / "model.safetensors").read_bytes() == before
    nas.save_subnet(other, folder, family="hat", overwrite=True)
    assert (folder / "model.safetensors").read_bytes() != before


def test_corrupt_weights_give_a_clear_error(exported):
    _, folder = exported
    (folder / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors"):
        nas.load_subnet(folder)


def test_weights_of_another_subnet_are_refused(supernet, exported, tmp_path):
    _, folder = exported
    nas.save_subnet(supernet.extract(supernet.space.largest()), tmp_path / "big", family="hat")
    big = (tmp_path / "big" / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(big)
    with pytest.raises(ValueError, match="does not match config.json"):
        nas.load_subnet(folder)


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (None, FileNotFoundError, "config.json is missing"),
        ("{not json", ValueError, "not valid JSON"),
        ('{"format": "other"}', ValueError, "not a subnet export"),
        ('{"format": "nas-subnet/1", "family": "hat"}', ValueError,
         "lacks the key 'subnet_config'"),
        ('{"format": "nas-subnet/1", "family": "nope", "subnet_config": {}}', ValueError,
         "unknown subnet family 'nope'"),
    ],
)
def test_bad_config_json_gives_a_clear_error(exported, content, error, message):
    _, folder = exported
    if content is None:
        (folder / "config.json").unlink()
    else:
        (folder / "config.json").write_text(content)
    with pytest.raises(error, match=message):
        nas.load_subnet(folder)
