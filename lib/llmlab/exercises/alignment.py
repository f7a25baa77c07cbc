"""Exercises of notebook 11 (prompting and alignment)."""

from __future__ import annotations

import torch

from ..alignment import dpo_loss
from .base import call_safely, exercise, is_callable

# --- 11 prompting and alignment ------------------------------------------------------------------

@exercise("11.1", "the DPO loss", "a function dpo(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta) -> losses",
          is_callable)
def _dpo(dpo):
    g = torch.Generator().manual_seed(0)
    extreme = [torch.tensor([-300.0, -1.0]), torch.tensor([-1.0, -300.0]),  # margins of ∓598 nats
               torch.tensor([-1.0, -300.0]), torch.tensor([-300.0, -1.0])]
    cases = [(4, 0.1, 5.0), (7, 1.0, 1.0), (3, 0.5, 200.0), (2, 1.0, None)]
    for pairs, beta, scale in cases:
        logps = extreme if scale is None else [-(torch.rand(pairs, generator=g) * scale + 1) for _ in range(4)]
        truth = dpo_loss(*logps, beta=beta)[0]
        got, error = call_safely(dpo, *[t.clone() for t in logps], beta)
        if error:
            return False, error
        if not isinstance(got, torch.Tensor) or got.shape != truth.shape:
            return False, f"return one loss per pair: a tensor of shape {tuple(truth.shape)}."
        if not bool(torch.isfinite(got).all()):
            return False, "non-finite losses for margins of hundreds of nats: compute −log σ(x) as softplus(−x)."
        if torch.allclose(got, truth, rtol=1e-5, atol=1e-6):
            continue
        pc, pr, rc, rr = logps
        if torch.allclose(got, dpo_loss(pr, pc, rr, rc, beta=beta)[0], rtol=1e-5, atol=1e-6):
            return False, "chosen and rejected are swapped: the loss falls as the chosen answer gains on the rejected one."
        if torch.allclose(got, -torch.nn.functional.logsigmoid((pc - pr) - (rc - rr)), rtol=1e-5, atol=1e-6):
            return False, f"β = {beta} is missing: it scales the log-ratio margin inside the sigmoid."
        if torch.allclose(got, -torch.nn.functional.logsigmoid(beta * (pc - pr)), rtol=1e-5, atol=1e-6):
            return False, "the reference model is missing: DPO compares log-ratios π/π_ref, not raw log-probabilities."
        return False, "your losses differ from llmlab.alignment.dpo_loss: −log σ(β[(π_w − ref_w) − (π_l − ref_l)])."
    return True, "the same per-pair losses as llmlab.alignment.dpo_loss (itself tested against TRL)."
