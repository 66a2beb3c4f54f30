"""Data-parallel training with ``torch.distributed``: who this process is, and the
few collective operations the training loop needs.

A run of N ranks is launched by ``torchrun`` (``nas train --nproc N`` launches it):
every rank runs the whole loop, draws the same global batch keys and the same subnets
(one seed for all), trains on its own share of the batch and DistributedDataParallel
all-reduces the gradients once per step. Gloo on CPUs, NCCL on GPUs.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from nas._limits import check_count, usable_cores

TORCHRUN = (sys.executable, "-m", "torch.distributed.run")


@dataclass(frozen=True)
class Ranks:
    """This process's place in a run: ``world`` ranks, this one ``rank`` (``local`` on
    its machine), talking over ``backend`` (``None`` when the run has one process)."""

    world: int = 1
    rank: int = 0
    local: int = 0
    backend: str | None = None

    @classmethod
    def from_env(cls) -> Ranks:
        """The ranks ``torchrun`` describes in the environment (one process without)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        return cls(world=world, rank=int(os.environ["RANK"]),
                   local=int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def leader(self) -> bool:
        """Rank 0: the one that shows progress and writes files."""
        return self.rank == 0

    def device(self, kind: str) -> torch.device:
        """This rank's device of ``kind`` (``"cpu"`` or ``"cuda"``: the local GPU)."""
        return torch.device("cuda", self.local) if kind == "cuda" else torch.device("cpu")

    def join(self, kind: str) -> Ranks:
        """Join the process group (Gloo on CPUs, NCCL on GPUs); the ranks with their
        backend. A one-process run joins nothing."""
        if self.world == 1:
            return self
        backend = "nccl" if kind == "cuda" else "gloo"
        if kind == "cuda":
            torch.cuda.set_device(self.local)
        if not dist.is_initialized():
            dist.init_process_group(backend)
        return Ranks(self.world, self.rank, self.local, backend)

    def leave(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()

    def total(self, value: float, device: torch.device) -> float:
        """``value`` summed over the ranks (float64, so token counts stay exact)."""
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return float(tensor.item())

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``tensor`` (same shape and dtype on all), in rank order."""
        if self.world == 1:
            return [tensor]
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(parts, tensor)
        return parts

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` itself, or in DistributedDataParallel for a run of several ranks.

        Subnets use some of the weights: ``find_unused_parameters`` lets DDP reduce
        the gradients of a step whose subnets left some weights untouched (a static
        graph cannot: the graph changes with every subnet).
        """
        if self.world == 1:
            return module
        device_ids = [self.local] if self.backend == "nccl" else None
        return nn.parallel.DistributedDataParallel(
            module, device_ids=device_ids, find_unused_parameters=True)

    @staticmethod
    @contextlib.contextmanager
    def deferred(model: nn.Module, defer: bool) -> Iterator[None]:
        """Within the block, accumulate gradients locally (no all-reduce) if ``defer``:
        every backward of a step but its last one."""
        if defer and isinstance(model, nn.parallel.DistributedDataParallel):
            with model.no_sync():
                yield
        else:
            yield

    def describe(self) -> dict[str, object]:
        return {"world_size": self.world, "backend": self.backend or "none"}


def check_nproc(nproc: int, device: str) -> int:
    """``nproc`` if this machine can run that many ranks on ``device``: one GPU each,
    or at least one CPU core each."""
    if device == "cuda":
        gpus = torch.cuda.device_count()
        return check_count(nproc, name="--nproc", low=1, high=max(gpus, 1),
                           why=f"this machine has {gpus} CUDA device(s), one per rank")
    cores = usable_cores()
    return check_count(nproc, name="--nproc", low=1, high=cores,
                       why=f"this machine has {cores} usable core(s), one per rank at least")


def launch_command(nproc: int, args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The ``torchrun`` command that runs ``nas ARGS`` on ``nproc`` local ranks, and
    its environment: each rank gets an equal share of the cores unless
    ``OMP_NUM_THREADS`` says otherwise, and DDP's warning that a step used every weight
    (true of many subnets, not of all) is silenced unless ``TORCH_CPP_LOG_LEVEL`` is set."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, usable_cores() // nproc)))
    env.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    command = [*TORCHRUN, "--standalone", f"--nproc-per-node={nproc}", "-m", "nas", *args]
    return command, env
