"""The grapheme-to-phoneme task: data, split, vocabularies, user files and metrics."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import nas
from nas.supernets.tasks._g2p import (
    BOS,
    EOS,
    PAD,
    G2PTask,
    cmudict_lexicon,
    edit_distance,
    read_lexicon,
    split_of,
)


@pytest.fixture(scope="module")
def task() -> G2PTask:
    built = nas.get_task("g2p-cmudict")
    assert isinstance(built, G2PTask)
    return built


class Oracle(nn.Module):
    """Knows every pronunciation: a perfect model, to pin the metrics down."""

    def __init__(self, task: G2PTask, *, silent: bool = False) -> None:
        super().__init__()
        self.task, self.silent = task, silent
        lexicon = cmudict_lexicon()
        self.answers = {}
        for split in ("validation", "test"):
            words = task.words(split)
            src = task.encode_words(words)
            for word, row in zip(words, src.tolist(), strict=True):
                key = tuple(t for t in row if t != PAD)
                self.answers[key] = [*task.tgt_vocab.encode(lexicon[word]), EOS]

    def _target(self, row: torch.Tensor) -> list[int]:
        if self.silent:
            return [EOS]
        return self.answers[tuple(t for t in row.tolist() if t != PAD)]

    def forward(self, src: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*prev.shape, self.task.tgt_vocab_size)
        for b in range(src.shape[0]):
            for t, token in enumerate(self._target(src[b])[: prev.shape[1]]):
                logits[b, t, token] = 1.0
        return logits

    def greedy_decode(
        self, src: torch.Tensor, *, max_len: int, steps: int | None = None
    ) -> torch.Tensor:
        rows = [self._target(src[b])[:max_len] for b in range(src.shape[0])]
        out = torch.full((len(rows), max(map(len, rows))), PAD, dtype=torch.long)
        for b, row in enumerate(rows):
            out[b, : len(row)] = torch.tensor(row)
        return out


def test_registered_and_sizes(task: G2PTask) -> None:
    assert "g2p-cmudict" in nas.TASKS.names()
    assert task.name == "g2p-cmudict"
    total = sum(task.split_size(s) for s in ("train", "validation", "test"))
    assert total == len(cmudict_lexicon()) > 120_000
    assert 0.89 < task.split_size("train") / total < 0.91
    assert 0.045 < task.split_size("validation") / total < 0.055


def test_split_is_stable_and_disjoint(task: G2PTask) -> None:
    splits = {s: set(task.words(s)) for s in ("train", "validation", "test")}
    assert not splits["train"] & splits["validation"]
    assert not splits["train"] & splits["test"]
    assert not splits["validation"] & splits["test"]
    # A hash of the word alone: pinned so that every machine agrees.
    assert split_of("bedroom") == "validation"
    assert all(split_of(w) == "validation" for w in list(splits["validation"])[:100])
    # Same split and order when built from a subset in another order.
    subset = {
        w: cmudict_lexicon()[w]
        for w in sorted(task.words("validation")[:50] + task.words("train")[:500], reverse=True)
    }
    small = G2PTask(subset)
    assert small.words("validation") == task.words("validation")[:50]


def test_vocabularies_round_trip(task: G2PTask) -> None:
    assert task.tgt_vocab_size == 4 + 69  # stress digits kept
    assert task.src_vocab.itos[:4] == ("<pad>", "<bos>", "<eos>", "<unk>")
    assert list(task.src_vocab.symbols) == sorted(task.src_vocab.symbols)
    phonemes = list(cmudict_lexicon()["pronunciation"])
    ids = task.tgt_vocab.encode(phonemes)
    assert task.decode_phonemes([*ids, EOS, 5, 6]) == phonemes
    assert task.decode_phonemes(torch.tensor([BOS, *ids, EOS, PAD])) == phonemes
    assert task.src_vocab.decode(task.encode_words(["Hello"])[0]) == list("hello")
    assert task.src_vocab.encode(["é"]) == [3]  # unk


def test_token_convention(task: G2PTask) -> None:
    src, prev = task.example_inputs()
    assert src.shape[0] == prev.shape[0] == 1
    assert src[0, -1] == EOS and prev[0, 0] == BOS
    word = task.probe_word
    assert task.src_vocab.decode(src[0]) == list(word)
    assert task.decode_phonemes(prev[0]) == list(cmudict_lexicon()[word])
    assert prev.shape[1] == task.probe_steps == len(cmudict_lexicon()[word]) + 1


def test_workload_and_probe(task: G2PTask) -> None:
    w = task.workload()
    assert (w.batch, w.beam) == (1, 1)
    assert 8.0 < w.src_len < 9.0 and 6.8 < w.tgt_len < 7.8
    src, _ = task.example_inputs()
    assert abs(src.shape[1] - w.src_len) <= 1 and abs(task.probe_steps - w.tgt_len) <= 1
    calls = []

    class Spy(nn.Module):
        def greedy_decode(
            self, src: torch.Tensor, *, max_len: int, steps: int | None = None
        ) -> torch.Tensor:
            calls.append((tuple(src.shape), max_len, steps))
            return torch.zeros(1, 1, dtype=torch.long)

    task.latency_probe(Spy())()
    assert calls == [((1, src.shape[1]), task.probe_steps, task.probe_steps)]


def test_train_batches_deterministic(task: G2PTask) -> None:
    def draw(seed: int) -> list[torch.Tensor]:
        nxt = task.train_batches(batch_size=32, generator=torch.Generator().manual_seed(seed))
        return [t for _ in range(3) for t in nxt()]

    a, b, c = draw(0), draw(0), draw(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    src, prev, tgt = a[:3]
    assert src.shape[0] == 32 and prev.shape == tgt.shape
    assert torch.equal(prev[:, 1:][tgt[:, 1:] != PAD], tgt[:, :-1][tgt[:, 1:] != PAD])
    assert (src[:, -1] != PAD).any() and (tgt[:, -1] != PAD).any()  # padding trimmed
    with pytest.raises(ValueError, match="batch_size"):
        task.train_batches(batch_size=0, generator=torch.Generator())


def test_metrics_of_perfect_and_silent_models(task: G2PTask) -> None:
    perfect = task.evaluate(Oracle(task), limit=300)
    assert perfect == {"accuracy": 1.0, "per": 0.0, "n": 300.0}
    silent = task.evaluate(Oracle(task, silent=True), split="test", limit=300)
    assert silent["per"] == 1.0  # every phoneme deleted
    assert silent["accuracy"] == 0.0  # eos first, where a phoneme belongs
    assert "per" not in task.evaluate(Oracle(task), limit=10, per=False)
    with pytest.raises(ValueError, match="split"):
        task.evaluate(Oracle(task), split="dev")
    with pytest.raises(ValueError, match="limit"):
        task.evaluate(Oracle(task), limit=0)
    assert task.transcribe(Oracle(task), [task.probe_word]) == [
        list(cmudict_lexicon()[task.probe_word])
    ]


def test_loss_is_label_smoothed_cross_entropy(task: G2PTask) -> None:
    batch = task.train_batches(batch_size=16, generator=torch.Generator().manual_seed(0))()

    class Uniform(nn.Module):
        def forward(self, src: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
            return torch.zeros(*prev.shape, task.tgt_vocab_size)

    assert task.loss(Uniform(), batch).item() == pytest.approx(math.log(task.tgt_vocab_size))


def test_edit_distance() -> None:
    assert edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert edit_distance([1, 2, 3], []) == 3
    assert edit_distance([1, 3], [1, 2, 3]) == 1
    assert edit_distance([4, 5, 6], [5, 6, 7]) == 2


CLASSIC = """\
;;; # CMUdict  --  Major Version: 0.07
;;; a comment line

