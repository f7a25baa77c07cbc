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


TOKENS_PER_RANK = (120, 40, 200, 80)
RANK_MEAN_LOSSES = (2.0, 3.0, 1.5, 2.5)


@exercise("12.6", "the batch's loss from the ranks' token counts", 'a dict {"loss": number, "rank1_factor": number}',
          dict_of(("loss", "rank1_factor"), is_number))
def _token_counts(answer):
    n, world = sum(TOKENS_PER_RANK), len(TOKENS_PER_RANK)
    loss = sum(c * m for c, m in zip(TOKENS_PER_RANK, RANK_MEAN_LOSSES)) / n
    factor = world / n
    got_loss, got_factor = float(answer["loss"]), float(answer["rank1_factor"])
    if not close(got_loss, loss, 1e-6):
        if close(got_loss, sum(RANK_MEAN_LOSSES) / world, 1e-6):
            return False, "loss: that is the mean of the ranks' means; weigh each rank's mean by its share of the tokens."
        return False, f"loss is {direction(got_loss, loss)}: the batch's loss is the summed token loss over all tokens."
    if not close(got_factor, factor, 1e-6):
        if close(got_factor, 1 / n, 1e-6):
            return False, "rank1_factor: DDP divides the summed gradients by the number of ranks; undo that division."
        if close(got_factor, 1 / TOKENS_PER_RANK[1], 1e-6):
            return False, "rank1_factor: 1/n_1 gives rank 1's own mean, the trap; divide by the batch's tokens instead."
        return False, f"rank1_factor is {direction(got_factor, factor)}: (summed loss) × factor, then DDP's average, must give ∇L."
    return True, (f"the batch's loss is {loss:.4f}, not the {sum(RANK_MEAN_LOSSES) / world:.2f} a log of the ranks' means "
                  f"shows; every rank multiplies its summed loss by N / n = {world}/{n}.")
