"""Data-parallel training on an existing engine: ``torch.distributed`` under ``torchrun``.

Each rank encodes a contiguous shard of the global batch; the encoder outputs are gathered with
``torch.distributed.nn.functional.all_gather``, which keeps gradients, so every rank evaluates the
objective on the **whole** global batch (all negatives, the same vMF draws and projections as a
single process, since the RNGs are seeded alike). Each rank back-propagates ``loss / world_size``;
the all-gather's backward sums the output gradients over ranks, and an all-reduce (sum) of the
parameter gradients then gives exactly the single-process gradient. Backend: gloo on CPU, NCCL on
GPU. Dropout draws differ from a single process (they are per shard); with ``dropout = 0`` the
loss and gradients equal the single-process ones up to floating-point reassociation.
The CNN backbones (``encoder = "backbones"``) hold BatchNorm layers, whose batch statistics are
per shard as well (plain DDP semantics, no SyncBatchNorm): equality with one process holds for
the heads over cached features, the default.
"""
from __future__ import annotations

import contextlib
import gc
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

__all__ = ["DistributedContext", "init_distributed", "distributed_session"]


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous shard of a global batch of indices (sizes must divide evenly)."""
        if not self.active:
            return indices
        if len(indices) % self.world_size:
            raise ValueError(f"global batch of {len(indices)} items does not split over {self.world_size} ranks; "
                             "choose batch_size divisible by the number of processes")
        return indices.chunk(self.world_size)[self.rank]

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's tensor along dim 0, keeping gradients (identity for one process)."""
        if not self.active:
            return tensor
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(tensor.contiguous()), dim=0)

    def all_reduce_gradients(self, parameters) -> None:
        """Sum the gradients of ``parameters`` over ranks."""
        if not self.active:
            return
        for p in parameters:
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group that ``torchrun`` describes in the environment (or run alone)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size())


@contextlib.contextmanager
def distributed_session(device: torch.device) -> Iterator[DistributedContext]:
    """:func:`init_distributed` for the duration of a ``with`` block, torn down on the way out.

    A process group this call created is destroyed when the block ends, normally (after a
    barrier, so that no rank tears down the group while a peer still has a collective in flight)
    or by an exception (``torch.distributed.destroy_process_group``, without the barrier, which
    could wait forever for a failed peer). Left alive, or destroyed while a peer still
    communicates, gloo's threads can abort the process with "terminate called without an active
    exception" after its work is done; unreachable autograd graphs that still reference the group
    are collected before and after the teardown for the same reason. A group that already existed
    (initialised by the caller) is left to its owner.
    """
    owned = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    ctx = init_distributed(device)
    try:
        yield ctx
        if owned:  # every rank has finished its collectives before any rank tears the group down
            ctx.barrier()
    finally:
        if owned and dist.is_initialized():
            # autograd graphs of the step (their nodes keep the group alive through the differentiable
            # all-gather) can sit in reference cycles; freed by a later garbage collection, possibly
            # during interpreter shutdown, they would destroy the group's gloo threads then
            gc.collect()
            dist.destroy_process_group()
            gc.collect()
