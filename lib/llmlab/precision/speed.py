"""Speed: one training step of a transformer block in fp32, tf32 and bf16 autocast.

On a GPU, tf32 (fp32 storage, tensor-core matmuls with a 10-bit mantissa) and bf16 autocast are
usually several times faster than full fp32; the CPU has no tensor cores. Timed with
:func:`llmlab.timing.timeit` (median of repeats, CUDA-synchronised).
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_choice, check_int
from .._torch import isolated_rng, resolve_device
from ..timing import timeit

__all__ = ["STEP_MODES", "block_step_seconds"]

STEP_MODES = ("fp32", "tf32", "bf16")


def block_step_seconds(mode: str, *, device=None, d_model: int = 256, n_heads: int = 4, batch: int = 8,
                       seq: int = 128, repeat: int = 5, warmup: int = 2, seed: int = 0) -> float:
    """Median wall time (s) of one training step of a pre-norm transformer block.

    One step: forward of ``(batch, seq, d_model)`` random inputs through
    ``nn.TransformerEncoderLayer(d_model, n_heads, 4 d_model)``, loss ``mean(out^2)`` in fp32,
    backward, AdamW. ``mode``: ``"fp32"`` (full fp32 matmuls), ``"tf32"`` (fp32 storage, matmuls
    on tensor cores with a 10-bit mantissa: ``torch.set_float32_matmul_precision("high")``; CUDA
    only) or ``"bf16"`` (``torch.autocast`` to bfloat16, fp32 master weights and optimizer).
    The global matmul precision is restored afterwards, and the caller's random stream is left
    untouched. ``device`` defaults to the CPU (pass the GPU explicitly: tf32 exists only there).
    """
    check_choice("mode", mode, STEP_MODES)
    device = torch.device("cpu") if device is None else resolve_device(device)
    if mode == "tf32" and device.type != "cuda":
        raise ValueError("mode 'tf32' needs a CUDA device (tensor cores); use 'fp32' or 'bf16' on the CPU")
    d_model = check_int("d_model", d_model, low=1)
    n_heads = check_int("n_heads", n_heads, low=1)
    batch = check_int("batch", batch, low=1)
    seq = check_int("seq", seq, low=1)
    repeat = check_int("repeat", repeat, low=1)
    warmup = check_int("warmup", warmup, low=0)
    if d_model % n_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
    with isolated_rng(check_int("seed", seed, low=0)):
        block = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout=0.0, batch_first=True,
                                           norm_first=True).to(device)
        x = torch.randn(batch, seq, d_model).to(device)
    opt = torch.optim.AdamW(block.parameters(), lr=1e-4)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode == "bf16"):
            out = block(x)
        out.float().pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if mode == "tf32" else "highest")
    try:
        return timeit(step, repeat=repeat, warmup=warmup, device=device)
    finally:
        torch.set_float32_matmul_precision(previous)
