"""The accept/reject rule of speculative sampling, on tensors (Leviathan et al. 2023, Algorithm 1).

The draft proposed x_1..x_γ, drawing x_i from q_i; the target's distributions at the same
positions are p_1..p_{γ+1}. Accept x_i with probability min(1, p_i(x_i) / q_i(x_i)), in order;
at the first rejection, draw the token from the residual norm(max(0, p_i - q_i)) and stop; when
all γ are accepted, draw one more from p_{γ+1}. For each position the result is distributed as
p_i: P(x) = q(x) min(1, p(x)/q(x)) + P(reject) norm(max(0, p - q))(x) = min(q, p)(x) + max(0, p - q)(x)
= p(x), because P(reject) = Σ max(0, q - p) = Σ max(0, p - q).

The public functions check their arguments; :func:`~llmlab.serving.speculative_generate` and
:mod:`llmlab.serving.exact` call the same rule through the unchecked ``accept``, ``residual`` and
``verify_round``.
"""

from __future__ import annotations

import torch

from .._checks import check_tensor

__all__ = ["acceptance_probabilities", "residual_distribution", "verify"]


def accept(p: torch.Tensor, q: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """min(1, p_i(x_i) / q_i(x_i)) (unchecked; see :func:`acceptance_probabilities`)."""
    idx = torch.arange(tokens.shape[0], device=tokens.device)
    return torch.clamp(p[idx, tokens] / q[idx, tokens], max=1.0)


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)), p where p = q (unchecked; see :func:`residual_distribution`)."""
    r = torch.clamp(p - q, min=0.0)
    total = r.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, r / torch.where(total > 0, total, 1.0), p)


def verify_round(p: torch.Tensor, q: torch.Tensor, tokens: torch.Tensor, generator=None) -> tuple[int, int]:
    """One round of the rule (unchecked; see :func:`verify`)."""
    gamma = tokens.shape[0]
    u = torch.rand(gamma, generator=generator, device=p.device, dtype=p.dtype)
    accepted = u < accept(p[:gamma], q, tokens)  # strict: a token with p(x) = 0 is never accepted
    n = int((~accepted).cumsum(0).eq(0).sum())  # leading acceptances: the algorithm needs the count on the host
    dist = residual(p[n], q[n]) if n < gamma else p[gamma]
    return n, int(torch.multinomial(dist, 1, generator=generator))


def _check_probs(name: str, x, rows: int | None = None) -> torch.Tensor:
    check_tensor(name, x, dim=2, floating=True, min_numel=1)
    if rows is not None and x.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} rows (one distribution per position), got shape {tuple(x.shape)}")
    return x


def _check_tokens(tokens, gamma: int, vocab: int) -> torch.Tensor:
    check_tensor("tokens", tokens, dim=1, integer=True)
    if tokens.shape[0] != gamma:
        raise ValueError(f"tokens must hold one drafted token per row of q ({gamma}), got {tokens.shape[0]}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
        raise ValueError(f"tokens must be ids in [0, {vocab - 1}], got values in [{int(tokens.min())}, {int(tokens.max())}]")
    return tokens


def acceptance_probabilities(p: torch.Tensor, q: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """min(1, p_i(x_i) / q_i(x_i)) for each drafted token: p, q (γ, vocab) probabilities, tokens (γ,) -> (γ,).

    A drafted token has q_i(x_i) > 0 (it was drawn from q); where q_i(x_i) = 0 the ratio is inf and
    clamps to 1."""
    _check_probs("p", p)
    _check_probs("q", q, rows=p.shape[0])
    if q.shape != p.shape:
        raise ValueError(f"p and q must have the same shape (γ, vocab), got {tuple(p.shape)} and {tuple(q.shape)}")
    return accept(p, q, _check_tokens(tokens, q.shape[0], q.shape[1]))


def residual_distribution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)) along the last axis: where the token comes from after a rejection.

    A rejection is only possible where some q(x) > p(x), and then Σ max(0, p - q) = Σ max(0, q - p) > 0.
    When p = q there is nothing to correct: p itself is returned (instead of 0 / 0). ``p``, ``q``:
    (..., vocab) probabilities of the same shape.
    """
    check_tensor("p", p, floating=True, min_numel=1)
    check_tensor("q", q, floating=True, min_numel=1)
    if q.shape != p.shape:
        raise ValueError(f"p and q must have the same shape (..., vocab), got {tuple(p.shape)} and {tuple(q.shape)}")
    return residual(p, q)


def verify(p: torch.Tensor, q: torch.Tensor, tokens: torch.Tensor, *, generator: torch.Generator | None = None
           ) -> tuple[int, int]:
    """One round of speculative sampling: p (γ+1, vocab), q (γ, vocab), drafted tokens (γ,) ->
    (number accepted n, the next token). The tokens kept are ``tokens[:n]`` then the next one.

    Random numbers are drawn as Hugging Face's ``_speculative_sampling`` draws them (γ uniforms at
    once, then one multinomial draw), so both give the same tokens from the same generator state.
    """
    _check_probs("p", p)
    _check_probs("q", q, rows=p.shape[0] - 1)
    if q.shape[1] != p.shape[1]:
        raise ValueError(f"p and q must cover the same vocabulary, got {p.shape[1]} and {q.shape[1]} columns")
    _check_tokens(tokens, q.shape[0], q.shape[1])
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return verify_round(p, q, tokens, generator)
