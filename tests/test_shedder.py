"""Mamba-Shedder on tiny Mamba-2 LMs: masking equals extraction, the greedy search's
choices can be audited and beat random removal, targets stop it, recovery helps, and bad
requests fail with one line."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch

from nas.compress._shedder import (
    Structure,
    calibration_loss,
    candidates,
    extract,
    masked,
    param_fraction,
    parse_spec,
    recover,
    shed,
)
from nas.supernets._export import save_subnet
from nas.supernets.mamba import FAMILY, MambaLM
from nas.supernets.tasks._lm import PydocLMTask
from tests.test_mamba_model import reload_in_fresh_process

TINY = dict(d_model=16, d_state=8, d_conv=4, expand=2, headdim=8, chunk_size=8)
PLANTED = (1, 4)
"""Blocks of the trained model whose out-projection stays (near) zero: near-useless."""


def tiny(blocks: list[str], seed: int = 0) -> MambaLM:
    torch.manual_seed(seed)
    return MambaLM(blocks=blocks, **TINY).eval()


def tokens(n: int = 4, length: int = 21, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, length), generator=torch.Generator().manual_seed(seed))


def pydoc_windows(split: str, n: int, context: int = 32) -> torch.Tensor:
    """``n`` windows of ``context + 1`` bytes of the pydoc-lm task's ``split``."""
    inputs, targets = PydocLMTask(context=context).windows(split, limit=n)
    return torch.cat([inputs, targets[:, -1:]], dim=1)


@pytest.fixture(scope="module")
def trained() -> tuple[MambaLM, torch.Tensor, torch.Tensor]:
    """A 6-block model trained briefly on pydoc bytes with blocks 1 and 4 planted as
    near-useless (out-projection frozen at zero in training, then set to 1e-3 noise), its
    calibration windows (validation split) and training windows."""
    torch.manual_seed(0)
    model = MambaLM(blocks=["full"] * 6, d_model=24, d_state=8, headdim=12, chunk_size=16)
    for i in PLANTED:
        weight = model.blocks[i].mixer.out_proj.weight
        with torch.no_grad():
            weight.zero_()
        weight.requires_grad_(False)
    train = pydoc_windows("train", 256)
    recover(model, train, steps=80, lr=4e-3, batch_size=8, progress=False)
    with torch.no_grad():
        for i in PLANTED:
            model.blocks[i].mixer.out_proj.weight.normal_(0.0, 1e-3)
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval(), pydoc_windows("validation", 16), train


