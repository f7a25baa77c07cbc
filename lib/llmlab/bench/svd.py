"""Bench section ``svd`` (topic 6): one batched torch SVD vs NumPy, the rank-k rebuild, the slider step."""

from __future__ import annotations

import statistics

import numpy as np
import torch

from .. import svd
from ..timing import interleaved
from ..widgets import svd_explorer
from .report import Row, section, timed_row

__all__ = ["bench_svd"]


@section("svd")
def bench_svd(device: torch.device, size: str = "full") -> list[Row]:
    """Topic 6 on one (n, n, 3) photo: factorize (torch vs NumPy), rank-k rebuild, widget slider step."""
    n, rounds = (512, 7) if size == "full" else (64, 2)
    image = svd.demo_images(n)["astronaut"]  # (n, n, 3) float32 in [0, 1]
    shape = "×".join(map(str, image.shape))
    chw = np.ascontiguousarray(np.moveaxis(image, -1, 0))  # NumPy's batch layout (C, H, W), same numbers
    where = "GPU" if device.type == "cuda" else "CPU"

    t = interleaved({"ours": lambda: svd.factorize(image, device=device),
                     "numpy": lambda: np.linalg.svd(chw, full_matrices=False)}, rounds=rounds, device=device)
    rows = [timed_row("svd", f"factorize {shape} (one batched SVD, float32)", t["ours"], t["numpy"],
                      peer_name="numpy.linalg.svd (CPU)", note=f"llmlab on the {where}; same image, thin SVD")]

    f = svd.factorize(image, device=device)
    U, S, Vh = np.linalg.svd(chw, full_matrices=False)
    k = n // 8
    # A rebuild takes well under a millisecond: time 20 of them per run so the clock can resolve it.
    t = interleaved({"ours": lambda: [svd.reconstruct(f, k) for _ in range(20)],
                     "numpy": lambda: [(U[..., :k] * S[..., None, :k]) @ Vh[..., :k, :] for _ in range(20)]},
                    rounds=rounds, device=device)
    rows.append(timed_row("svd", f"reconstruct rank k={k} of {shape} (x20)", t["ours"], t["numpy"],
                          peer_name="NumPy (U_k Σ_k) @ V_kᵀ", note=f"llmlab on the {where}"))

    explorer = svd_explorer({"astronaut": image}, device=device)
    explorer.time_steps()  # warm-up sweep
    steps = explorer.time_steps()
    rows.append(Row("svd", f"widget slider step, median over k=1..{n} (reconstruct + redraw)",
                    statistics.median(steps) * 1e3, None, "ms",
                    note=f"target <= 30 ms; max {max(steps) * 1e3:.1f} ms over {len(steps)} steps"))
    return rows
