"""What attention costs: bytes saved for backward, peak memory, FLOPs and slow-memory traffic.

Four ways to compute the same attention (:data:`ATTENTION_METHODS`):

* ``"plain"``: softmax(q kᵀ/√d) v written out (:func:`llmlab.anatomy.attention`, notebook 09):
  the n×n scores and probabilities are materialised and the probabilities saved for backward;
* ``"sdpa_math"``: PyTorch's ``scaled_dot_product_attention`` restricted to its math backend,
  the same formulation inside torch;
* ``"sdpa"``: ``scaled_dot_product_attention`` as PyTorch picks it. On the CPU that is a fused
  flash-style C++ kernel (it too saves O(n) bytes); on a GPU FlashAttention-2, memory-efficient
  attention or cuDNN;
* ``"flash"``: :func:`llmlab.attention.flash_attention`, tiled in Python.

:func:`attention_memory` measures one forward + backward pass (saved bytes with
:class:`llmlab.memory.SavedTensorTracker`, peak allocation with
:func:`llmlab.memory.peak_allocated_bytes`); :func:`attention_flops` counts the matmul FLOPs
with ``torch.utils.flop_counter.FlopCounterMode`` (it does not see inside SDPA's fused CPU
kernel); :func:`attention_traffic` is the textbook model of slow-memory (HBM) traffic of one
forward pass on a GPU, plain vs FlashAttention, and the on-chip memory a block needs;
:func:`attention_timings` times the methods side by side and :func:`op_profile` splits a call's
time between matrix multiplies and the rest.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from .._checks import check_bool, check_callable, check_choice, check_int, check_sequence
from .._torch import isolated_rng, resolve_device, resolve_dtype
from ..anatomy.masks import attention_mask
from ..anatomy.tiny import attention
from ..memory import SavedTensorTracker, peak_allocated_bytes
from ..timing import Timing, cpu_profile, cpu_threads, interleaved
from .flash import flash_attention

__all__ = ["ATTENTION_METHODS", "SHARED_MEMORY_PER_BLOCK", "L2_CACHE_BYTES", "attention_function", "attention_inputs", "AttentionMemory", "attention_memory",
           "AttentionFlops", "attention_flops", "AttentionTraffic", "attention_traffic", "attention_timings",
           "OpProfile", "op_profile"]

#: The methods compared, and what each is.
ATTENTION_METHODS = {
    "plain": "softmax(q kᵀ/√d) v written out (llmlab.anatomy.attention): n×n scores materialised",
    "sdpa_math": "PyTorch SDPA, math backend: the same materialised formulation inside torch",
    "sdpa": "PyTorch SDPA, default backend (CPU: a fused flash-style C++ kernel)",
    "flash": "llmlab.attention.flash_attention: tiled over key blocks, in Python",
}

#: The most shared memory one CUDA thread block may use (opt-in maximum, bytes; CUDA C++
#: Programming Guide, compute capability 8.0 and 9.0): the on-chip room a FlashAttention block gets.
SHARED_MEMORY_PER_BLOCK = {"A100": 166_912, "H100": 232_448}

#: The L2 cache between the SMs and HBM (bytes; NVIDIA's A100 and H100 SXM tuning guides: 40 MB and
#: 50 MB). K and V blocks re-read by thread blocks that run at the same time are mostly served from
#: here: :func:`attention_traffic` counts every re-read as HBM traffic, an upper bound.
L2_CACHE_BYTES = {"A100": 40 * 2**20, "H100": 50 * 2**20}

# Sequence lengths past this would need tens of GiB for the plain method's n×n matrices.
_MAX_N = 2**16


def attention_function(method: str, *, causal: bool = False, block_size: int = 64) -> Callable:
    """``f(q, k, v) -> out`` computing attention the way ``method`` names (:data:`ATTENTION_METHODS`)."""
    check_choice("method", method, ATTENTION_METHODS)
    causal = check_bool("causal", causal)
    block_size = check_int("block_size", block_size, low=1)
    if method == "flash":
        return lambda q, k, v: flash_attention(q, k, v, causal=causal, block_size=block_size)
    if method == "sdpa":
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    if method == "sdpa_math":
        def sdpa_math(q, k, v):
            with sdpa_kernel(SDPBackend.MATH):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return sdpa_math

    def plain(q, k, v):
        mask = attention_mask("causal", q.shape[-2], device=q.device) if causal else None
        return attention(q, k, v, mask)
    return plain


def attention_inputs(n: int, *, d: int = 64, heads: int = 1, dtype=torch.float32, device=None, seed: int = 0):
    """Random ``(q, k, v, d_out)``, each (1, heads, n, d), q/k/v requiring gradients; seeded."""
    n = check_int("n", n, low=1, high=_MAX_N)
    d = check_int("d", d, low=1, high=1024)
    heads = check_int("heads", heads, low=1, high=1024)
    dtype = resolve_dtype(dtype, default=torch.float32)
    device = resolve_device(device)
    seed = check_int("seed", seed, low=0)
    with isolated_rng(seed):
        tensors = [torch.randn(1, heads, n, d, dtype=dtype) for _ in range(4)]
    q, k, v, d_out = (t.to(device) for t in tensors)
    return q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), d_out


@dataclass(frozen=True)
class AttentionMemory:
    """Bytes of one forward + backward pass of ``method`` at sequence length ``n``.

    ``saved_bytes``: the most bytes autograd held for backward (inputs q, k, v included, as the
    methods save them too); ``peak_bytes``: the most bytes torch's allocator held above the
    inputs during forward and backward (outputs, saved tensors, temporaries, gradients).
    """

    method: str
    n: int
    d: int
    saved_bytes: int
    peak_bytes: int


def attention_memory(n: int, *, method: str = "flash", d: int = 64, causal: bool = False, block_size: int = 64,
                     dtype=torch.float32, device=None, seed: int = 0) -> AttentionMemory:
    """Measure one forward + backward pass of one head (1, 1, n, d); see :class:`AttentionMemory`."""
    fn = attention_function(method, causal=causal, block_size=block_size)
    device = resolve_device(device)
    q, k, v, d_out = attention_inputs(n, d=d, dtype=dtype, device=device, seed=seed)
    tracker = SavedTensorTracker()

    def step():
        q.grad = k.grad = v.grad = None     # each pass allocates its gradients afresh
        with tracker:
            out = fn(q, k, v)
        out.backward(d_out)

    if device.type == "cuda":   # first call: cuBLAS workspace and lazy kernel state, not attention's bytes
        step()
        tracker = SavedTensorTracker()
    peak = peak_allocated_bytes(step, device=device)
    return AttentionMemory(method, n, d, tracker.peak_bytes, peak)


@dataclass(frozen=True)
class AttentionFlops:
    """Matmul FLOPs of one pass, counted by ``FlopCounterMode``: ``forward``, ``backward``."""

    method: str
    n: int
    d: int
    forward: int
    backward: int

    @property
    def total(self) -> int:
        return self.forward + self.backward


def attention_flops(n: int, *, method: str = "flash", d: int = 64, causal: bool = False,
                    block_size: int = 64) -> AttentionFlops:
    """Count the matmul FLOPs of one forward and one backward pass of one head on the CPU (2 per
    multiply-add; softmax and the other elementwise work are not counted). SDPA's fused CPU
    kernel is one opaque operation that ``FlopCounterMode`` does not count (it reports 0)."""
    fn = attention_function(method, causal=causal, block_size=block_size)
    q, k, v, d_out = attention_inputs(n, d=d, device="cpu")
    with FlopCounterMode(display=False) as counter:
        out = fn(q, k, v)
    forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        out.backward(d_out)
    return AttentionFlops(method, n, d, forward, counter.get_total_flops())


@dataclass(frozen=True)
class AttentionTraffic:
    """Modelled slow-memory (HBM) bytes of one attention forward pass of one head on a GPU.

    A model, forward only, with no cache: every K/V re-read is counted as HBM traffic, although on
    a real GPU most of them hit the L2 cache (:data:`L2_CACHE_BYTES`; one head's K and V at
    n = 4,096 in bf16 is 1 MiB), and plain attention's n×n matrices may partly stay there too.

    ``plain_bytes``: write S, read S, write P, read P (4n² elements) plus read Q, K, V and write
    O (4nd). ``flash_bytes``: every query block of ``block_size`` rows reads its Q block once,
    streams all of K and V (``kv_read_bytes`` in total, 2nd per query block) and writes its
    output block and its log-sum-exp. ``sram_bytes``: what one block keeps on chip: its Q, K and
    V tiles (input dtype), the block×block scores and the output accumulator (float32), and the
    running max and sum.
    """

    n: int
    d: int
    block_size: int
    element_bytes: int
    plain_bytes: int
    flash_bytes: int
    kv_read_bytes: int
    sram_bytes: int

    @property
    def ratio(self) -> float:
        """How many times fewer bytes FlashAttention moves than plain attention: about 2B/d for
        n much larger than B and d, whatever n is."""
        return self.plain_bytes / self.flash_bytes

    @property
    def kv_bytes(self) -> int:
        """Bytes of this head's K and V (read once per query block)."""
        return self.element_bytes * 2 * self.n * self.d


