"""The ``cuda`` target: CUDA-event timing on a GPU, a clear error without one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas import get_hardware

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def test_the_target_is_registered_as_measured() -> None:
    target = get_hardware("cuda")
    provenance = target.provenance()
    assert provenance.method == "measured"
    assert "CUDA events" in provenance.notes[0]
    assert target.fingerprint.startswith("cuda:")


@no_cuda
def test_without_cuda_a_measurement_is_a_one_line_error(supernet, task) -> None:
    config = supernet.space.sample(np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"no CUDA device on this machine .* remote:HOST:PORT"):
        get_hardware("cuda").latency_ms(supernet, config, task)
    assert "no CUDA device" in get_hardware("cuda").provenance().notes[-1]


@needs_cuda
def test_a_real_subnet_is_timed_on_the_gpu(supernet, task) -> None:
    config = supernet.space.sample(np.random.default_rng(0))
    assert get_hardware("cuda").latency_ms(supernet, config, task) > 0
