"""Peak memory of one inference of a dense model: weights, activations, KV cache.

- **Weights**: the bytes of every parameter and buffer (a tensor shared by several
  modules counts once).
- **Activations**: the peak of extra memory while the inference runs, measured.
  On CUDA, ``torch.cuda.max_memory_allocated`` above what was allocated before. On the
  CPU, torch keeps no allocator statistics, so :class:`AllocationTracker` sums the
  storages that the inference's operators allocate and subtracts each when it is freed
  (a weak reference on the storage), keeping the running maximum. It sees every tensor
  an operator returns (composite operators are seen decomposed), not scratch buffers a
  kernel allocates and frees inside itself; on the HAT subnets we tried its figure equals the
  allocator's own, as ``torch.profiler(profile_memory=True)`` records it (a test checks
  this on a small model). The profiler is not used here because it prints kineto
  status lines on stderr every time it starts.
- **KV cache**: computed analytically for decoders that cache self-attention keys and
  values across decoding steps (the HAT dense model); it is part of the activations,
  not extra.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from nas._supernet import SubnetShape
from nas._task import Workload
from nas.hardware._timing import torch_threads


@dataclass(frozen=True)
class MemoryReport:
    """Memory of one inference, bytes.

    ``kv_cache_bytes`` is the part of ``peak_activation_bytes`` held by the decoder's
    self-attention cache at the last step (0 where no cache applies).
    """

    weights_bytes: int
    peak_activation_bytes: int
    kv_cache_bytes: int
    device: str

    @property
    def peak_bytes(self) -> int:
        """Weights plus the activation peak: what the inference needs at its worst."""
        return self.weights_bytes + self.peak_activation_bytes


def weights_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s parameters and buffers; a shared tensor counts once."""
    seen: set[int] = set()
    total = 0
    for tensor in (*model.parameters(), *model.buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


class AllocationTracker(TorchDispatchMode):
    """Live and peak bytes of the storages that operators allocate while active.

    An operator's output counts when its storage is new: not one of the operator's
    inputs (views, in-place results) and not already counted. A finaliser on the
    storage subtracts its bytes when torch frees it. Thread-local like every dispatch
    mode: only operators called from the entering thread are seen (intra-op worker
    threads run kernels, not operators).
    """

    def __init__(self) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._sizes: dict[int, int] = {}
        self._finalizers: list[weakref.finalize] = []

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr()
                  for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self._count(tensor.untyped_storage(), inputs)
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        return out

    def _count(self, storage: torch.UntypedStorage, inputs: set[int]) -> None:
        key, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or key in inputs or key in self._sizes:
            return
        self._sizes[key] = size
        self.live_bytes += size
        self._finalizers.append(weakref.finalize(storage, self._release, key))

    def _release(self, key: int) -> None:
        self.live_bytes -= self._sizes.pop(key)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        super().__exit__(exc_type, exc, tb)
        for finalizer in self._finalizers:  # storages that outlive the block
            finalizer.detach()


def peak_activation_bytes(
    run: Callable[[], object], *, device: str | torch.device = "cpu"
) -> int:
    """The peak of extra memory while ``run()`` executes once, bytes.

    On CPU by :class:`AllocationTracker`, with one intra-op thread: which tensors an
    inference allocates does not depend on the thread count, and with more threads the
    pause between operators that the tracker adds makes torch's worker threads sleep and
    wake at every operator (about 50 times slower on a busy two-core machine). On CUDA
    from the caching allocator's peak statistic (reset first), above what was allocated
    before.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    if device.type != "cpu":
        raise ValueError(f"device must be a CPU or CUDA device, got {device}")
    with torch_threads(1), AllocationTracker() as tracker:
        run()
    return tracker.peak_bytes


def kv_cache_bytes(
    shape: SubnetShape, *, steps: int, batch: int = 1, beam: int = 1, dtype_bytes: int = 4
) -> int:
    """Bytes of the self-attention key/value cache after ``steps`` decoding steps.

    Each decoder layer caches keys and values ``(batch * beam, heads, steps, head_dim)``
    (``supernets/hat/_dense.py``, ``SelfAttention.step``), so the total is
    ``sum over decoder layers of heads * head_dim`` (the layer's ``qkv_dim``)
    ``* steps * batch * beam * 2 * dtype_bytes``. Encoder-decoder keys and values are
    computed once per sentence and not counted here. 0 for a shape without decoder
    layers, or whose decoder layers give no head width (MatFormer's LM runs one
    forward pass over its window, with no cache).

    Raises:
        ValueError: a negative count.
    """
    if min(steps, batch, beam) < 0 or dtype_bytes < 1:
        raise ValueError(f"need steps, batch, beam >= 0 and dtype_bytes >= 1, got "
                         f"{steps=}, {batch=}, {beam=}, {dtype_bytes=}")
    width = sum(layer.dims.get("qkv_dim", layer.dims["heads"] * layer.dims["head_dim"])
                for layer in shape.layers
                if layer.kind == "decoder" and {"qkv_dim", "head_dim"} & set(layer.dims))
    return width * steps * batch * beam * 2 * dtype_bytes


def measure_memory(
    model: nn.Module,
    run: Callable[[], object],
    *,
    device: str | torch.device = "cpu",
    shape: SubnetShape | None = None,
    workload: Workload | None = None,
) -> MemoryReport:
    """Weights, measured activation peak and (given ``shape`` and ``workload``) the
    analytic KV cache of one ``run()`` of ``model``.

    The cache is sized for the workload's decoding: its mean target length rounded (the
    steps a seq2seq latency probe decodes), batch and beam, in the model's dtype.
    """
    cache = 0
    if shape is not None and workload is not None:
        dtype = next(iter(model.parameters()), torch.empty(0)).element_size()
        cache = kv_cache_bytes(shape, steps=round(workload.tgt_len), batch=workload.batch,
                               beam=workload.beam, dtype_bytes=dtype)
    return MemoryReport(
        weights_bytes=weights_bytes(model),
        peak_activation_bytes=peak_activation_bytes(run, device=device),
        kv_cache_bytes=cache,
        device=str(torch.device(device)),
    )
