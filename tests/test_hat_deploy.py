"""A HAT subnet as it deploys: encoder + decoder-step graphs with the key/value cache as
inputs and outputs, the greedy loop printed in the model card run without `nas`, and
`nas hw check` timing those graphs in ONNX Runtime."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import nas
from nas._evaluator import Evaluator
from nas._hardware import get_hardware
from nas.cli import app
from nas.studies import _decoding_loop as loop
from nas.studies import load_study
from nas.studies._graphs import write_decoding_graphs
from nas.studies._model_card import DECODING_HEADING
from nas.supernets.hat import decoding_graphs

pytest.importorskip("onnxruntime")

STUDY = "deploy"
# The smallest subnet with a second decoder layer of other widths: the cache's shapes
# differ per layer (2 heads, then 4), and so do the encoder-decoder memories (1 and 2
# encoder layers attended).
TINY = {"decoder.layers": 2, "decoder.1.ffn_dim": 128, "decoder.1.heads": 4,
        "decoder.1.ende_heads": 4, "decoder.1.ende_layers": 2}
WORDS = slice(16, 116)  # test words the export did not check itself on
FEW_RUNS = ["--warmup", "1", "--min-repeats", "6", "--max-repeats", "6"]

DRIVER = """
import json, sys
spec, vocab = load_decoding(sys.argv[1])
files = spec["files"][sys.argv[2]]
run = onnx_runner if sys.argv[2] == "onnx" else torchscript_runner
encoder, step = run(f"{sys.argv[1]}/{files['encoder']}"), run(f"{sys.argv[1]}/{files['step']}")
words = json.loads(sys.argv[3])
tokens = greedy_decode(encoder, step, encode_words(words, vocab), spec, vocab)
assert not any(m == "nas" or m.startswith("nas.") for m in sys.modules)
print(json.dumps({"tokens": tokens.tolist(), "torch": "torch" in sys.modules}))
"""


def nas_cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def tiny_config(supernet: nas.Supernet) -> nas.Config:
    return supernet.space.config({**supernet.space.smallest().to_dict(), **TINY})


def card_blocks(card: str) -> list[str]:
    """The python blocks of the card's decoding section: the loop, then its use."""
    section = card.split(DECODING_HEADING, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def reference_tokens(model: torch.nn.Module, task: nas.Task, words: list[str]) -> np.ndarray:
    """The library's greedy decoding, bounded as the task bounds it."""
    src = task.encode_words(words)
    return model.greedy_decode(src, max_len=min(src.shape[1] + 4, model.max_positions)).numpy()


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory, supernet, task) -> tuple[str, int]:
    """A real HAT study (one random subnet scored on 20 words) and the tiny subnet scored
    by the search's evaluator, added as a trial: (storage URL, its trial number)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('deploy') / 'studies.db'}"
    result = nas_cli("search", "--supernet", "hat", "--hw", "rpi4", "--budget", "100ms",
                     "--evals", "1", "--eval-limit", "20", "--algorithm", "random",
                     "--study", STUDY, "--storage", url)
    assert result.exit_code == 0, result.output
    study = load_study(STUDY, url)
    evaluator = Evaluator(supernet, task, get_hardware("rpi4"), eval_limit=20)
    config = tiny_config(supernet)
    number = study.add(config, evaluator.evaluate(config), feasible=True,
                       cache_key=evaluator.cache_key(config))
    return url, number


@pytest.fixture(scope="module")
def exported(storage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    url, number = storage
    out = tmp_path_factory.mktemp("export") / "subnet"
    result = nas_cli("export", "--study", STUDY, "--trial", str(number), "--out", str(out),
                     "--storage", url, "--format", "safetensors,onnx,torchscript")
    assert result.exit_code == 0, result.output
    return out


def test_graph_modules_decode_as_greedy_decode(supernet, task):
    """The two graphs, run eagerly by the card's loop, give greedy_decode's tokens."""
    model = supernet.extract(tiny_config(supernet)).eval()
    graphs = decoding_graphs(model)
    assert graphs.cache == ((2, model.head_dim), (4, model.head_dim))

    def eager(module):
        def run(*arrays):
            with torch.no_grad():
                return [t.numpy() for t in module(*map(torch.from_numpy, arrays))]
        return run

    words = list(task.words("test")[:40])
    tokens = loop.greedy_decode(eager(graphs.encoder), eager(graphs.step),
                                task.encode_words(words).numpy(), {
                                    "cache": graphs.cache, "max_positions": model.max_positions},
                                task.vocab_document())
    np.testing.assert_array_equal(tokens, reference_tokens(model, task, words))
    with pytest.raises(ValueError, match="the step takes 4 memory and 4 cache tensors"):
        graphs.step(torch.ones(1, 1, dtype=torch.long), torch.zeros(1, 3, dtype=torch.bool))


def test_graphs_whose_tokens_differ_from_greedy_decode_are_refused(supernet, task, tmp_path):
    model = supernet.extract(tiny_config(supernet)).eval()
    words = list(task.words("test")[:4])
    wrong = torch.from_numpy(reference_tokens(model, task, words)).roll(1, dims=1)
    with pytest.raises(ValueError, match="greedy decoding over the torchscript graphs gives "
                                         "other tokens than the model's greedy_decode"):
        write_decoding_graphs(decoding_graphs(model), task.encode_words(words), wrong,
                              task.vocab_document(), tmp_path, ["torchscript"])


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["onnx", "torchscript"])
def test_the_card_loop_translates_test_words_as_greedy_decode_without_nas(
        exported, task, tmp_path, runtime):
    config = json.loads((exported / "config.json").read_text())
    model = nas.load_subnet(exported)
    spec = config["decoding"]
    assert spec["cache"] == [[2, model.head_dim], [4, model.head_dim]]
    assert spec["checks"][runtime]["greedy_tokens_equal"] is True
    assert (exported / spec["vocab"]).is_file()
    loop_code, usage = card_blocks((exported / "MODEL_CARD.md").read_text())

    words = list(task.words("test")[WORDS])
    script = tmp_path / "card_loop.py"
    script.write_text(loop_code + DRIVER)
    fresh = subprocess.run([sys.executable, str(script), str(exported), runtime,
                            json.dumps(words)], capture_output=True, text=True, timeout=120,
                           cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    answer = json.loads(fresh.stdout)
    np.testing.assert_array_equal(np.array(answer["tokens"]),
                                  reference_tokens(model, task, words))
    assert answer["torch"] is (runtime == "torchscript")  # ONNX Runtime alone

    if runtime == "onnx":  # the card's own example, as a user pastes it in the folder
        shown = subprocess.run([sys.executable, "-c", loop_code + usage], capture_output=True,
                               text=True, timeout=120, cwd=exported)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.splitlines() == [
            " ".join(p) for p in task.transcribe(model, ["hello", "world"])]


@pytest.mark.slow
def test_hw_check_times_the_deployed_onnx_graphs(storage):
    url, number = storage
    result = nas_cli("hw", "check", "--study", STUDY, "--storage", url, "--on", "local-cpu",
                     *FEW_RUNS, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert number in [row["trial"] for row in document["subnets"]]
    assert re.fullmatch(r"onnxruntime \S+: encoder \+ decoder-step graphs, \d+ greedy steps "
                        r"with the cache", document["runtime"]), document["runtime"]
    assert document["note"].startswith(f"Measured: {document['runtime']}.")
    assert document["environment"]["runtime"] == document["runtime"]
    assert all(row["measured_ms"] > 0 for row in document["subnets"])
