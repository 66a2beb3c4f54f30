"""The core types: search space, canonical configs and their conversions."""

import json

import numpy as np
import optuna
import pytest

from nas import Condition, Config, Gene, SearchSpace
from nas.supernets import G2P_SPACE, WMT_SPACE


@pytest.fixture
def space() -> SearchSpace:
    return G2P_SPACE.build()


def test_inactive_decoder_layer_genes_are_dropped(space):
    values = space.largest().to_dict()
    values["decoder.layers"] = 1
    config = space.config(values)
    assert "decoder.0.ffn_dim" in config
    assert not any(name.startswith(("decoder.1.", "decoder.2.", "decoder.3.")) for name in config)


def test_configs_that_differ_only_in_inactive_genes_hash_equal(space):
    a = space.largest().to_dict()
    b = dict(a)
    a["decoder.layers"] = b["decoder.layers"] = 2
    b["decoder.3.ffn_dim"] = 128  # inactive with two decoder layers
    assert space.config(a) == space.config(b)
    assert space.config(a).key == space.config(b).key
    assert hash(space.config(a)) == hash(space.config(b))


def test_key_is_stable_across_processes(space):
    # sha256 of the canonical JSON, not Python's salted hash()
    assert space.smallest().key == space.config(json.loads(space.smallest().to_json())).key
    assert len(space.smallest().key) == 16


@pytest.mark.parametrize("seed", range(20))
def test_vector_round_trip(space, seed):
    config = space.sample(np.random.default_rng(seed))
    vector = space.to_vector(config)
    lower, upper = space.bounds()
    assert ((vector >= lower) & (vector <= upper)).all()
    assert space.from_vector(vector) == config


def test_many_vectors_at_once_match_one_at_a_time(space):
    # random rows, inactive genes included: what a genetic algorithm's offspring look like
    rng = np.random.default_rng(0)
    _, upper = space.bounds()
    rows = rng.integers(0, upper + 1, size=(200, len(space)))
    configs = space.from_vectors(rows)
    assert configs == [space.from_vector(row) for row in rows]
    assert space.canonical_vectors(rows).tolist() == [space.to_vector(c).tolist() for c in configs]
    assert space.from_vectors(np.zeros((0, len(space)), dtype=int)) == []
    rows[3, 0] = upper[0] + 1
    with pytest.raises(ValueError, match="outside the bounds"):
        space.from_vectors(rows)
    with pytest.raises(ValueError, match="shape"):
        space.canonical_vectors(rows[0])


def test_json_and_dict_round_trip(space):
    config = space.sample(np.random.default_rng(3))
    assert space.from_json(config.to_json()) == config
    assert space.config(config.to_dict()) == config


def test_features_have_fixed_length_and_zero_for_inactive(space):
    small, large = space.smallest(), space.largest()
    f_small, f_large = space.to_features(small), space.to_features(large)
    assert f_small.shape == f_large.shape == (len(space.feature_names),)
    index = space.feature_names.index("decoder.3.ffn_dim")
    assert f_small[index] == 0.0 and f_large[index] == 512.0


def test_optuna_define_by_run_suggests_only_active_genes(space):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        config = space.suggest(trial)
        assert set(trial.params) == set(config)
        assert trial.params["decoder.layers"] == config["decoder.layers"]
    distributions = space.optuna_distributions()
    assert set(distributions) == set(space.names)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"nope": 1}, "does not have"),
        ({"encoder.embed_dim": 64}, "missing gene"),
        ({"encoder.embed_dim": 65}, "must be one of"),
    ],
)
def test_invalid_configs_are_rejected_with_a_clear_message(space, values, message):
    full = {**space.smallest().to_dict(), **values}
    if "missing" in message:
        full = values
    with pytest.raises(ValueError, match=message):
        space.config(full)


def test_vector_out_of_bounds_is_rejected(space):
    vector = space.to_vector(space.largest())
    vector[0] = 99
    with pytest.raises(ValueError, match="outside the bounds"):
        space.from_vector(vector)


def test_condition_must_refer_to_an_earlier_gene():
    with pytest.raises(ValueError, match="declared before"):
        SearchSpace("bad", [Gene("a", (1, 2), Condition("b", 2)), Gene("b", (1, 2))])


def test_cardinality_counts_canonical_configs():
    space = SearchSpace(
        "tiny",
        [Gene("n", (1, 2)), Gene("x0", (0, 1, 2)), Gene("x1", (0, 1), Condition("n", 2))],
    )
    # n=1: 3 configs; n=2: 3*2 configs
    assert space.cardinality() == 9
    seen = {space.sample(np.random.default_rng(s)) for s in range(400)}
    assert len(seen) == 9


def test_spec_round_trip():
    space = WMT_SPACE.build()
    again = SearchSpace.from_spec(json.loads(json.dumps(space.to_spec())))
    assert again.genes == space.genes
    config = space.sample(np.random.default_rng(0))
    assert again.config(config.to_dict()) == config


def test_config_is_a_read_only_mapping(space):
    config = space.smallest()
    assert isinstance(config, Config)
    assert config["decoder.layers"] == 1
    with pytest.raises(TypeError):
        config["decoder.layers"] = 2  # type: ignore[index]
