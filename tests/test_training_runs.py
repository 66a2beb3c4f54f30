"""Training runs at scale: resuming a killed run, several ranks, torn states, bad input."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from nas.supernets import train_and_save
from nas.supernets.training import _distributed, _state
from nas.supernets.training._state import RunFolder
from tests.cli_helpers import nas, one_line_error

ENV = dict(os.environ, OMP_NUM_THREADS="1")


def _nas(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nas", *args], env=ENV, capture_output=True,
                          text=True, timeout=600, check=True)


def _weights(stem: Path) -> dict[str, torch.Tensor]:
    return load_file(str(stem.with_suffix(".safetensors")))


def _kill_after(args: list[str], run: Path, step: int) -> None:
    """Start ``nas ARGS`` and SIGKILL it as soon as its state of ``step`` is saved."""
    process = subprocess.Popen([sys.executable, "-m", "nas", *args], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (run / f"step-{step:07d}").is_dir():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.slow
@pytest.mark.parametrize(("supernet", "steps", "kill_steps"), [
    ("sortednet", 20, range(8, 20, 4)),
    ("ofa", 32, range(12, 32, 4)),  # after progressive shrinking built its teacher (step 11)
])
def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(
    tmp_path: Path, supernet: str, steps: int, kill_steps: range
) -> None:
    kill = random.Random(f"{supernet}-{time.time()}").choice(kill_steps)
    args = ["train", "--supernet", supernet, "--steps", str(steps), "--batch-size", "16",
            "--save-every", "4"]
    _nas(*args, "--out", str(tmp_path / "whole"))
    _kill_after([*args, "--out", str(tmp_path / "killed")], tmp_path / "killed.run", kill)
    assert not (tmp_path / "killed.safetensors").exists()
    _nas("train", "--resume", str(tmp_path / "killed.run"))
    whole, resumed = _weights(tmp_path / "whole"), _weights(tmp_path / "killed")
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole), f"killed after step {kill}"
    recipe = json.loads((tmp_path / "killed.json").read_text())["recipe"]
    assert recipe["resumed_at"][0] >= kill


@pytest.mark.slow
def test_two_ranks_train_the_weights_of_one_process(tmp_path: Path) -> None:
    """Two Gloo ranks of two micro-batches each, against one process: every tensor
    agrees to 0.1 % of its norm (see test_training's micro-batch test for why not to
    the bit)."""
    args = ["train", "--supernet", "sortednet", "--steps", "8", "--batch-size", "32"]
    _nas(*args, "--out", str(tmp_path / "one"))
    _nas(*args, "--out", str(tmp_path / "two"), "--nproc", "2", "--accumulate", "2")
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for name, a in one.items():
        b = two[name]
        assert torch.linalg.norm(a.float() - b.float()) <= 1e-3 * torch.linalg.norm(a.float())
    execution = json.loads((tmp_path / "two.json").read_text())["recipe"]["execution"]
    assert execution == {"device": "cpu", "precision": "fp32", "accumulate": 2, "workers": 0,
                         "world_size": 2, "backend": "gloo"}


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    """A short sortednet run with states after steps 2, 4 and 6 (the last two kept)."""
    train_and_save("sortednet", steps=6, batch_size=16, save_every=2, out=tmp_path / "net",
                   progress=False)
    return tmp_path / "net"


def test_a_torn_state_gives_way_to_the_one_before(
    finished: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = RunFolder.open(finished.with_name("net.run"))
    assert [p.name for p in run._steps()] == ["step-0000004", "step-0000006"]
    newest = run.path / "step-0000006" / "weights.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    (run.path / "step-0000008.partial").mkdir()
    state = run.latest()
    assert state is not None and state.step == 4
    assert "step-0000008.partial" in caplog.text and "step-0000006" in caplog.text
    older = run.path / "step-0000004" / "state.json"
    older.write_text("{")
    with pytest.raises(ValueError, match="no state in .* reads back whole"):
        run.latest()


def test_a_write_killed_halfway_leaves_the_last_good_state(
    finished: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = RunFolder.open(finished.with_name("net.run"))
    state = run.latest()
    assert state is not None
    calls = []

    def dies_on_the_second_file(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(args[0])
        if len(calls) == 2:
            raise OSError("killed")
        return save(*args, **kwargs)

    save = _state._save
    monkeypatch.setattr(_state, "_save", dies_on_the_second_file)
    state.step = 8
    with pytest.raises(OSError):
        run.save(state)
    monkeypatch.undo()
    assert [p.name for p in run._steps()] == ["step-0000004", "step-0000006"]
    reread = run.latest()
    assert reread is not None and reread.step == 6


def test_resume_skips_a_torn_state_and_still_ends_on_the_same_weights(finished: Path) -> None:
    whole = _weights(finished)
    for path in (finished.with_suffix(".safetensors"), finished.with_suffix(".json")):
        path.unlink()  # killed between its last state and its checkpoint
    torn = finished.with_name("net.run") / "step-0000006" / "optimizer.safetensors"
    torn.write_bytes(b"")
    result = nas("train", "--resume", str(finished.with_name("net.run")))
    assert result.exit_code == 0, result.output
    resumed = _weights(finished)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    recipe = json.loads(finished.with_suffix(".json").read_text())["recipe"]
    assert recipe["resumed_at"] == [4]


def test_resume_refuses_what_would_not_continue_the_run(finished: Path, tmp_path: Path) -> None:
    run = finished.with_name("net.run")
    one_line_error(nas("train", "--resume", str(run), "--steps", "9"),
                   "--resume continues a run with its own settings; drop --steps")
    one_line_error(nas("train", "--resume", str(tmp_path)), "is not a training run folder")
    one_line_error(nas("train", "--resume", str(run)), "finished already", "net.safetensors")
    for path in (finished.with_suffix(".safetensors"), finished.with_suffix(".json")):
        path.unlink()
    document = json.loads((run / "run.json").read_text())
    document["settings"]["warmup"] = 7
    (run / "run.json").write_text(json.dumps(document))
    one_line_error(nas("train", "--resume", str(run)), "was started with warmup=7",
                   "this version's sortednet recipe")
    document["settings"]["warmup"] = None
    document["settings"]["world_size"] = 2
    (run / "run.json").write_text(json.dumps(document))
    one_line_error(nas("train", "--resume", str(run), "--nproc", "1"),
                   "trains on 2 rank(s); resume it with --nproc 2")


def test_a_new_run_refuses_to_replace_one(finished: Path) -> None:
    shutil.move(finished.with_suffix(".safetensors"), finished.with_name("kept.safetensors"))
    finished.with_suffix(".json").unlink()
    one_line_error(nas("train", "--supernet", "sortednet", "--out", str(finished)),
                   "net.run", "already holds files")


@pytest.mark.parametrize(("args", "fragments"), [
    (["--nproc", "999"], ("--nproc", "usable core(s)")),
    (["--precision", "fp16"], ("fp16 training needs a CUDA device",)),
    (["--accumulate", "40", "--batch-size", "32"], ("cannot be split into 1 rank(s) x 40",)),
])
def test_executions_this_machine_cannot_run(
    tmp_path: Path, args: list[str], fragments: tuple[str, ...]
) -> None:
    one_line_error(nas("train", "--supernet", "sortednet", "--steps", "2",
                       "--out", str(tmp_path / "x"), *args), *fragments)
    assert not any(tmp_path.iterdir())  # refused before writing anything


def test_plain_models_refuse_the_options_of_supernets() -> None:
    one_line_error(nas("train", "--model", "moe-pydoc", "--nproc", "2"),
                   "plain models train in one fp32 process on the CPU; drop --nproc")


def _image_folder(root: Path) -> Path:
    """Two classes of six 10x10 grey images, dark and bright."""
    for c, name in enumerate(("dark", "bright")):
        (root / name).mkdir(parents=True)
        for i in range(6):
            pixels = np.random.default_rng([c, i]).normal(60 + 120 * c, 20, (10, 10))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L").save(
                root / name / f"{i}.png")
    return root


def test_nas_train_reads_the_users_data_and_resumes_on_it(tmp_path: Path) -> None:
    data = _image_folder(tmp_path / "shapes")
    out = tmp_path / "mine"
    result = nas("train", "--supernet", "sortednet", "--data", str(data), "--steps", "4",
                 "--batch-size", "8", "--save-every", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads(out.with_suffix(".json").read_text())["task"] == "images:shapes"
    settings = json.loads((tmp_path / "mine.run" / "run.json").read_text())["settings"]
    assert settings["data"] == str(data.resolve())
    whole = _weights(out)
    for path in (out.with_suffix(".safetensors"), out.with_suffix(".json")):
        path.unlink()
    shutil.rmtree(tmp_path / "mine.run" / "step-0000004")
    result = nas("train", "--resume", str(tmp_path / "mine.run"))
    assert result.exit_code == 0, result.output
    resumed = _weights(out)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_bad_user_data_fails_in_one_line_before_writing(tmp_path: Path) -> None:
    out = str(tmp_path / "x")
    one_line_error(nas("train", "--supernet", "sortednet", "--data", str(tmp_path / "nope"),
                       "--out", out), "--data", "does not exist")
    (tmp_path / "notes.txt").write_text("not images")
    one_line_error(nas("train", "--supernet", "sortednet", "--data",
                       str(tmp_path / "notes.txt"), "--out", out), "notes.txt")
    one_line_error(nas("train", "--model", "moe-pydoc", "--data", str(tmp_path)),
                   "drop --data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_the_ranks_get_the_command_without_nproc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--nproc`` relaunches the parsed command (not ``sys.argv``, which is pytest's
    here) under torchrun, without ``--nproc``: the ranks must not launch again."""
    launched = []

    def launch_command(nproc: int, args: list[str]) -> tuple[list[str], dict[str, str]]:
        launched.append((nproc, args))
        return [sys.executable, "-c", "pass"], dict(os.environ)

    monkeypatch.setattr(_distributed, "launch_command", launch_command)
    out = str(tmp_path / "x")
    result = nas("train", "--supernet", "sortednet", "--nproc", "2", "--steps", "3",
                 "--out", out, "--precision", "bf16", "--force")
    assert result.exit_code == 0, result.output
    assert launched == [(2, ["train", "--supernet", "sortednet", "--steps", "3", "--out", out,
                             "--precision", "bf16", "--force"])]