def attention_traffic(n: int, d: int = 64, block_size: int = 64, *, dtype=torch.bfloat16) -> AttentionTraffic:
    """The HBM traffic model of :class:`AttentionTraffic` (Dao et al. 2022, section 3.2: plain
    attention moves Θ(nd + n²) elements, FlashAttention Θ(n²d²/M) for on-chip memory M; here
    with square blocks, so the K and V re-reads are 2nd · ceil(n / block_size))."""
    n = check_int("n", n, low=1, high=2**24)
    d = check_int("d", d, low=1, high=1024)
    block_size = check_int("block_size", block_size, low=1, high=2**16)
    e = torch.finfo(resolve_dtype(dtype, default=torch.bfloat16)).bits // 8
    n_blocks = math.ceil(n / block_size)
    plain = e * (4 * n * n + 4 * n * d)
    kv_reads = e * 2 * n * d * n_blocks
    flash = e * 2 * n * d + kv_reads + 4 * n          # Q in, O out, K/V streamed, L (float32) out
    b = block_size
    sram = e * 3 * b * d + 4 * (b * b + b * d + 2 * b)
    return AttentionTraffic(n, d, block_size, e, plain, flash, kv_reads, sram)


def attention_timings(n: int, *, methods=("flash", "sdpa"), d: int = 64, causal: bool = False, block_size: int = 64,
                      backward: bool = True, rounds: int = 3, threads: int | None = None, device=None,
                      seed: int = 0) -> dict[str, Timing]:
    """Wall time of one forward (+ backward) pass of one head per method, interleaved round by
    round (:func:`llmlab.timing.interleaved`, one warm-up each): method -> :class:`Timing`.
    ``threads``: CPU threads to time with (:func:`llmlab.timing.cpu_threads`; None: as set)."""
    methods = [check_choice("methods", m, ATTENTION_METHODS)
               for m in check_sequence("methods", methods, what="method names")]
    fns = {m: attention_function(m, causal=causal, block_size=block_size) for m in methods}
    backward = check_bool("backward", backward)
    rounds = check_int("rounds", rounds, low=1, high=1000)
    device = resolve_device(device)
    q, k, v, d_out = attention_inputs(n, d=d, device=device, seed=seed)

    def run(fn):
        def step():
            if backward:
                q.grad = k.grad = v.grad = None
                fn(q, k, v).backward(d_out)
            else:
                with torch.no_grad():
                    fn(q, k, v)
        return step

    with cpu_threads(threads, device=device):
        return interleaved({m: run(fn) for m, fn in fns.items()}, rounds=rounds, device=device)