{entries}
HELLO  HH AH0 L OW1
HELLO(2)  HH EH0 L OW1
world W ER1 L D # trailing comment
"""


def _write_classic(path: Path, n: int = 400) -> Path:
    lexicon = cmudict_lexicon()
    words = sorted(w for w in lexicon if w.isalpha())[:n]
    entries = "\n".join(f"{w.upper()}  {' '.join(lexicon[w])}" for w in words)
    path.write_text(CLASSIC.format(entries=entries), encoding="utf-8")
    return path


def test_from_file(tmp_path: Path) -> None:
    path = _write_classic(tmp_path / "mydict.txt")
    lexicon = read_lexicon(path)
    assert len(lexicon) == 402  # alternates skipped
    assert lexicon["hello"] == ("HH", "AH0", "L", "OW1")  # the first pronunciation
    assert lexicon["world"] == ("W", "ER1", "L", "D")  # trailing comment dropped
    user = G2PTask.from_file(path)
    assert user.name == "g2p-file:mydict.txt"
    assert sum(user.split_size(s) for s in ("train", "validation", "test")) == 402
    assert "hello" in user.words(split_of("hello"))
    assert set(user.tgt_vocab.symbols) == {p for prons in lexicon.values() for p in prons}
    assert user.decode_phonemes(user.tgt_vocab.encode(lexicon["hello"])) == list(lexicon["hello"])


@pytest.mark.parametrize(
    ("line", "what"),
    [
        ("BROKEN", "expected 'WORD PH1"),
        ("HELLO(x)  HH AH0", "alternate pronunciations"),
        ("HEL(LO  HH", "unbalanced parenthesis"),
    ],
)
def test_from_file_malformed_line(tmp_path: Path, line: str, what: str) -> None:
    path = _write_classic(tmp_path / "bad.txt", n=5)
    lines = path.read_text().splitlines()
    lines.insert(3, line)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"bad\.txt:4: {what}"):
        G2PTask.from_file(path)


def test_from_file_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothere\.txt"):
        G2PTask.from_file(tmp_path / "nothere.txt")
    (tmp_path / "empty.txt").write_text(";;; nothing\n")
    with pytest.raises(ValueError, match="no dictionary entries"):
        G2PTask.from_file(tmp_path / "empty.txt")
