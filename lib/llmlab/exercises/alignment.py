"""Exercises of notebook 11 (prompting and alignment)."""

from __future__ import annotations

import math

import torch

from ..alignment import dpo_loss, optimal_policy
from ..stats import wilson_interval
from .base import call_safely, close, direction, exercise, is_callable, is_number, pair_of

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


def _queries_needed(p: float, z: float = 1.959963984540054) -> int:
    """The smallest n whose Wilson interval around an observed accuracy p has its lower end above 0.5."""
    n = 1
    while (p + z * z / (2 * n) - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n) <= 0.5:
        n += 1
    return n


@exercise("11.2", "the Wilson interval of 20 of 32", "a pair (low, high) of numbers", pair_of(is_number))
def _wilson(answer):
    low, high = (float(x) for x in answer)
    truth = wilson_interval(20, 32)
    if close(low, truth[0], 1e-3) and close(high, truth[1], 1e-3):
        return True, (f"[{truth[0]:.3f}, {truth[1]:.3f}]: 0.5 is inside, so 20 of 32 does not show the prompt beats "
                      f"chance; at an accuracy of 0.62 it takes {_queries_needed(0.62)} queries before the lower end "
                      "clears 0.5.")
    p, half = 20 / 32, 1.96 * math.sqrt(20 / 32 * 12 / 32 / 32)
    if close(low, p - half, 1e-3) and close(high, p + half, 1e-3):
        return False, "that is the textbook p ± z√(p(1−p)/n); Wilson's interval is centred at (p + z²/2n)/(1 + z²/n)."
    if high < low:
        return False, "give (low, high) with low below high."
    return False, (f"low is {direction(low, truth[0])} or high is {direction(high, truth[1])}: with p = k/n and z = 1.96, "
                   "centre (p + z²/2n)/(1 + z²/n), half-width z√(p(1−p)/n + z²/4n²)/(1 + z²/n).")


@exercise("11.4", "the β-optimal policy on two answers", "a number (a probability)", is_number)
def _optimal(answer):
    truth = float(optimal_policy(torch.log(torch.tensor([0.2, 0.8])), torch.tensor([1.0, 0.0]), beta=0.5).probs[0])
    got = float(answer)
    if close(got, truth, 1e-3):
        return True, (f"{truth:.3f}: π* ∝ π_ref · exp(r/β); the reference's 0.2 becomes {truth:.2f} because a reward gap "
                      "of 1 at β = 0.5 multiplies the odds by e².")
    wrong_beta = float(optimal_policy(torch.log(torch.tensor([0.2, 0.8])), torch.tensor([1.0, 0.0]), beta=2.0).probs[0])
    if close(got, wrong_beta, 1e-3):
        return False, "β divides the reward (exp(r/β)), it does not multiply it."
    if close(got, 0.2, 1e-3):
        return False, "that is the reference: the optimum tilts it by exp(r/β) and renormalises."
    if close(got, math.exp(2) / (1 + math.exp(2)), 1e-3):
        return False, "the reference probabilities are missing: π* ∝ π_ref(y) · exp(r(y)/β), not exp(r/β) alone."
    return False, f"{direction(got, truth)}: multiply each answer's π_ref by exp(r/β), then divide by the sum over both answers."
