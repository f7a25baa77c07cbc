"""Bench section ``precision`` (topic 8): step time in fp32 / bf16 (/ tf32), and the 16 B/param ledger."""

from __future__ import annotations

import torch
from torch import nn

from .._torch import isolated_rng
from ..memory import measured_ledger, memory_ledger
from ..precision import block_step_timings, mixed_precision_setup
from .report import Row, section, timed_row

__all__ = ["bench_precision"]


@section("precision")
def bench_precision(device: torch.device, size: str = "full") -> list[Row]:
    """Step time of a transformer block: bf16 autocast (and tf32 on CUDA) vs fp32, interleaved;
    and the measured mixed-precision AdamW model states against the 16 B/param formula."""
    cuda = device.type == "cuda"
    if size == "full":
        shape = dict(d_model=1024, n_heads=16, batch=16, seq=512) if cuda else dict(d_model=256, n_heads=4, batch=8, seq=128)
        rounds, width = (10 if cuda else 5), 512
    else:
        shape, rounds, width = dict(d_model=32, n_heads=2, batch=2, seq=8), 2, 16
    where = "CUDA" if cuda else "CPU: bf16 speed depends on AVX512-BF16/AMX support"
    modes = ("fp32", "bf16", "tf32") if cuda else ("fp32", "bf16")
    t = block_step_timings(modes, device=device, rounds=rounds, **shape)
    rows = []
    for mode in modes[1:]:
        label = "bf16 autocast" if mode == "bf16" else "tf32 matmuls"
        rows.append(timed_row("precision", f"train step, transformer block d={shape['d_model']}, {label}", t[mode],
                              t["fp32"], peer_name="fp32 (same block, same run)",
                              note=f"{where}; batch {shape['batch']} x seq {shape['seq']}, fwd+bwd+AdamW; "
                                   "ratio = speed-up"))
    with isolated_rng(0):
        model = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)).to(device)
        x = torch.randn(16, width, device=device, dtype=torch.bfloat16)
    opt = mixed_precision_setup(model, torch.bfloat16, optimizer="adamw", lr=1e-3)
    model(x).float().pow(2).mean().backward()
    opt.step()
    measured, formula = measured_ledger(model, opt), memory_ledger(model, precision="mixed")
    n = sum(p.numel() for p in model.parameters())
    rows.append(Row("precision", "mixed-precision AdamW model states (bf16 MLP)", measured.total / n,
                    formula.total / n, "B/param", peer_name="formula 2+2+4+4+4",
                    note=f"measured tensors after one step; {measured.other} B of AdamW step counters"))
    return rows