@pytest.mark.parametrize("removed", [
    ["block.1"], ["ssm.0"], ["ssm.0", "ssm.3", "block.1"], ["block.0", "ssm.0", "ssm.1"],
])
def test_masked_model_equals_extracted_model(removed: list[str]) -> None:
    model = tiny(["full", "full", "no_ssm", "full"])
    x = tokens()
    with torch.no_grad(), masked(model, removed):
        expected = model(x)
    extracted = extract(model, removed)
    with torch.no_grad():
        got = extracted(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    kept = sum(p.numel() for p in extracted.parameters())
    assert kept < sum(p.numel() for p in model.parameters())
    assert kept / sum(p.numel() for p in model.parameters()) == param_fraction(model, removed)
    names = {n for n, _ in extracted.named_parameters()}
    for s in map(Structure.parse, removed):
        if s.kind == "block":
            assert extracted.subnet_config()["blocks"][s.index] == "absent"
            assert not any(n.startswith(f"blocks.{s.index}.") for n in names)
        else:
            assert f"blocks.{s.index}.mixer.A_log" not in names
            assert f"blocks.{s.index}.mixer.D" not in names
            assert f"blocks.{s.index}.mixer.dt_bias" not in names


def test_extract_leaves_the_source_and_flags_alone() -> None:
    model = tiny(["full", "full"])
    x = tokens(n=1)
    with torch.no_grad():
        before = model(x)
    extract(model, ["block.0", "ssm.1"])
    with torch.no_grad():
        assert torch.equal(model(x), before)
    with masked(model, ["ssm.1"]):  # extraction also honours flags already set
        from_flags = extract(model)
    assert from_flags.subnet_config()["blocks"] == ["full", "no_ssm"]


def test_masked_block_is_the_identity() -> None:
    model = tiny(["full", "full", "full"])
    seen = {}
    model.blocks[1].register_forward_hook(lambda mod, inp, out: seen.update(i=inp[0], o=out))
    with torch.no_grad(), masked(model, ["block.1"]):
        model(tokens(n=2))
    assert torch.equal(seen["o"], seen["i"])
    with torch.no_grad():
        model(tokens(n=2))
    assert not torch.equal(seen["o"], seen["i"])  # unmasked, it does change its input


def test_masking_is_restored_even_on_error() -> None:
    model = tiny(["full", "full"])
    with pytest.raises(RuntimeError), masked(model, ["block.0", "ssm.1"]):
        assert model.blocks[0].mask_block and model.blocks[1].mixer.mask_ssm
        raise RuntimeError("inside")
    assert not model.blocks[0].mask_block and not model.blocks[1].mixer.mask_ssm
    with masked(model, ["ssm.0"]), masked(model, ["block.1"]):  # nested: additive
        assert model.blocks[0].mixer.mask_ssm and model.blocks[1].mask_block
    assert not model.blocks[0].mixer.mask_ssm and not model.blocks[1].mask_block


def test_candidates_follow_removals() -> None:
    model = tiny(["full", "no_ssm", "absent", "full"])
    names = [s.name for s in candidates(model)]
    assert names == ["block.0", "block.1", "block.3", "ssm.0", "ssm.3"]
    assert [s.name for s in candidates(model, ["block.0"])] == ["block.1", "block.3", "ssm.3"]
    assert [s.name for s in candidates(model, ["ssm.3"], kind="ssm")] == ["ssm.0"]


def test_each_greedy_step_is_the_minimum_when_recomputed(trained) -> None:
    model, calibration, _ = trained
    result = shed(model, remove="blocks:2,ssm:2", calibration=calibration, progress=False)
    assert [step.kind for step in result.steps] == ["block", "block", "ssm", "ssm"]
    assert result.evaluations == 6 + 5 + 4 + 3 and result.stopped == "count"
    assert result.baseline == pytest.approx(calibration_loss(model, calibration), abs=1e-6)
    for i, step in enumerate(result.steps):
        before = list(result.removed[:i])
        pool = candidates(model, before, kind=step.kind)
        assert list(step.scores) == [c.name for c in pool]
        recomputed = {}
        for c in pool:
            with masked(model, [*before, c]):
                recomputed[c.name] = calibration_loss(model, calibration)
        for name, value in recomputed.items():
            assert step.scores[name] == pytest.approx(value, abs=1e-6)
        assert step.removed == min(recomputed, key=recomputed.get)
        assert step.score == min(step.scores.values())
    assert result.params_fraction == param_fraction(model, result.removed)
    json.dumps(result.as_dict())  # the audit record is JSON-able
    assert not any(b.mask_block or b.mixer.mask_ssm for b in model.blocks)  # left as it came


def test_greedy_beats_random_removal_on_planted_blocks(trained) -> None:
    model, calibration, _ = trained
    k = len(PLANTED)
    baseline = calibration_loss(model, calibration)
    greedy = shed(model, remove=f"blocks:{k}", calibration=calibration, progress=False)
    assert sorted(Structure.parse(n).index for n in greedy.removed) == list(PLANTED)
    generator = torch.Generator().manual_seed(0)
    random_losses = []
    for _ in range(10):
        subset = torch.randperm(6, generator=generator)[:k].tolist()
        with masked(model, [f"block.{i}" for i in subset]):
            random_losses.append(calibration_loss(model, calibration))
    median = statistics.median(random_losses)
    # the useful blocks matter (random removal hurts), the planted ones nearly do not
    assert median > baseline + 0.1
    assert greedy.steps[-1].score < baseline + 0.01
    assert greedy.steps[-1].score < median - 0.1


def test_params_target_stops_the_search(trained) -> None:
    model, calibration, _ = trained
    one_block = param_fraction(model, ["block.0"])
    result = shed(model, remove="blocks:4", calibration=calibration,
                  target_params_fraction=one_block, progress=False)
    assert len(result.removed) == 1 and result.stopped == "target" and result.target_met
    unmet = shed(model, remove="blocks:1", calibration=calibration,
                 target_params_fraction=0.1, progress=False)
    assert unmet.stopped == "count" and unmet.target_met is False


def test_latency_predicate_sees_the_extracted_model(trained) -> None:
    model, calibration, _ = trained
    seen = []

    def fast_enough(candidate: MambaLM) -> bool:  # a stand-in for a latency model
        seen.append(candidate.subnet_config()["blocks"])
        return candidate.subnet_config()["blocks"].count("full") <= 4

    result = shed(model, remove="ssm:5", calibration=calibration, meets_target=fast_enough,
                  progress=False)
    assert len(result.removed) == 2 and result.stopped == "target"
    assert seen[0] == ["full"] * 6 and seen[-1].count("no_ssm") == 2


def test_custom_score_is_minimised() -> None:
    model = tiny(["full", "full", "full"])

    def prefers_block_2(m: MambaLM) -> float:  # a score that only block 2's removal lowers
        return 0.0 if m.blocks[2].mask_block else 1.0

    result = shed(model, remove="blocks:1", score=prefers_block_2, progress=False)
    assert result.removed == ("block.2",)


def test_recovery_lowers_the_loss(trained) -> None:
    model, calibration, train = trained
    pruned = extract(model, ["block.0", "block.2"])  # useful blocks: a real loss to recover
    before = calibration_loss(pruned, calibration)
    losses = recover(pruned, train, steps=25, lr=3e-3, batch_size=8, progress=False)
    after = calibration_loss(pruned, calibration)
    assert len(losses) == 25
    assert after < before - 0.05
    assert calibration_loss(model, calibration) < before  # the source was not touched


def test_extracted_model_round_trips(trained, tmp_path: Path) -> None:
    model, calibration, _ = trained
    pruned = extract(model, ["block.1", "ssm.3", "ssm.5"])
    save_subnet(pruned, tmp_path / "export", family=FAMILY)
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["subnet_config"]["blocks"] == ["full", "absent", "full", "no_ssm", "full",
                                                 "no_ssm"]
    with torch.no_grad():
        expected = pruned(calibration[:2])
    torch.testing.assert_close(reload_in_fresh_process(tmp_path, calibration[:2]), expected)


def test_parse_spec() -> None:
    assert parse_spec("blocks:2,ssm:4") == {"block": 2, "ssm": 4}
    assert parse_spec(" ssms:1 ") == {"ssm": 1}
    assert parse_spec({"block": 3}) == {"block": 3}
    assert Structure.parse("ssm.4") == Structure("ssm", 4)
    assert Structure("block", 2).name == "block.2"


@pytest.mark.parametrize(("spec", "message"), [
    ("heads:2", "unknown structure kind 'heads'"),
    ("blocks:2,attn:1", "unknown structure kind 'attn'"),
    ("blocks", "must be kind:count"),
    ("blocks:0", "must be a positive integer"),
    ("ssm:two", "must be a positive integer"),
    ("blocks:1,block:1", "names block twice"),
    ("", "must be kind:count"),
])
def test_bad_specs_raise_one_line(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_spec(spec)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("blocks", "kwargs", "message"), [
    (["full"] * 3, {"remove": "blocks:3"}, "cannot remove every block"),
    (["full", "absent", "full"], {"remove": "blocks:2"}, "cannot remove every block"),
    (["full"] * 3, {"remove": "blocks:5"}, "more blocks than the 3"),
    (["no_ssm", "no_ssm"], {"remove": "ssm:1"}, "has no SSMs to remove"),
    (["full", "no_ssm"], {"remove": "ssm:2"}, "more SSMs than the 1"),
    (["full"] * 3, {"remove": "blocks:2,ssm:2"}, "may find only 1"),
    (["full"] * 3, {"remove": "mlp:1"}, "unknown structure kind 'mlp'"),
    (["full"] * 3, {"remove": "ssm:1", "calibration": None}, "give calibration windows"),
    (["full"] * 3, {"remove": "ssm:1", "score": lambda m: 0.0}, "not both"),
    (["full"] * 3, {"remove": "ssm:1", "target_params_fraction": 0.0}, r"in \(0, 1\]"),
    (["full"] * 3, {"remove": "ssm:1", "target_params_fraction": 1.5}, r"in \(0, 1\]"),
    (["full"] * 3, {"remove": "ssm:1", "calibration": torch.zeros(4)}, "calibration must"),
])
def test_bad_searches_raise_one_line(blocks: list[str], kwargs: dict, message: str) -> None:
    arguments = {"calibration": tokens(n=2, length=9), "progress": False, **kwargs}
    if arguments["calibration"] is None:
        del arguments["calibration"]
    with pytest.raises(ValueError, match=message) as info:
        shed(tiny(blocks), **arguments)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("removed", "message"), [
    (["head.1"], "unknown structure kind 'head'"),
    (["ssm.x"], "must be a non-negative integer"),
    (["block3"], "kind.index"),
    (["block.9"], r"not in the model: blocks are 0\.\.2"),
    (["ssm.1"], "block 1 has no SSM"),
    (["block.2"], "already absent"),
    (["block.0", "block.1"], "cannot remove every block"),
])
def test_bad_structures_raise_one_line(removed: list[str], message: str) -> None:
    model = tiny(["full", "no_ssm", "absent"])
    for attempt in (lambda: extract(model, removed), lambda: masked(model, removed).__enter__()):
        with pytest.raises(ValueError, match=message) as info:
            attempt()
        assert "\n" not in str(info.value)
    assert not model.blocks[0].mask_block  # a refused mask sets nothing


def test_other_models_and_bad_recovery_inputs_are_refused() -> None:
    with pytest.raises(TypeError, match="must be a MambaLM"):
        shed(torch.nn.Linear(2, 2), remove="blocks:1", calibration=tokens())
    model = tiny(["full"])
    with pytest.raises(ValueError, match="windows must be an integer tensor"):
        recover(model, torch.randn(4, 8), steps=1)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        recover(model, tokens(), steps=0)
