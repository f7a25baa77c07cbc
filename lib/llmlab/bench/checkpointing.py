"""Bench section ``checkpointing`` (topic 5): recompute cost and saved bytes of the strategies."""

from __future__ import annotations

import torch

from ..checkpointing import make_chain, measure, theory_saved_activations
from ..timing import interleaved
from .report import Row, section, timed_row

__all__ = ["bench_checkpointing"]


@section("checkpointing")
def bench_checkpointing(device: torch.device, size: str = "full") -> list[Row]:
    """An n-layer chain: time of sqrt and torch's checkpoint_sequential against store_all, and the
    saved bytes against the formulas; on CUDA also the allocator's peak."""
    n, batch, rounds = (64, 64, 7) if size == "full" else (9, 8, 2)
    width = (1024 if device.type == "cuda" else 256) if size == "full" else 32
    model = make_chain(n, width).to(device)
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(0)).to(device)
    shape = f"n={n}, width={width}, batch={batch}"
    t = interleaved({s: (lambda s=s: measure(model, x, s)) for s in ("store_all", "sqrt", "torch")},
                    rounds=rounds, device=device)
    rows = [
        timed_row("checkpointing", f"fwd+bwd time, sqrt checkpoints ({shape})", t["sqrt"], t["store_all"],
                  peer_name="store_all (no checkpointing)", note="ratio < 1: the recompute overhead"),
        timed_row("checkpointing", f"fwd+bwd time, torch checkpoint_sequential ({shape})", t["torch"], t["store_all"],
                  peer_name="store_all (no checkpointing)", note="llmlab column is torch's strategy here"),
        timed_row("checkpointing", f"fwd+bwd time, sqrt: llmlab vs torch ({shape})", t["sqrt"], t["torch"],
                  peer_name="torch.utils.checkpoint (use_reentrant=False)"),
    ]
    act_mib = batch * width * 4 / 2**20
    for s in ("store_all", "recompute_all", "sqrt"):
        st = measure(model, x, s)
        rows.append(Row("checkpointing", f"peak saved activations, {s} ({shape})", st.peak_saved_bytes / 2**20,
                        theory_saved_activations(n, s) * act_mib, "MiB", peer_name="formula",
                        note=f"{st.forward_calls} layer forwards"))
    if device.type == "cuda":
        # An activation-dominated shape (8 MiB per activation, 16 MiB of weights): the allocator's
        # peak then shows what the strategy keeps rather than the gradients all strategies make.
        big_batch = 8192 if size == "full" else 512
        big = f"n={n}, width=256, batch={big_batch}"
        model = make_chain(n, 256).to(device)
        x = torch.randn(big_batch, 256, generator=torch.Generator().manual_seed(0)).to(device)
        peak = {s: measure(model, x, s).cuda_peak_bytes / 2**20 for s in ("store_all", "sqrt", "torch")}
        for s in ("sqrt", "torch"):
            rows.append(Row("checkpointing", f"allocator peak, {s} ({big})", peak[s], peak["store_all"], "MiB",
                            peer_name="store_all", note="torch.cuda.max_memory_allocated above the resting state"))
    return rows
