"""What the gradient all-reduce costs: the ring algorithm's bytes, measured gloo times, and a paper model.

A ring all-reduce of a buffer of G bytes over N ranks splits it into N chunks and runs two
phases of N − 1 steps: reduce-scatter (each step every rank sends one chunk to its neighbour and
adds the chunk it receives; after N − 1 steps rank r holds the full sum of one chunk) and
all-gather (the summed chunks travel once more around the ring). Each rank sends, and receives,

    2 (N − 1) / N × G bytes

nearly 2 G for any N: the time of a bandwidth-bound all-reduce hardly grows with the number of
ranks. :func:`simulate_ring_all_reduce` runs the two phases by hand in one process (to count);
:func:`measure_all_reduce` times ``torch.distributed.all_reduce`` on real processes;
:func:`step_estimate` puts the formula next to the compute of a training step (6 FLOPs per
parameter per token) for a real cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from .._checks import check_float, check_int
from ..fitting import ScalingFit, fit_scaling
from ..timing import time_calls
from .launch import MAX_WORLD_SIZE, run

__all__ = ["ring_allreduce_bytes", "simulate_ring_all_reduce", "RingResult", "allreduce_rank_timings",
           "AllReduceTiming", "measure_all_reduce", "StepEstimate", "step_estimate", "crossover_tokens"]


def ring_allreduce_bytes(nbytes: float, world_size: int) -> float:
    """Bytes each rank sends (and receives) in a ring all-reduce of ``nbytes``: 2 (N − 1) / N × nbytes."""
    nbytes = check_float("nbytes", nbytes, low=0)
    world_size = check_int("world_size", world_size, low=1)
    return 2 * (world_size - 1) / world_size * nbytes


@dataclass(frozen=True)
class RingResult:
    """``results``: every rank's buffer after the ring all-reduce; ``bytes_sent``: what each rank sent."""

    results: list[Tensor]
    bytes_sent: list[int]


def simulate_ring_all_reduce(buffers: list[Tensor]) -> RingResult:
    """The ring all-reduce (sum) of ``buffers`` (one 1-D tensor per rank, equal lengths), step by step in
    one process, counting the bytes each rank sends. For reading and counting; real runs use
    ``torch.distributed.all_reduce``.

    Chunk c of rank r is ``chunks[r][c]`` (the buffer split into N nearly equal chunks). In
    reduce-scatter step s, rank r sends chunk (r − s) mod N to rank r + 1, which adds it to its
    own; after N − 1 steps rank r holds the sum of chunk (r + 1) mod N. In all-gather step s, rank r
    sends the finished chunk (r + 1 − s) mod N to rank r + 1, which overwrites its copy.
    """
    if not isinstance(buffers, (list, tuple)) or not buffers:
        raise TypeError("buffers must be a non-empty list of 1-D tensors, one per rank")
    n = len(buffers)
    if not all(isinstance(b, Tensor) for b in buffers):
        raise TypeError("buffers must hold torch tensors (1-D, one per rank)")
    if any(b.dim() != 1 or b.shape != buffers[0].shape for b in buffers):
        raise ValueError("buffers must be 1-D tensors of the same length")
    chunks = [list(b.clone().tensor_split(n)) for b in buffers]
    sent = [0] * n
    for phase in ("reduce-scatter", "all-gather"):
        for s in range(n - 1):
            # Every rank sends at once: compute the messages of this step before applying any.
            offset = s if phase == "reduce-scatter" else s - 1
            messages = [(r, (r - offset) % n, chunks[r][(r - offset) % n].clone()) for r in range(n)]
            for r, c, payload in messages:
                dst = (r + 1) % n
                sent[r] += payload.numel() * payload.element_size()
                chunks[dst][c] = chunks[dst][c] + payload if phase == "reduce-scatter" else payload
    return RingResult(results=[torch.cat(c) for c in chunks], bytes_sent=sent)


def allreduce_rank_timings(rank: int, world_size: int, sizes: tuple[int, ...], repeat: int = 5,
                           warmup: int = 2) -> list[tuple[float, ...]]:
    """What each rank runs: for each size (float32 elements), the seconds of ``repeat`` ``all_reduce``
    calls (after ``warmup`` untimed ones), timed with :func:`llmlab.timing.time_calls`. Called by
    :func:`measure_all_reduce`, which checks the arguments."""
    times = []
    for numel in sizes:
        buffer = torch.ones(numel)
        dist.barrier()  # start every size together
        times.append(time_calls(lambda: dist.all_reduce(buffer), repeat=repeat, warmup=warmup).times)
    return times


@dataclass(frozen=True)
class AllReduceTiming:
    """``all_reduce`` on ``world_size`` ranks: for each buffer of ``nbytes``, the ring bytes each rank
    sends (``bytes_sent``) and the ``seconds`` it took (the fastest of the repeated calls, each call
    timed by its slowest rank).
    ``fit``: seconds ≈ c · bytes_sent + d (``1 / c``: effective bandwidth; ``d``: latency)."""

    world_size: int
    nbytes: tuple[int, ...]
    bytes_sent: tuple[float, ...]
    seconds: tuple[float, ...]
    fit: ScalingFit

    @property
    def bandwidth(self) -> float:
        """Effective bytes per second each rank sends (what NCCL's tests call bus bandwidth), from the fit."""
        return 1.0 / self.fit.c if self.fit.c > 0 else float("inf")