@dataclass(frozen=True)
class OpProfile:
    """Where a CPU call spends its time, as the profiler sees it: ``n_ops`` torch operators
    launched from Python (views included), the seconds inside matrix multiplies, inside the other
    operators, and ``seconds`` in all (wall time of the call, the profiler's start and stop left
    out). A fused operator's own matrix products (SDPA's CPU kernel calls BLAS directly) are not
    operators: the profiler counts them in ``other_seconds``."""

    n_ops: int
    matmul_seconds: float
    other_seconds: float
    seconds: float

    @property
    def matmul_share(self) -> float:
        """Share of the operators' time spent in matrix multiplies."""
        return self.matmul_seconds / (self.matmul_seconds + self.other_seconds)

    @property
    def outside_seconds(self) -> float:
        """Wall time not inside any torch operator: Python, argument handling, dispatch, and the
        profiler's own bookkeeping per operator."""
        return max(0.0, self.seconds - self.matmul_seconds - self.other_seconds)


_MATMULS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")


def op_profile(fn: Callable[[], object]) -> OpProfile:
    """Run ``fn()`` once under ``torch.profiler`` (CPU) and split its operator time: see :class:`OpProfile`."""
    check_callable("fn", fn, what="a callable taking no arguments")
    wall = []

    def timed():
        t0 = time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)

    prof = cpu_profile(timed)
    seconds = wall[0]
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    top = [e for e in events if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
    matmul = sum(e.self_cpu_time_total for e in events if e.name in _MATMULS) / 1e6
    other = sum(e.self_cpu_time_total for e in events if e.name not in _MATMULS) / 1e6
    return OpProfile(len(top), matmul, other, seconds)
