"""Data parallelism with torch.distributed, launched by ``torchrun`` (or by hand).

Why not DistributedDataParallel: spikeacc's methods run the network's modules themselves
(``spikeacc.graph``), never ``net.forward``, so DDP's hooks would never fire. Instead:

* every rank holds the whole network and sees the same global batches (the trainer's
  shuffle is seeded alike on every rank); ``Group.shard`` gives each rank a disjoint,
  contiguous part of each global batch (sizes differ by at most one);
* before every optimiser update the gradients are averaged over the ranks, weighted by
  the samples each rank had (``Group.reduce_gradients``), so the update is the one of the
  global batch's mean loss: N processes follow the trajectory of one process on the same
  global batches, up to float rounding. ``attach`` installs this as the method's
  ``before_update`` hook, which ``Method.step`` calls before ``optimizer.step()`` and
  OTTT-O before each of its T per-step updates;
* statistics a method fits on the batch are summed over the ranks before use
  (``Group.all_reduce_sum`` as the method's ``reduce_sum``): ASF-BP's k is the ratio of
  two such sums, so every rank fits the one-process k.

Not synchronised (as in any data-parallel run): BatchNorm's batch statistics in training
mode (each rank normalises over its shard), and random draws (dropout masks, Poisson
input), which each rank makes for its own samples.

A user's own loop::

    group = distributed.setup()                    # torchrun's environment; gloo on CPU, nccl on CUDA
    distributed.attach(method, net, group)
    for x, y in global_batches:                    # the same on every rank
        part = group.shard(len(y))
        group.set_batch(len(y[part]), len(y))
        method.step(net, optimizer, x[part], y[part])
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

DEFAULT_TIMEOUT_S = 120.0  # a rank that waits longer for the others stops with an error


class DistributedError(RuntimeError):
    """A collective operation failed: another process stopped or stopped answering."""


@dataclass
class Group:
    """This process's place among ``world_size`` processes (rank 0 writes the files)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    batch_weight: float = 1.0  # this rank's share of the current global batch's samples

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of n items: the first n % world_size ranks get one more."""
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over the ranks, in place (returned); the tensor itself in one process.
        DistributedError if another rank has stopped (or not answered within the timeout)."""
        if self.world_size > 1:
            try:
                dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            except RuntimeError as err:
                reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise DistributedError(f"rank {self.rank}: lost the other processes ({reason[:160]}); another "
                                       "process has probably stopped, see its message") from None
        return tensor

    def set_batch(self, n_local: int, n_global: int) -> None:
        """Record this rank's share of the global batch (for ``reduce_gradients``)."""
        self.batch_weight = n_local / n_global

    def reduce_gradients(self, parameters) -> None:
        """grad <- sum over ranks of (n_rank / n_global) grad_rank: the gradient of the
        global batch's mean loss. One all-reduce of all gradients flattened together."""
        if self.world_size == 1:
            return
        params = [p for p in parameters if p.requires_grad]
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads]).mul_(self.batch_weight)
        self.all_reduce_sum(flat)
        for p, piece in zip(params, flat.split([g.numel() for g in grads])):
            p.grad = piece.view_as(p).clone() if p.grad is None else p.grad.copy_(piece.view_as(p))

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def launched() -> bool:
    """Was this process started by torchrun (or with its environment) for several ranks?"""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> Group:
    """Join the process group that torchrun's environment describes (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT): gloo on CPU, nccl on CUDA, each rank on
    cuda:LOCAL_RANK. Without that environment: a group of one (nothing initialised)."""
    device = torch.device(device or "cpu")
    if not launched():
        return Group(device=device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s))
    return Group(dist.get_rank(), dist.get_world_size(), device)


def attach(method, net: nn.Module, group: Group) -> None:
    """Make ``method`` average the gradients of ``net`` over the group before every
    optimiser update and sum its batch statistics over the group."""
    method.before_update = lambda: group.reduce_gradients(net.parameters())
    method.reduce_sum = group.all_reduce_sum


def shutdown() -> None:
    """Leave the process group once every process has reached this point: a process that
    tears gloo down while a peer still uses the connection can abort (SIGABRT, seen in
    tests/test_distributed.py)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