def measure_all_reduce(world_size: int = 2, nbytes=(2**18, 2**20, 2**22, 2**23), *, repeat: int = 20,
                       timeout: float = 120) -> AllReduceTiming:
    """Time ``torch.distributed.all_reduce`` (gloo, float32 sums) of buffers of ``nbytes`` on ``world_size``
    processes (one :func:`run`); fit seconds against the ring's bytes per rank."""
    world_size = check_int("world_size", world_size, low=2, high=MAX_WORLD_SIZE)
    sizes = tuple(check_int("nbytes", b, low=4, high=2**31) for b in nbytes)
    if len(set(sizes)) < 2 or any(b % 4 for b in sizes):
        raise ValueError(f"nbytes must hold at least 2 distinct multiples of 4 (float32 buffers), got {sizes}")
    repeat = check_int("repeat", repeat, low=1, high=1000)
    per_rank = run(allreduce_rank_timings, world_size, tuple(b // 4 for b in sizes), repeat, timeout=timeout)
    # Call k takes as long as its slowest rank: a collective ends when its last participant is done.
    # Of the calls, the fastest: on a busy machine single calls come out milliseconds slower at
    # random (a rank descheduled), often enough that even the median of 5 can rank a 64 KiB buffer
    # above a 4 MiB one. Scheduling noise only ever adds time, so the minimum is the robust estimate.
    seconds = tuple(min(max(r[i][k] for r in per_rank) for k in range(repeat)) for i in range(len(sizes)))
    sent = tuple(ring_allreduce_bytes(b, world_size) for b in sizes)
    return AllReduceTiming(world_size=world_size, nbytes=sizes, bytes_sent=sent, seconds=seconds,
                           fit=fit_scaling(sent, seconds, "n"))


@dataclass(frozen=True)
class StepEstimate:
    """One data-parallel training step on paper. ``comm_seconds``: the gradient all-reduce at
    ``link_bytes_per_s``; ``compute_seconds``: 6 · params · tokens_per_rank FLOPs at ``flops_per_s``;
    ``bytes_sent``: ring bytes per rank; ``ratio`` = comm / compute (> 1: communication dominates)."""

    params: float
    world_size: int
    tokens_per_rank: float
    grad_bytes: float
    bytes_sent: float
    comm_seconds: float
    compute_seconds: float

    @property
    def ratio(self) -> float:
        return self.comm_seconds / self.compute_seconds


def step_estimate(params: float, world_size: int, *, link_gbit_s: float = 400.0, flops_per_s: float = 400e12,
                  tokens_per_rank: float = 8 * 4096, bytes_per_grad: int = 2) -> StepEstimate:
    """Communication against compute for one step of data-parallel training (no overlap assumed).

    ``params``: model parameters; gradients of ``bytes_per_grad`` bytes (2: bf16) are all-reduced
    over ``world_size`` ranks, each with a ``link_gbit_s`` link (Gbit/s; 400 = 50 GB/s, one
    InfiniBand NDR port). Compute: forward + backward = 6 FLOPs per parameter per token, at
    ``flops_per_s`` achieved per device (400e12: an H100 at about 40 % of its bf16 peak).
    """
    params = check_float("params", params, low=1)  # world_size: ring_allreduce_bytes checks it
    link = check_float("link_gbit_s", link_gbit_s, low=0, low_open=True) * 1e9 / 8
    flops = check_float("flops_per_s", flops_per_s, low=0, low_open=True)
    tokens = check_float("tokens_per_rank", tokens_per_rank, low=0, low_open=True)
    grad_bytes = params * check_int("bytes_per_grad", bytes_per_grad, low=1, high=8)
    sent = ring_allreduce_bytes(grad_bytes, world_size)
    return StepEstimate(params=params, world_size=int(world_size), tokens_per_rank=tokens, grad_bytes=grad_bytes,
                        bytes_sent=sent, comm_seconds=sent / link, compute_seconds=6 * params * tokens / flops)


def crossover_tokens(world_size: int, *, link_gbit_s: float = 400.0, flops_per_s: float = 400e12,
                     bytes_per_grad: int = 2) -> float:
    """Tokens per rank per step below which the all-reduce takes longer than the compute.

    Both grow linearly with the parameter count, so it cancels:
    T* = 2 (N − 1)/N · bytes_per_grad · flops_per_s / (6 · link bytes/s).
    """
    est = step_estimate(1e9, world_size, link_gbit_s=link_gbit_s, flops_per_s=flops_per_s, tokens_per_rank=1.0,
                        bytes_per_grad=bytes_per_grad)
    return est.comm_seconds / est.compute_seconds
