"""Exercises of notebooks 03 (schedules), 04 (accumulation), 05 (checkpointing), 08 (precision)."""

from __future__ import annotations

import copy

import torch

from ..accumulation import (full_batch_grads, loss_fn_for, make_batch, make_model, make_token_batch,
                            micro_batch_token_counts, relative_difference)
from ..checkpointing import theory_forward_calls, theory_saved_activations
from ..memory import memory_ledger
from ..precision import float_format, smallest_surviving_update
from ..schedules import cosine_annealing, cosine_with_restarts, torch_trace
from .base import call_safely, close, dict_of, direction, exercise, is_callable, is_int, is_number, pair_of

# --- 03 schedules ------------------------------------------------------------------------------

_LINEAR_CASES = [(0.1, 10, 100, 120), (1e-3, 0, 50, 60), (0.5, 7, 13, 20), (2.0, 1, 2, 5)]


@exercise("03.1", "linear decay with warm-up", "a function linear_decay(step, *, base_lr, warmup_steps, total_steps)",
          is_callable)
def _linear_decay(linear_decay):
    # transformers is slow to import: only this check needs it (its schedule is the reference).
    from transformers import get_linear_schedule_with_warmup

    for base_lr, warmup, total, steps in _LINEAR_CASES:
        truth = torch_trace(lambda opt: get_linear_schedule_with_warmup(opt, warmup, total), steps, base_lr=base_lr)
        for step, want in enumerate(truth):
            got, error = call_safely(linear_decay, step, base_lr=base_lr, warmup_steps=warmup, total_steps=total)
            if error:
                return False, error
            if not isinstance(got, (int, float)) or isinstance(got, bool):
                return False, f"linear_decay({step}, ...) returned {type(got).__name__}: return a float."
            if close(got, want, 1e-9) or abs(got - want) < 1e-12:
                continue
            where = (f"step {step} with base_lr={base_lr}, warmup_steps={warmup}, total_steps={total} "
                     f"is {direction(got, want)}")
            if step < warmup:
                return False, f"{where}: warm-up goes linearly from 0 at step 0 to base_lr at step warmup_steps."
            if step >= total:
                return False, f"{where}: past total_steps the rate stays at 0 (never negative)."
            return False, f"{where}: after warm-up the line falls from base_lr at warmup_steps to 0 at total_steps."
    return True, "the same rate as Hugging Face's get_linear_schedule_with_warmup at every step, past the end included."


EPOCHS, BATCHES, PEAK = 10, 100, 0.1


@exercise("03.2", "stepping per epoch with T_max in batches", "a float (a learning rate)", is_number)
def _epoch_vs_batch(answer):
    trace = torch_trace(lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS * BATCHES),
                        EPOCHS, base_lr=PEAK)
    truth = trace[-1]
    if close(answer, truth, 1e-6):
        return True, f"the last epoch still trains within {1 - truth / PEAK:.2%} of the peak: the schedule never got going."
    intended = cosine_annealing((EPOCHS - 1) * BATCHES, base_lr=PEAK, t_max=EPOCHS * BATCHES)
    if close(answer, intended, 1e-3):
        return False, "that is what the last epoch *should* start with; here scheduler.step() ran only once per epoch."
    if close(answer, PEAK, 1e-9):
        return False, "not exactly the peak: a few scheduler steps have happened before the last epoch."
    return False, (f"{direction(answer, truth)}: before the last epoch, how many times has scheduler.step() run, "
                   "and where on a cosine of T_max steps does that put you?")


_RESTART_CASES = [(10, 2), (3, 3), (5, 1), (1, 2)]


def _restart_positions(t_0: int, t_mult: int, count: int) -> list[int]:
    """Steps at which cosine_with_restarts is back at its peak (found by scanning llmlab's schedule)."""
    found, step = [], 1
    while len(found) < count:
        if cosine_with_restarts(step, base_lr=1.0, t_0=t_0, t_mult=t_mult) == 1.0:  # t_cur = 0: a restart
            found.append(step)
        step += 1
    return found


