"""torch.distributed set-up for ``torchrun``: gloo on CPU, nccl on GPU; rank 0 does the I/O."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistEnv",
    "all_gather_objects",
    "all_reduce_sum",
    "init_distributed",
    "pick_device",
    "replica_spread",
]


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: rank, world size and its device.

    >>> DistEnv().is_main, DistEnv().world
    (True, 1)
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    """``train.device`` ("auto", "cpu", "cuda") -> the device this process uses."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but no CUDA device is available")
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Without ``WORLD_SIZE`` > 1 this is a single process and nothing is initialised.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(minutes=10))
    return DistEnv(rank, world, local_rank, dev)


def all_reduce_sum(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum a tensor over ranks (a copy; identity on one process)."""
    if not env.distributed:
        return values
    out = values.detach().clone().to(env.device)
    dist.all_reduce(out)
    return out.cpu()


def all_gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` on one process)."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world
    dist.all_gather_object(out, obj)
    return out


def replica_spread(module: torch.nn.Module, env: DistEnv) -> float:
    """Largest difference of any parameter between ranks (0.0 when the replicas agree).

    >>> replica_spread(torch.nn.Linear(2, 2), DistEnv())
    0.0
    """
    if not env.distributed:
        return 0.0
    flat = torch.cat([p.detach().reshape(-1).double() for p in module.parameters()])
    high, low = flat.clone(), flat.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return float((high - low).max()) if flat.numel() else 0.0
