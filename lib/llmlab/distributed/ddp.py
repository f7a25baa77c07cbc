"""DistributedDataParallel: R ranks, one shard of the batch each, and the big-batch gradient.

With a batch of B = R·b examples split over R ranks, each rank backpropagates the mean loss of
its b examples, L_r, and DDP all-reduces the gradients and divides by R::

    1/R Σ_r ∇L_r = 1/R Σ_r 1/b Σ_{i∈r} ∇ℓ_i = 1/B Σ_i ∇ℓ_i = ∇L

the same regrouping as gradient accumulation (notebook 04), spread over devices instead of
time. Accumulating K micro-batches inside each rank under ``DistributedDataParallel.no_sync()``
(no all-reduce until the last one) gives ∇L once more. Both need per-example losses: BatchNorm
in training mode normalises each rank's shard with its own statistics and breaks the equality,
unless it is synchronised (:mod:`llmlab.distributed.batchnorm`).

:func:`ddp_gradients` runs the real thing (``torch.nn.parallel.DistributedDataParallel`` in
``world_size`` processes, via :func:`llmlab.distributed.run`) and returns the gradients;
:func:`batchnorm_under_ddp` does it twice in the same processes, with plain and with
synchronised BatchNorm.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .._checks import check_int, check_tensor
from .._torch import grads_by_name
from ..accumulation import batchnorm_running_stats
from .batchnorm import convert_sync_batchnorm
from .launch import MAX_WORLD_SIZE, check_importable, run

__all__ = ["RankPass", "BatchNormComparison", "rank_shard", "ddp_rank_pass", "ddp_gradients",
           "batchnorm_rank_passes", "batchnorm_under_ddp"]


@dataclass(frozen=True)
class RankPass:
    """What one rank holds after a DDP forward/backward: ``grads`` (name -> gradient, all-reduced),
    ``running_stats`` (name -> BatchNorm running mean/var; empty without BatchNorm) and ``loss``
    (this rank's unscaled mean loss, averaged over its micro-batches)."""

    grads: dict[str, Tensor]
    running_stats: dict[str, Tensor]
    loss: float


def _check_split(model_fn, loss_fn, x, y, world_size: int, accumulation_steps: int) -> int:
    """What both DDP comparisons take: ``model_fn`` and ``loss_fn`` importable by the worker processes, x, y
    tensors with the same leading batch size B, divisible by world_size · accumulation_steps."""
    check_importable("model_fn", model_fn)
    check_importable("loss_fn", loss_fn)
    check_tensor("x", x, min_numel=1)
    check_tensor("y", y, min_numel=1)
    if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same leading batch size, got {tuple(x.shape)} and {tuple(y.shape)}")
    world_size = check_int("world_size", world_size, low=1, high=MAX_WORLD_SIZE)
    steps = check_int("accumulation_steps", accumulation_steps, low=1)
    batch = int(x.shape[0])
    if batch % (world_size * steps):
        raise ValueError(f"x's batch size {batch} must split into world_size × accumulation_steps = {world_size * steps} parts")
    return batch


def rank_shard(t: Tensor, rank: int, world_size: int) -> Tensor:
    """Rank ``rank``'s contiguous shard of the batch ``t`` (B, ...): rows rank·B/R ... (rank+1)·B/R − 1
    (what a ``DistributedSampler`` without shuffling would hand it, up to the order); B divisible by R."""
    return t.chunk(world_size)[rank]


def ddp_rank_pass(rank: int, world_size: int, model_fn: Callable[[], nn.Module], x: Tensor, y: Tensor,
                  loss_fn: Callable[[Tensor, Tensor], Tensor], accumulation_steps: int = 1,
                  sync_batchnorm: bool = False) -> RankPass:
    """What each rank runs (inside :func:`llmlab.distributed.run`): one DDP forward/backward on its shard.

    Builds ``model_fn()`` (BatchNorm layers synchronised if ``sync_batchnorm``), wraps it in
    ``DistributedDataParallel`` (which broadcasts rank 0's weights and buffers), takes rows
    ``rank_shard(x, rank, world_size)`` and splits them into ``accumulation_steps`` micro-batches;
    every micro-batch but the last runs under ``no_sync()`` (gradients accumulate locally), the last
    one triggers the all-reduce. Each micro-batch loss is divided by ``accumulation_steps``.
    Called through :func:`ddp_gradients` / :func:`batchnorm_under_ddp`, which check the arguments.
    """
    model = model_fn()
    if sync_batchnorm:
        model = convert_sync_batchnorm(model)
    ddp = DistributedDataParallel(model)
    x_r, y_r = rank_shard(x, rank, world_size), rank_shard(y, rank, world_size)
    micro = list(zip(x_r.chunk(accumulation_steps), y_r.chunk(accumulation_steps)))
    losses = []
    for j, (x_j, y_j) in enumerate(micro):
        last = j == len(micro) - 1
        with contextlib.nullcontext() if last else ddp.no_sync():
            loss = loss_fn(ddp(x_j), y_j)
            (loss / accumulation_steps).backward()
        losses.append(loss.detach())
    return RankPass(grads=grads_by_name(model), running_stats=batchnorm_running_stats(model),
                    loss=float(torch.stack(losses).double().mean()))


def _same_on_every_rank(passes) -> dict[str, Tensor]:
    """The gradients of rank 0 after checking every rank holds the same (``passes``: per-rank results
    with a ``grads`` dict, e.g. :class:`RankPass`): DDP leaves identical gradients on every rank, so
    anything else is a bug worth an error."""
    first = passes[0].grads
    for rank, p in enumerate(passes[1:], start=1):
        for name, g in p.grads.items():
            if not torch.allclose(g, first[name], rtol=1e-6, atol=1e-9):
                raise RuntimeError(f"rank {rank} holds a different gradient for {name!r} than rank 0 after DDP")
    return first


def ddp_gradients(model_fn: Callable[[], nn.Module], x: Tensor, y: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor],
                  world_size: int, *, accumulation_steps: int = 1, sync_batchnorm: bool = False,
                  timeout: float = 120) -> dict[str, Tensor]:
    """The gradients ``DistributedDataParallel`` produces with the batch ``(x, y)`` split over ``world_size`` ranks.

    ``model_fn()`` builds the model (it must give the same weights every call, e.g. a seeded
    builder such as ``functools.partial(llmlab.accumulation.make_model, "cnn_gn", seed=0)``, so that a
    single-process reference can be built too); ``loss_fn(output, target)`` is a mean loss. Both
    must be picklable (module-level functions). ``x`` (B, ...) and ``y`` (B, ...): B divisible
    by ``world_size · accumulation_steps``. Returns name -> gradient (parameter names of the
    plain model), equal on every rank (checked): for per-example losses, the full-batch gradient
    to rounding (see :func:`ddp_rank_pass` for what each rank does). Runs ``world_size`` processes
    (:func:`llmlab.distributed.run`, ``timeout`` seconds).
    """
    _check_split(model_fn, loss_fn, x, y, world_size, accumulation_steps)
    passes = run(ddp_rank_pass, world_size, model_fn, x, y, loss_fn, accumulation_steps, sync_batchnorm,
                 timeout=timeout)
    return _same_on_every_rank(passes)


