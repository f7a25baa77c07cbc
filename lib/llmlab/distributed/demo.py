"""Data-parallel training as a script: the same code under ``torchrun`` and under :func:`llmlab.distributed.run`.

On a cluster you start one process per GPU with ``torchrun``, which sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` and lets
``init_process_group`` find its peers; on this laptop the same script runs with gloo::

    torchrun --standalone --nproc-per-node 2 -m llmlab.distributed.demo
    python -m llmlab.distributed.demo --nproc 2      # the same, started by llmlab.distributed.run

Each rank trains notebook 04's GroupNorm CNN with SGD (momentum 0.9) under
``DistributedDataParallel`` on its shard of every batch; at the end rank 0 trains the same model
on the whole batches in one process and checks that the weights agree: data parallelism is the
big-batch step. Exit status 0 when they do, 1 otherwise.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .._torch import read_floats
from ..accumulation import loss_fn_for, make_batch, make_model, train_with_accumulation
from .launch import MAX_WORLD_SIZE, run

__all__ = ["TOLERANCE", "RankRun", "train_rank", "main"]

#: Largest relative distance between the DDP weights and the single-process weights that counts as equal.
TOLERANCE = 1e-5
_KIND = "cnn_gn"


@dataclass(frozen=True)
class RankRun:
    """What one rank of :func:`train_rank` reports: its shard's loss per step and (rank 0 only,
    else None) ‖θ_DDP − θ_single‖ / ‖θ_single‖ against one process on the full batches."""

    rank: int
    losses: tuple[float, ...]
    distance: float | None


def train_rank(rank: int, world_size: int, *, steps: int = 5, batch_size: int = 32) -> RankRun:
    """``steps`` DDP updates on this rank's shard of ``batch_size``-example batches; rank 0 also checks them.

    Returns a :class:`RankRun`. :func:`main` checks the options (``world_size`` must divide ``batch_size``).
    """
    batches = [make_batch(_KIND, batch_size, seed=seed) for seed in range(1, steps + 1)]
    loss_fn = loss_fn_for(_KIND)
    model = DistributedDataParallel(make_model(_KIND, seed=0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x.chunk(world_size)[rank]), y.chunk(world_size)[rank])
        loss.backward()  # DDP all-reduces (averages) the gradients here
        optimizer.step()
        losses.append(loss.detach())  # read after the loop: no host sync per step
    distance = None
    if rank == 0:
        single = train_with_accumulation(make_model(_KIND, seed=0), loss_fn, batches, 1, lr=0.05, momentum=0.9)
        theta = nn.utils.parameters_to_vector(model.module.parameters()).detach()
        distance = float((theta - single.params[-1]).norm() / single.params[-1].norm())
    return RankRun(rank=rank, losses=read_floats(losses), distance=distance)


def _report(results: list[RankRun]) -> int:
    world_size = len(results)
    for r in results:
        print(f"rank {r.rank}/{world_size}: shard losses " + " ".join(f"{v:.4f}" for v in r.losses))
    distance = results[0].distance
    ok = distance <= TOLERANCE
    print(f"‖θ_DDP − θ_one process‖ / ‖θ‖ = {distance:.2e} after {len(results[0].losses)} steps on {world_size} "
          f"ranks: {'match' if ok else 'MISMATCH'} (tolerance {TOLERANCE:g})")
    return 0 if ok else 1


def main(argv=None) -> int:
    if argv is not None and (isinstance(argv, (str, bytes)) or not isinstance(argv, (list, tuple))):
        raise TypeError(f"argv must be a list of command-line arguments (str) or None, got {type(argv).__name__}")
    parser = argparse.ArgumentParser(prog="python -m llmlab.distributed.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", type=int, default=2, help="ranks to start when not under torchrun (default 2)")
    parser.add_argument("--steps", type=int, default=5, help="training steps (default 5)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # started by torchrun: one rank per process
        dist.init_process_group("gloo")
        rank, world_size = dist.get_rank(), dist.get_world_size()
        try:
            result = train_rank(rank, world_size, steps=args.steps)
            gathered = [None] * world_size
            dist.all_gather_object(gathered, result)
        finally:
            dist.destroy_process_group()
        return _report(gathered) if rank == 0 else 0
    if not 1 <= args.nproc <= MAX_WORLD_SIZE or 32 % args.nproc:
        parser.error(f"--nproc must divide the batch of 32 and be in [1, {MAX_WORLD_SIZE}]")
    return _report(run(functools.partial(train_rank, steps=args.steps), args.nproc))


if __name__ == "__main__":
    sys.exit(main())
