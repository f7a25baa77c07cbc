"""Bench section ``attention`` (topic 15, notebook 14): FlashAttention's memory and time.

Memory: saved-for-backward bytes and the allocator's peak over one forward + backward pass of
one head, llmlab's tiled ``flash_attention`` against plain attention (the n×n scores
materialised; goal: <= 0.1x of plain at n = 4,096) and against PyTorch's SDPA. Time: the same
pass, ``flash_attention`` against SDPA, interleaved; on CUDA also PyTorch's own fused kernel
(FlashAttention-2 from sm80 on, else the memory-efficient kernel in fp16:
:func:`llmlab.attention.fused_sdpa_kernel`) against its math backend, not causal (a causal
fused kernel skips the masked half, the math backend computes it and masks it).
"""

from __future__ import annotations

import torch

from ..attention import (attention_memory, attention_timings, fused_sdpa_kernel, math_backend_length,
                         sdpa_backend_timings)
from .report import Row, section, timed_row

__all__ = ["bench_attention"]


@section("attention")
def bench_attention(device: torch.device, size: str = "full") -> list[Row]:
    """Saved bytes and peak allocation at n = 4,096 (d = 64, one head, float32), flash vs plain and
    SDPA; fwd+bwd time flash vs SDPA; on CUDA, SDPA's fused kernel vs its math backend."""
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
    t = attention_timings(n, methods=("flash", "sdpa"), rounds=rounds, threads=1, device=device)
    where = "CPU, one thread each: SDPA is one fused C++ operator, ours a Python loop of torch operators per key block" \
        if device.type == "cpu" else "ours: Python loop of torch ops; SDPA: fused CUDA kernel"
    rows.append(timed_row("attention", f"time ({shape}, block 64)", t["flash"], t["sdpa"],
                          peer_name="torch SDPA (default backend)", note=where))
    if device.type == "cuda":
        kernel = fused_sdpa_kernel(device)
        big = math_backend_length(device, heads=16, longest=8192 if size == "full" else 1024)
        b = sdpa_backend_timings(big, kernel=kernel, rounds=rounds, device=device)
        dtype = str(kernel.dtype).removeprefix("torch.")
        rows.append(timed_row("attention", f"torch SDPA {kernel.name} vs math backend (n={big}, 16 heads, {dtype}, "
                                           "not causal, fwd+bwd)", b["fused"], b["math"],
                              peer_name="torch SDPA math backend (float32 inside)",
                              note=f"both PyTorch's: the llmlab column is the {kernel.backend.name} backend ({kernel.why})"))
    return rows
