"""The accept/reject rule of speculative sampling, on tensors (Leviathan et al. 2023, Algorithm 1).

The draft proposed x_1..x_γ, drawing x_i from q_i; the target's distributions at the same
positions are p_1..p_{γ+1}. Accept x_i with probability min(1, p_i(x_i) / q_i(x_i)), in order;
at the first rejection, draw the token from the residual norm(max(0, p_i - q_i)) and stop; when
all γ are accepted, draw one more from p_{γ+1}. For each position the result is distributed as
p_i: P(x) = q(x) min(1, p(x)/q(x)) + P(reject) norm(max(0, p - q))(x) = min(q, p)(x) + max(0, p - q)(x)
= p(x), because P(reject) = Σ max(0, q - p) = Σ max(0, p - q).
"""

from __future__ import annotations

import torch

__all__ = ["acceptance_probabilities", "residual_distribution", "verify"]


def acceptance_probabilities(p: torch.Tensor, q: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """min(1, p_i(x_i) / q_i(x_i)) for each drafted token: p, q (γ, vocab), tokens (γ,) -> (γ,)."""
    idx = torch.arange(tokens.shape[0], device=tokens.device)
    return torch.clamp(p[idx, tokens] / q[idx, tokens], max=1.0)


def residual_distribution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)) along the last axis: where to draw from after a rejection.

    A rejection is only possible where some q(x) > p(x), and then Σ max(0, p - q) = Σ max(0, q - p) > 0.
    When p = q there is nothing to correct: p itself is returned (instead of 0 / 0).
    """
    r = torch.clamp(p - q, min=0.0)
    total = r.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, r / torch.where(total > 0, total, 1.0), p)


def verify(p: torch.Tensor, q: torch.Tensor, tokens: torch.Tensor, *, generator: torch.Generator | None = None
           ) -> tuple[int, int]:
    """One round of speculative sampling: p (γ+1, vocab), q (γ, vocab), drafted tokens (γ,) ->
    (number accepted n, the next token). The tokens kept are ``tokens[:n]`` then the next one.

    Random numbers are drawn as Hugging Face's ``_speculative_sampling`` draws them: γ uniforms at
    once, then one multinomial draw, so both give the same tokens from the same generator state.
    """
    gamma = tokens.shape[0]
    u = torch.rand(gamma, generator=generator, device=p.device, dtype=p.dtype)
    accepted = u < acceptance_probabilities(p[:gamma], q, tokens)  # strict: p(x) = 0 is never accepted
    n = int((~accepted).cumsum(0).eq(0).sum())  # leading acceptances; the algorithm needs it on the host
    dist = residual_distribution(p[n], q[n]) if n < gamma else p[gamma]
    return n, int(torch.multinomial(dist, 1, generator=generator))
