"""Exercises of notebook 16 (tensor and pipeline parallelism, the planner)."""

from __future__ import annotations

from ..distributed import MODEL_PRESETS, ClusterConfig, bubble_fraction, plan_parallelism, ring_allreduce_bytes
from .base import close, direction, exercise, is_int, is_number

STAGES, TARGET = 8, 0.05


def _fewest_micro_batches(p: int, target: float) -> int:
    m = 1
    while bubble_fraction("1f1b", p, m) >= target:
        m += 1
    return m


@exercise("16.1", "micro-batches for a small bubble", "an int (micro-batches m)", is_int)
def _micro_batches(answer):
    truth = _fewest_micro_batches(STAGES, TARGET)
    m = int(answer)
    if m == truth:
        return True, (f"(p − 1)/(m + p − 1) = {bubble_fraction('1f1b', STAGES, m):.4f}: the micro-batches must outnumber "
                      "the stages many times over, and each micro-batch must stay big enough to keep a GPU busy.")
    if m == truth - 1:
        return False, "one short: at that m the bubble is still at or above 5 %."
    if m == (STAGES - 1) / TARGET + 1:
        return False, "that uses Megatron's approximation (p − 1)/m; the exact fraction has m + p − 1 below."
    return False, f"{direction(m, truth)}: find the smallest m with (p − 1)/(m + p − 1) < 0.05 for p = {STAGES}."


BATCH, SEQ, HIDDEN, TP, BYTES = 8, 2048, 4096, 4, 2


@exercise("16.2", "bytes a tensor-parallel MLP sends", "a number (bytes each GPU sends per micro-batch)", is_number)
def _tp_bytes(answer):
    activation = BATCH * SEQ * HIDDEN * BYTES
    truth = 2 * ring_allreduce_bytes(activation, TP)
    if close(answer, truth):
        return True, ("two ring all-reduces of the activations, in every block, for every micro-batch: the traffic grows "
                      "with the tokens in flight, which is why TP stays on NVLink inside a server.")
    if close(answer, truth / 2):
        return False, "that is one all-reduce: the backward pass all-reduces the input gradient too."
    if close(answer, 2 * activation) or close(answer, activation):
        return False, "that is the payload; a ring all-reduce makes each rank send 2 (t − 1)/t of it."
    return False, (f"{direction(answer, truth)}: the payload of one all-reduce is batch × seq × hidden × 2 bytes; "
                   "count the all-reduces of one block per step and the ring's factor.")


def fewest_gpus_that_fit(model_name: str, options=(8, 16, 32, 64, 128, 256, 512, 1024, 2048)) -> int | None:
    """The smallest GPU count in ``options`` for which the planner finds a plan of ``model_name`` that fits
    80 GB H100s (the planner's default cluster)."""
    for gpus in options:
        if any(e.fits for e in plan_parallelism(MODEL_PRESETS[model_name], ClusterConfig("h100", gpus=gpus),
                                                micro_batches=(1, 2))):
            return gpus
    return None


ONE_T = "GPT 1T (Megatron 2021)"


@exercise("16.3", "fewest GPUs for the 1T model", "an int (GPUs: 8, 16, 32, ...)", is_int)
def _fewest_gpus(answer):
    truth = fewest_gpus_that_fit(ONE_T)
    gpus = int(answer)
    if gpus == truth:
        return True, ("the 16 B/param states of 1,008B parameters are 16 TB: at that count they just fit, split by "
                      "tensor × pipeline parallelism with a single data-parallel replica, and only with recomputation.")
    if gpus == truth // 2:
        return False, "one halving too few: the model states alone would exceed 80 GB per GPU there."
    return False, (f"{direction(gpus, truth)}: run plan_parallelism(MODEL_PRESETS[{ONE_T!r}], "
                   "ClusterConfig('h100', gpus=g), micro_batches=(1, 2)) for g = 8, 16, 32, ... and look for a plan "
                   "with fits=True.")