@exercise("03.3", "where warm restarts happen", "a function restart_step(i, t_0, t_mult) -> int", is_callable)
def _restarts(restart_step):
    for t_0, t_mult in _RESTART_CASES:
        for i, truth in enumerate(_restart_positions(t_0, t_mult, 5), start=1):
            got, error = call_safely(restart_step, i, t_0, t_mult)
            if error:
                return False, error
            if not is_number(got) or float(got) != truth:
                case = f"restart_step({i}, t_0={t_0}, t_mult={t_mult}) is {got!r}"
                if is_number(got) and float(got) == t_0 * t_mult ** (i - 1):
                    return False, f"{case}: that is the *length* of cycle {i}; the restart comes after all earlier cycles."
                if is_number(got) and float(got) == t_0 * t_mult ** i:
                    return False, f"{case}: that is a cycle length, not a position: add up the earlier cycles."
                return False, f"{case}: restart i comes after cycles 0 .. i-1, of lengths t_0 · t_mult^j."
    return True, "restart i sits at t_0 (t_mult^i − 1)/(t_mult − 1) (i·t_0 when t_mult = 1): a geometric sum."


# --- 04 accumulation ---------------------------------------------------------------------------

@exercise("04.1", "gradient accumulation by hand", "a function accumulate(model, loss_fn, x, y, steps) filling .grad",
          is_callable)
def _accumulate(accumulate):
    for kind, steps in [("linear", 4), ("cnn_gn", 8), ("linear", 1)]:
        model = make_model(kind, seed=1)
        x, y = make_batch(kind, 32, seed=2)
        loss_fn = loss_fn_for(kind)
        truth = full_batch_grads(model, loss_fn, x, y)
        mine = copy.deepcopy(model)
        for p in mine.parameters():
            p.grad = None
        _, error = call_safely(accumulate, mine, loss_fn, x, y, steps)
        if error:
            return False, error
        grads = {n: p.grad for n, p in mine.named_parameters()}
        if any(g is None for g in grads.values()):
            return False, "some parameters have no .grad after your function: call backward on each micro-batch loss."
        gap = relative_difference(grads, truth)
        if gap < 1e-5:
            continue
        case = f"on the {kind!r} model with {steps} micro-batches the gradient is off by {gap:.2g} (relative)"
        if abs(gap - (steps - 1)) < 1e-3:
            return False, f"{case} = K − 1: each micro-batch loss must be divided by the number of micro-batches."
        if abs(gap - (1 - 1 / steps)) < 1e-3:
            return False, f"{case}: the gradient is K× too small: divide each micro-batch loss by K once, not twice."
        return False, (f"{case}: are the micro-batches K equal, consecutive slices of the batch, and does .grad keep "
                       "summing over all of them?")
    return True, "the accumulated gradient equals the big-batch gradient to rounding (also for K = 1)."


TOKEN_STEPS = 4


@exercise("04.2", "how much the naive token average over-weights", "a float (a weight ratio)", is_number)
def _token_weight(answer):
    _, targets = make_token_batch(32, seed=0)
    counts = micro_batch_token_counts(targets, TOKEN_STEPS)
    total = sum(counts)
    truth = total / (TOKEN_STEPS * min(counts))  # naive weight 1/(K n_j) over the right one 1/total
    if close(answer, truth, 1e-3):
        return True, "the fewest-token micro-batch's tokens count that much more than they should."
    if close(answer, 1 / truth, 1e-3):
        return False, "inverted: compare the naive weight with the correct weight, not the other way round."
    if close(answer, total / (TOKEN_STEPS * max(counts)), 1e-3):
        return False, "that is the micro-batch with the *most* tokens (it is under-weighted); look at the fewest."
    return False, (f"{direction(answer, truth)}: a token in micro-batch j gets weight 1/(K · n_j) from the naive recipe "
                   "and 1/N_total from the right one; count n_j with micro_batch_token_counts.")


# --- 05 checkpointing --------------------------------------------------------------------------

CHAIN, SEGMENTS = 100, (5, 10, 20)


@exercise("05.1", "√n checkpointing at n = 100", "a dict {5: (activations, forwards), 10: (...), 20: (...)} of ints",
          dict_of(SEGMENTS, pair_of(is_int)))
def _sqrt_checkpointing(answer):
    for s in SEGMENTS:
        memory, forwards = (int(v) for v in answer[s])
        want_memory = theory_saved_activations(CHAIN, "sqrt", s)
        want_forwards = theory_forward_calls(CHAIN, "sqrt", s)
        if memory != want_memory:
            return False, (f"s = {s}: your peak activation count is {direction(memory, want_memory)}. At the end of the "
                           "forward pass you hold the checkpoints plus the last segment's input and outputs.")
        if forwards != want_forwards:
            hint = (" The last segment is kept in full, so it is not recomputed." if forwards == 2 * CHAIN else
                    " Every layer runs once forward; then every recomputed segment runs again, once.")
            return False, f"s = {s}: your forward count is {direction(forwards, want_forwards)}.{hint}"
    best = min(SEGMENTS, key=lambda s: theory_saved_activations(CHAIN, "sqrt", s))
    return True, f"memory is smallest at s = {best} = √n, where s + n/s is smallest; forwards stay below 2n."