@dataclass(frozen=True)
class BatchNormComparison:
    """One DDP step with BatchNorm, twice: ``per_rank`` (plain BatchNorm, each rank its own statistics)
    and ``synchronised`` (:class:`~llmlab.distributed.SyncBatchNorm`): gradients and running statistics
    (rank 0's; the gradients are equal on every rank)."""

    per_rank_grads: dict[str, Tensor]
    synchronised_grads: dict[str, Tensor]
    per_rank_stats: dict[str, Tensor]
    synchronised_stats: dict[str, Tensor]


def batchnorm_rank_passes(rank: int, world_size: int, model_fn, x, y, loss_fn) -> tuple[RankPass, RankPass]:
    """What each rank runs for :func:`batchnorm_under_ddp`: the DDP pass with plain, then synchronised BatchNorm."""
    plain = ddp_rank_pass(rank, world_size, model_fn, x, y, loss_fn)
    dist.barrier()
    return plain, ddp_rank_pass(rank, world_size, model_fn, x, y, loss_fn, sync_batchnorm=True)


def batchnorm_under_ddp(model_fn: Callable[[], nn.Module], x: Tensor, y: Tensor,
                        loss_fn: Callable[[Tensor, Tensor], Tensor], world_size: int, *,
                        timeout: float = 120) -> BatchNormComparison:
    """:func:`ddp_gradients` for a model with BatchNorm, plain and synchronised, in one set of processes.

    Plain BatchNorm under DDP gives the mean over ranks of per-shard gradients, which is what
    accumulating ``world_size`` micro-batches gives on one device, not the big-batch gradient;
    synchronised BatchNorm gives the big-batch gradient and running statistics.
    """
    _check_split(model_fn, loss_fn, x, y, world_size, 1)
    pairs = run(batchnorm_rank_passes, world_size, model_fn, x, y, loss_fn, timeout=timeout)
    plain, synced = [p for p, _ in pairs], [s for _, s in pairs]
    return BatchNormComparison(per_rank_grads=_same_on_every_rank(plain), synchronised_grads=_same_on_every_rank(synced),
                               per_rank_stats=plain[0].running_stats, synchronised_stats=synced[0].running_stats)
