"""Fixtures shared by test modules; a module that defines its own (a stand-in task, a
freshly initialised supernet) overrides these."""

from __future__ import annotations

import pytest

import nas


@pytest.fixture(scope="session")
def supernet() -> nas.Supernet:
    """The shipped HAT SuperTransformer (trained G2P checkpoint)."""
    return nas.get_supernet("hat")


@pytest.fixture(scope="session")
def task() -> nas.Task:
    """The built-in grapheme-to-phoneme task."""
    return nas.get_task("g2p-cmudict")
