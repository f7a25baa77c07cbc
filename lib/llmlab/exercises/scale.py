"""Exercises of notebook 12 (data parallelism)."""

from __future__ import annotations

import math

from ..distributed import crossover_tokens, sharded_ledger, step_estimate
from .base import close, dict_of, direction, exercise, is_int, is_number

PARAMS_70B, GPUS, LINK = 70_000_000_000, 64, 400.0


def _comm_share(tokens: float) -> float:
    est = step_estimate(PARAMS_70B, GPUS, link_gbit_s=LINK, tokens_per_rank=tokens)
    return est.comm_seconds / (est.comm_seconds + est.compute_seconds)


@exercise("12.1", "tokens per GPU to hide the all-reduce", "a number (tokens per GPU per step)", is_number)
def _tokens_for_ten_percent(answer):
    # comm / (comm + compute) falls as tokens grow; find where it crosses 10 % by bisection on llmlab's model.
    low, high = 1.0, 1e9
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if _comm_share(mid) >= 0.1 else (low, mid)
    truth = high
    cross = crossover_tokens(GPUS, link_gbit_s=LINK)
    if close(answer, truth, 0.01) or (float(answer) >= truth and close(answer, math.ceil(truth), 0.01)):
        return True, (f"about {truth / cross:.0f}× the break-even point; the parameter count cancels, so a 7B model "
                      "needs the same tokens per GPU.")
    if close(answer, cross, 0.01):
        return False, "that is where communication *equals* compute (50 % of the step), not 10 %."
    if close(answer, 10 * cross, 0.01):
        return False, "that makes communication 10 % of the *compute*; the question asks for 10 % of the whole step."
    return False, (f"{direction(answer, truth)}: with step_estimate(70e9, 64, tokens_per_rank=T), find the smallest T "
                   "with comm / (comm + compute) < 0.1.")


BUDGET_GB = 60  # of an 80 GB GPU, leaving 20 GB for activations
CASES = {"70B zero3": (70_000_000_000, "zero3"), "13B zero2": (13_000_000_000, "zero2")}


def _fewest_gpus(params: int, stage: str) -> int | None:
    for n in range(1, 4097):
        if sharded_ledger(params, n, stage, precision="mixed").total <= BUDGET_GB * 1e9:
            return n
    return None


@exercise("12.2", "fewest GPUs that hold the states", 'a dict {"70B zero3": N, "13B zero2": N} of ints',
          dict_of(CASES, is_int))
def _fewest(answer):
    for key, (params, stage) in CASES.items():
        truth = _fewest_gpus(params, stage)
        got = int(answer[key])
        if got == truth:
            continue
        if got == truth - 1:
            return False, f"{key}: one GPU short: the states per rank come to just over {BUDGET_GB} GB."
        if stage == "zero2" and got == _fewest_gpus(params, "zero3"):
            return False, f"{key}: ZeRO-2 shards gradients and optimizer states, but every rank keeps the full bf16 weights."
        return False, (f"{key}: {direction(got, truth)}: per rank, the sharded components are divided by N, the others "
                       f"not; find the smallest N that fits {BUDGET_GB} GB (1 GB = 1e9 bytes).")
    return True, "ZeRO-2 keeps the 2 B/param weights on every rank: that floor is why it stops scaling, ZeRO-3 does not."
