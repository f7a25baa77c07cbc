"""Bench section ``attention`` (topic 15, notebook 14): FlashAttention's memory and time.

Memory: saved-for-backward bytes and the allocator's peak over one forward + backward pass of
one head, llmlab's tiled ``flash_attention`` against plain attention (the n×n scores
materialised; goal: <= 0.1x of plain at n = 4,096) and against PyTorch's SDPA. Time: the same
pass, ``flash_attention`` against SDPA, interleaved; on CUDA also PyTorch's own flash backend
against its math backend (bf16), the speed-up the kernel exists for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..attention import attention_memory, attention_timings
from ..timing import interleaved
from .report import Row, section, timed_row

__all__ = ["bench_attention"]


def _sdpa_backends(device, n: int, rounds: int) -> dict:
    """Forward + backward of SDPA with only the flash or only the math backend (bf16, 16 heads)."""
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, 16, n, 64, device=device, dtype=torch.bfloat16, generator=g).requires_grad_()
               for _ in range(3))

    def run(backend):
        def step():
            with sdpa_kernel(backend):
                F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
        return step

    return interleaved({"flash": run(SDPBackend.FLASH_ATTENTION), "math": run(SDPBackend.MATH)},
                       rounds=rounds, device=device)


@section("attention")
def bench_attention(device: torch.device, size: str = "full") -> list[Row]:
    """Saved bytes and peak allocation at n = 4,096 (d = 64, one head, float32), flash vs plain and
    SDPA; fwd+bwd time flash vs SDPA; on CUDA, SDPA's flash backend vs its math backend."""
    n, rounds = (4096, 5) if size == "full" else (256, 2)
    shape = f"n={n}, d=64, one head, fp32, fwd+bwd"
    mem = {m: attention_memory(n, method=m, device=device) for m in ("flash", "plain", "sdpa")}
    peak_how = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "torch.profiler memory events"
    rows = []
    for peer, peer_name in (("plain", "plain attention (n×n scores materialised)"),
                            ("sdpa", "torch SDPA (default backend)")):
        goal = "; goal <= 0.1x of plain (ratio >= 10)" if peer == "plain" else ""
        rows += [
            Row("attention", f"saved for backward ({shape})", mem["flash"].saved_bytes / 2**20,
                mem[peer].saved_bytes / 2**20, "MiB", peer_name=peer_name,
                note="saved_tensors_hooks, inputs included" + goal),
            Row("attention", f"peak allocation ({shape})", mem["flash"].peak_bytes / 2**20,
                mem[peer].peak_bytes / 2**20, "MiB", peer_name=peer_name, note=peak_how + goal),
        ]
    t = attention_timings(n, methods=("flash", "sdpa"), rounds=rounds, device=device)
    where = "CPU: SDPA is one fused C++ operator, ours a Python loop of torch operators per key block" \
        if device.type == "cpu" else "ours: Python loop of torch ops; SDPA: fused CUDA kernel"
    rows.append(timed_row("attention", f"time ({shape}, block 64)", t["flash"], t["sdpa"],
                          peer_name="torch SDPA (default backend)", note=where))
    if device.type == "cuda":
        big = 8192 if size == "full" else 1024
        b = _sdpa_backends(device, big, rounds)
        rows.append(timed_row("attention", f"torch SDPA flash backend vs math backend (n={big}, 16 heads, bf16, causal, "
                                           "fwd+bwd)", b["flash"], b["math"], peer_name="torch SDPA math backend",
                              note="both PyTorch's: the llmlab column is the FLASH_ATTENTION backend"))
    return rows
