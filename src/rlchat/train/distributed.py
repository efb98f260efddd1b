"""Data-parallel training on PyTorch's own engine: `torchrun ... -m rlchat train ce|rl`.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; each process trains on its share of every
step's batches, DistributedDataParallel averages the gradients, and only rank 0 logs and
writes checkpoints. Without torchrun everything here is a no-op (world size 1).
"""

from __future__ import annotations

import atexit
import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def sum(self, value: float) -> float:
        """The sum of ``value`` over all processes."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=_collective_device())
        dist.all_reduce(tensor)
        return float(tensor.item())

    def any(self, flag: bool) -> bool:
        """True on every process when it is true on one: stops happen together, never in a hang."""
        return self.sum(1.0 if flag else 0.0) > 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to call forward on: DDP when distributed, the model itself otherwise."""
        if not self.distributed:
            return model
        device_ids = [self.local_rank] if next(model.parameters()).is_cuda else None
        return DistributedDataParallel(model, device_ids=device_ids)


SINGLE = World()


def _collective_device() -> torch.device:
    return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")


def init_world(device: torch.device) -> World:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA), if any."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        # A process leaving with the group alive may abort in gloo's threads at exit
        # ("terminate called without an active exception"), failing a run that succeeded.
        atexit.register(_leave_world)
        logger.info("rank %d of %d joined (%s)", rank, size, backend)
    return World(rank=rank, size=size, local_rank=local_rank)


def _leave_world() -> None:
    """Wait for every rank, then take the group down: a rank leaving while another still
    works (rank 0 writing its checkpoint) tears gloo's connections from under it."""
    if dist.is_initialized():
        try:
            if dist.get_backend() == "gloo":
                # Bounded: a rank leaving on an exception, its peers stuck in a collective,
                # must still exit so that torchrun stops the job.
                dist.monitored_barrier(timeout=timedelta(seconds=60))
        except RuntimeError:
            pass
        finally:
            dist.destroy_process_group()


def device_for(world: World, device: torch.device) -> torch.device:
    """Each process on its own GPU when on CUDA."""
    if device.type == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device