BUDGET = 25  # 05.6: saved activations allowed for the 100-layer chain


@exercise("05.6", "the fewest forwards within a memory budget", "a pair (segments, forwards) of ints", pair_of(is_int))
def _memory_budget(answer):
    segments, forwards = (int(v) for v in answer)
    fits = {s: theory_forward_calls(CHAIN, "sqrt", s) for s in range(1, CHAIN + 1)
            if theory_saved_activations(CHAIN, "sqrt", s) <= BUDGET}
    best = min(fits, key=lambda s: (fits[s], s))
    if not 1 <= segments <= CHAIN:
        return False, f"segments must lie in 1..{CHAIN}."
    memory = theory_saved_activations(CHAIN, "sqrt", segments)
    if memory > BUDGET:
        return False, (f"s = {segments} keeps {memory} activations at its peak (the checkpoints plus the last segment "
                       f"kept whole), over the budget of {BUDGET}.")
    if forwards != theory_forward_calls(CHAIN, "sqrt", segments):
        return False, (f"s = {segments} fits, but your forward count is "
                       f"{direction(forwards, theory_forward_calls(CHAIN, 'sqrt', segments))}: 2n minus the last segment.")
    if segments != best:
        return False, (f"s = {segments} fits with {forwards} forwards, but another segment count that fits needs fewer: "
                       "a longer last segment is recomputed less. Which s has the longest last segment within the budget?")
    return True, (f"{forwards} forwards: the longest last segment that fits. At the budget's edge s + L_last = {BUDGET}; "
                  "s = √n minimises the memory, not the forwards.")

# --- 08 mixed precision ------------------------------------------------------------------------

SEVEN_B = 7_000_000_000


@exercise("08.1", "a 7B model's training states", 'a dict {"adamw": GB, "sgd_momentum": GB} (1 GB = 1e9 bytes)',
          dict_of(("adamw", "sgd_momentum"), is_number))
def _seven_b(answer):
    for opt in ("adamw", "sgd_momentum"):
        truth = memory_ledger(SEVEN_B, optimizer=opt, precision="mixed").total / 1e9
        got = float(answer[opt])
        if close(got, truth, 0.01):
            continue
        if close(got * 1e9 / 2**30, truth, 0.01) or close(got, truth * 1e9 / 2**30, 0.01):
            return False, f"{opt}: GB here means 1e9 bytes, not GiB (2^30)."
        if close(got, truth - 4 * SEVEN_B / 1e9, 0.01):
            return False, f"{opt}: mixed precision keeps an fp32 master copy of the weights too."
        return False, (f"{opt} is {direction(got, truth)}: add bf16 weights and grads, the fp32 master weights and the "
                       "optimizer's fp32 states per parameter (AdamW: two, SGD with momentum: one).")
    fits = [o for o in ("adamw", "sgd_momentum") if memory_ledger(SEVEN_B, optimizer=o).total <= 80e9]
    if not fits:
        return True, "neither fits one 80 GB GPU, before a single activation: the states must be sharded (notebook 12)."
    return True, f"on one 80 GB GPU only {' and '.join(fits)} fits the states, before any activation."


@exercise("08.2", "a weight whose half-ulp update survives", "a float (a weight in [1, 2))", is_number)
def _half_ulp(answer):
    fmt = float_format("fp16")
    w = float(answer)
    if not 1 <= w < 2:
        return False, "pick a weight in [1, 2): there half an ulp is 2^-11 for every weight."
    if float(torch.tensor(w).to(torch.float16)) != w:
        return False, "your weight is not an fp16 number: it is rounded first, so pick one with at most 10 fraction bits."
    half_ulp = fmt.eps / 2  # ulp in [1, 2) is eps = 2^-mantissa_bits
    survives_at = smallest_surviving_update("fp16", w) * w
    if survives_at == half_ulp:
        return True, "its last mantissa bit is 1 (odd), so the half-ulp tie rounds to the even neighbour above."
    return False, ("with this weight half an ulp ties and rounds back to w: round-to-nearest-*even* goes to the "
                   "neighbour whose last mantissa bit is 0. Which weights are not that neighbour?")
