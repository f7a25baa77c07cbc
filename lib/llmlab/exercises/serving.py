"""Exercises of notebook 15 (serving: paged KV cache, continuous batching, speculative decoding)."""

from __future__ import annotations

from ..serving import expected_tokens_per_forward
from .base import close, dict_of, direction, exercise, is_int, is_number

ALPHA, GAMMA = 0.8, 4


@exercise("15.1", "tokens per target forward", "a number (expected tokens per target forward)", is_number)
def _tokens_per_forward(answer):
    truth = expected_tokens_per_forward(ALPHA, GAMMA)
    if close(answer, truth):
        return True, "each round ends with one token of the target's own, accepted drafts or not."
    if close(answer, expected_tokens_per_forward(ALPHA, GAMMA - 1)):
        return False, "a round yields up to γ + 1 tokens: the target adds one after the last accepted draft."
    if close(answer, 1 + ALPHA * GAMMA):
        return False, "the drafts are accepted in order and the first rejection ends the round: P(n ≥ k) = α^k."
    return False, f"{direction(answer, truth)}: sum over k = 0..γ of P(at least k drafts accepted)."


LENGTHS, BLOCK, RESERVE = (37, 16, 90, 5), 16, 512
KEYS = ("blocks", "paged_waste", "reserved_waste")


@exercise("15.2", "blocks and wasted slots", 'a dict {"blocks": int, "paged_waste": int, "reserved_waste": int}',
          dict_of(KEYS, is_int))
def _blocks(answer):
    blocks = sum(-(-n // BLOCK) for n in LENGTHS)
    truth = {"blocks": blocks, "paged_waste": blocks * BLOCK - sum(LENGTHS),
             "reserved_waste": len(LENGTHS) * RESERVE - sum(LENGTHS)}
    got = {k: int(answer[k]) for k in KEYS}
    if got == truth:
        return True, (f"paging wastes less than one block per sequence (at most {len(LENGTHS)} × {BLOCK - 1} = "
                      f"{len(LENGTHS) * (BLOCK - 1)} slots); "
                      "reserving wastes everything not generated yet.")
    if got["blocks"] == sum(n // BLOCK for n in LENGTHS):
        return False, "blocks: a sequence holds its partly filled last block too (round up, not down)."
    if got["blocks"] != truth["blocks"]:
        return False, f"blocks: {direction(got['blocks'], truth['blocks'])}: count ceil(length / {BLOCK}) per sequence."
    if got["paged_waste"] != truth["paged_waste"]:
        return False, "paged_waste: slots held (blocks × block size) minus tokens stored."
    return False, f"reserved_waste: each request reserves {RESERVE} slots whatever its length."


ALPHA3, COST = 0.7, 0.1


def _speedup(gamma: int) -> float:
    return expected_tokens_per_forward(ALPHA3, gamma) / (1 + gamma * COST)


@exercise("15.3", "the best number of draft tokens", "an int γ >= 1", is_int)
def _best_gamma(answer):
    best = max(range(1, 65), key=_speedup)
    if int(answer) == best:
        nxt = ALPHA3 ** (best + 1)
        return True, (f"speed-up {_speedup(best):.2f}×. One more draft token would add α^{best + 1} = {nxt:.3f} "
                      f"expected tokens for c = {COST}: {nxt / COST:.2f} tokens per unit cost, below the "
                      f"{_speedup(best):.2f} already reached, so the average falls. S(γ+1) > S(γ) exactly when "
                      "α^(γ+1)/c > S(γ): a draft token must beat the speed-up reached, not merely pay for itself.")
    if int(answer) >= 16:
        return False, "each draft token costs c of a target forward: the denominator 1 + γc keeps growing."
    return False, f"{direction(int(answer), best)}: maximise (1 - α^(γ+1)) / ((1 - α)(1 + γc)) over γ."
