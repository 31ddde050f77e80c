"""torchrun support: detect the launch, set up the process group, reduce metrics.

Under `torchrun` the environment holds RANK, WORLD_SIZE and LOCAL_RANK. mpsctl then uses
DistributedDataParallel (NCCL on CUDA, gloo on the CPU), converts the model to the supernet
*before* wrapping it, lets only rank 0 write files and logs, and reduces metrics over ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from mpsctl.training.device import resolve_device


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_CONTEXT = DistContext()


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def init(device_name: str) -> tuple[DistContext, torch.device]:
    """Initialise the process group when launched by torchrun; returns context and device."""
    global _CONTEXT
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) < 2:
        return DistContext(), resolve_device(device_name)
    ctx = DistContext(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                      int(os.environ["LOCAL_RANK"]))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank if device.index is None else device.index)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    _CONTEXT = ctx
    return ctx, device


def context() -> DistContext:
    return _CONTEXT


def is_main() -> bool:
    return _CONTEXT.is_main


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` when distributed, else ``model`` itself."""
    if not _CONTEXT.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def reduce_sums(values: list[float], device: torch.device) -> list[float]:
    """Sum each value over ranks (identity when not distributed)."""
    if not _CONTEXT.enabled:
        return values
    if dist.get_backend() == "nccl" and device.type != "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def ranks_agree(tensors: list[Tensor]) -> bool:
    """Whether every rank holds exactly the same values (e.g. architecture logits)."""
    if not _CONTEXT.enabled or not tensors:
        return True
    flat = torch.cat([t.detach().flatten().double() for t in tensors])
    gathered = [torch.empty_like(flat) for _ in range(_CONTEXT.world_size)]
    dist.all_gather(gathered, flat)
    return all(torch.equal(gathered[0], g) for g in gathered[1:])


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has written a file the others read next)."""
    if _CONTEXT.enabled and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if _CONTEXT.enabled and dist.is_initialized():
        dist.destroy_process_group()
