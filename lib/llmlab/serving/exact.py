"""Speculative sampling's output distribution, computed exactly by enumeration on a small vocabulary.

Sampling shows the rule works up to noise; enumeration shows it exactly. For a target and a draft
given as next-token distributions (a function of the prefix), :func:`speculative_distribution`
walks every branch of the algorithm — every draft proposal, accept or reject, every residual or
bonus draw — with the rule :func:`~llmlab.serving.speculative_generate` uses (the functions behind
:func:`~llmlab.serving.acceptance_probabilities` and :func:`~llmlab.serving.residual_distribution`),
and sums the probability of each output sequence. :func:`autoregressive_distribution` is the
target's own: the product of its next-token probabilities. The two must agree to float64 rounding.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import torch
import torch.nn.functional as F

from .._checks import check_callable, check_float, check_int, check_module, check_sequence
from .._torch import model_device
from .rule import accept, residual

__all__ = ["next_token_distribution", "autoregressive_distribution", "speculative_distribution"]

Distribution = Callable[[tuple], torch.Tensor]


def next_token_distribution(model, *, temperature: float = 1.0) -> Distribution:
    """``prefix (tuple of ids) -> softmax(logits / temperature)`` of ``model``'s next token, float64, (vocab,);
    memoised (enumeration asks for the same prefixes many times)."""
    check_module("model", model)
    temperature = check_float("temperature", temperature, low=0.0, low_open=True)
    device, memo = model_device(model), {}

    def dist(prefix: tuple) -> torch.Tensor:
        if prefix not in memo:
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prefix], device=device)).logits[0, -1]
            memo[prefix] = F.softmax(logits.to(torch.float64) / temperature, dim=-1).cpu()
        return memo[prefix]

    return dist


def _check_walk(target, prefix, n_tokens) -> tuple[tuple, int]:
    """What both exact distributions take: a ``target`` prefix -> probabilities, a non-empty ``prefix`` of
    token ids and ``n_tokens`` in [1, 12]; returns ``(prefix as a tuple, n_tokens)``."""
    check_callable("target", target, what="a function prefix -> next-token probabilities")
    prefix = check_sequence("prefix", prefix, what="token ids (at least one: the model needs a context)")
    if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prefix):
        raise ValueError(f"prefix must hold token ids (ints >= 0), got {prefix!r:.60}")
    return tuple(prefix), check_int("n_tokens", n_tokens, low=1, high=12)


def autoregressive_distribution(target: Distribution, prefix: tuple, n_tokens: int) -> dict[tuple, float]:
    """P(x_1..x_n | prefix) = Π p(x_t | prefix, x_<t) for every continuation of ``n_tokens`` tokens
    (``n_tokens`` <= 12: the table has vocab ** n_tokens entries)."""
    prefix, n_tokens = _check_walk(target, prefix, n_tokens)
    out: dict[tuple, float] = {}

    def walk(seq: tuple, prob: float) -> None:
        if len(seq) - len(prefix) == n_tokens:
            out[seq[len(prefix):]] = prob
            return
        for x, px in enumerate(target(seq).tolist()):
            if px > 0:
                walk(seq + (x,), prob * px)

    walk(tuple(prefix), 1.0)
    return out


def speculative_distribution(target: Distribution, draft: Distribution, prefix: tuple, n_tokens: int,
                             *, num_draft_tokens: int) -> dict[tuple, float]:
    """P(first ``n_tokens`` tokens) under speculative sampling with γ = ``num_draft_tokens``, by enumeration.

    Each round: the draft proposes x_1..x_γ autoregressively from q; the target accepts them in order
    with probability min(1, p/q); at the first rejection the next token comes from norm(max(0, p - q)),
    after γ acceptances from p at the next position. Rounds repeat until ``n_tokens`` are out
    (tokens past that are cut, as ``max_new_tokens`` cuts them).
    """
    prefix, n_tokens = _check_walk(target, prefix, n_tokens)
    check_callable("draft", draft, what="a function prefix -> next-token probabilities")
    gamma = check_int("num_draft_tokens", num_draft_tokens, low=1, high=12)
    start = tuple(prefix)
    out: dict[tuple, float] = defaultdict(float)

    def done(seq: tuple, prob: float) -> bool:
        if len(seq) - len(start) >= n_tokens:
            out[seq[len(start): len(start) + n_tokens]] += prob
            return True
        return False

    def round_from(seq: tuple, prob: float) -> None:
        propose(seq, 0, prob)

    def propose(seq: tuple, i: int, prob: float) -> None:
        """``seq`` ends with i accepted draft tokens of the current round."""
        if done(seq, prob):
            return
        if i == gamma:  # all γ accepted: one more token from p at the next position
            for x, px in enumerate(target(seq).tolist()):
                if px > 0:
                    round_from(seq + (x,), prob * px)
            return
        p, q = target(seq), draft(seq)
        correction = residual(p, q).tolist()
        for x, qx in enumerate(q.tolist()):
            if qx == 0:
                continue
            a = float(accept(p[None], q[None], torch.tensor([x]))[0])
            if a > 0:
                propose(seq + (x,), i + 1, prob * qx * a)  # drafted x and accepted it
            if a < 1:
                for y, ry in enumerate(correction):  # rejected x: the next token from the residual
                    if ry > 0:
                        round_from(seq + (y,), prob * qx * (1 - a) * ry)

    round_from(start, 1.0)
    return dict(out)
