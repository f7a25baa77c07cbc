"""Speed: one training step of a transformer block in fp32, tf32 and bf16 autocast.

On a GPU, tf32 (fp32 storage, tensor-core matmuls with a 10-bit mantissa) and bf16 autocast are
usually several times faster than full fp32; the CPU has no tensor cores. :func:`block_step`
builds the step; :func:`block_step_seconds` times one mode (:func:`llmlab.timing.timeit`) and
:func:`block_step_timings` several modes interleaved (:func:`llmlab.timing.interleaved`), which is
how a fair ratio between them is measured.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_choice, check_int
from .._torch import isolated_rng, resolve_device
from ..timing import Timing, interleaved, timeit

__all__ = ["STEP_MODES", "block_step", "block_step_seconds", "block_step_timings"]

STEP_MODES = ("fp32", "tf32", "bf16")


def block_step(mode: str, *, device=None, d_model: int = 256, n_heads: int = 4, batch: int = 8, seq: int = 128,
               seed: int = 0):
    """A function running one training step of a pre-norm transformer block in ``mode``.

    One step: forward of ``(batch, seq, d_model)`` random inputs through
    ``nn.TransformerEncoderLayer(d_model, n_heads, 4 d_model)``, loss ``mean(out^2)`` in fp32,
    backward, AdamW. ``mode``: ``"fp32"`` (full fp32 matmuls), ``"tf32"`` (fp32 storage, matmuls
    on tensor cores with a 10-bit mantissa: ``torch.set_float32_matmul_precision("high")``; CUDA
    only) or ``"bf16"`` (``torch.autocast`` to bfloat16, fp32 master weights and optimizer).
    Each call sets the matmul precision it needs and restores the global one, so steps of
    different modes can be interleaved. The caller's random stream is left untouched.
    ``device`` defaults to the CPU (pass the GPU explicitly: tf32 exists only there).
    """
    check_choice("mode", mode, STEP_MODES)
    device = torch.device("cpu") if device is None else resolve_device(device)
    if mode == "tf32" and device.type != "cuda":
        raise ValueError("mode 'tf32' needs a CUDA device (tensor cores); use 'fp32' or 'bf16' on the CPU")
    d_model = check_int("d_model", d_model, low=1, high=16384)
    n_heads = check_int("n_heads", n_heads, low=1)
    batch = check_int("batch", batch, low=1, high=4096)
    seq = check_int("seq", seq, low=1, high=65536)
    if d_model % n_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
    with isolated_rng(check_int("seed", seed, low=0)):
        block = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout=0.0, batch_first=True,
                                           norm_first=True).to(device)
        x = torch.randn(batch, seq, d_model).to(device)
    opt = torch.optim.AdamW(block.parameters(), lr=1e-4)
    precision = "high" if mode == "tf32" else "highest"

    def step():
        previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision(precision)
        try:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode == "bf16"):
                out = block(x)
            out.float().pow(2).mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        finally:
            torch.set_float32_matmul_precision(previous)

    return step


def block_step_seconds(mode: str, *, device=None, d_model: int = 256, n_heads: int = 4, batch: int = 8,
                       seq: int = 128, repeat: int = 5, warmup: int = 2, seed: int = 0) -> float:
    """Median wall time (s) of one :func:`block_step` in ``mode`` over ``repeat`` runs after ``warmup``."""
    step = block_step(mode, device=device, d_model=d_model, n_heads=n_heads, batch=batch, seq=seq, seed=seed)
    return timeit(step, repeat=repeat, warmup=warmup, device=torch.device("cpu") if device is None else device)


def block_step_timings(modes=("fp32", "bf16"), *, device=None, rounds: int = 5, warmup: int = 2,
                       **shape) -> dict[str, Timing]:
    """mode -> :class:`llmlab.timing.Timing` of :func:`block_step`, the modes interleaved round by round.

    ``shape``: ``d_model``, ``n_heads``, ``batch``, ``seq``, ``seed`` as in :func:`block_step`. The step of
    ``python -m llmlab.bench`` (precision section), which passes its own list of modes; :func:`block_step`
    checks each mode and the shape, :func:`llmlab.timing.interleaved` the rounds.
    """
    steps = {mode: block_step(mode, device=device, **shape) for mode in modes}
    return interleaved(steps, rounds=rounds, warmup=warmup, device=torch.device("cpu") if device is None else device)
