"""llmlab.distributed.tokens: a token-level loss under real DDP (gloo, 127.0.0.1) against one process.

The reference is the single-process gradient of the batch's mean token loss
(:func:`llmlab.accumulation.token_loss_grads` with one micro-batch, itself checked against plain
autograd in tests/test_accumulation.py). Two process-group launches in all: one batch whose ranks
hold very different token counts (sequences grouped by length, as length-grouped samplers do),
one whose ranks hold equal counts.
"""

from __future__ import annotations

import functools

import pytest
import torch

from llmlab.accumulation import make_token_batch, make_token_model, relative_difference, token_loss_grads
from llmlab.distributed import TOKEN_NORMALIZATIONS, ddp_token_losses

MODEL_FN = functools.partial(make_token_model)
WORLD = 4


@pytest.fixture(scope="module")
def unequal():
    x, y = make_token_batch(32, group_by_length=True)
    return x, y, ddp_token_losses(MODEL_FN, x, y, WORLD)


def test_ranks_hold_different_token_counts(unequal):
    x, y, out = unequal
    counts = [int((s != -100).sum()) for s in y.chunk(WORLD)]
    assert list(out["rank_mean"].tokens_per_rank) == counts == list(out["global_tokens"].tokens_per_rank)
    assert max(counts) > 3 * min(counts)  # grouped by length: the trap is large


def test_global_token_count_gives_the_big_batch_gradient_and_loss(unequal):
    x, y, out = unequal
    big = token_loss_grads(MODEL_FN(), x, y, 1)
    assert relative_difference(out["global_tokens"].grads, big) < 1e-6
    logits = MODEL_FN()(x)
    mean = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100).item()
    assert out["global_tokens"].reported_loss == pytest.approx(mean, rel=1e-6)


def test_rank_means_repeat_the_accumulation_trap(unequal):
    x, y, out = unequal
    big = token_loss_grads(MODEL_FN(), x, y, 1)
    trap = token_loss_grads(MODEL_FN(), x, y, WORLD, normalization="micro_batch_mean")  # notebook 04's trap
    assert relative_difference(out["rank_mean"].grads, trap) < 1e-6   # the same wrong gradient
    assert relative_difference(out["rank_mean"].grads, big) > 0.05
    means = out["rank_mean"].rank_mean_losses
    assert out["rank_mean"].reported_loss == pytest.approx(sum(means) / WORLD, rel=1e-6)
    logits = MODEL_FN()(x)
    mean = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100).item()
    assert abs(out["rank_mean"].reported_loss - mean) > 1e-3  # the logged loss is off too
    # each rank's mean equals the mean over its own shard
    for r, (xs, ys) in enumerate(zip(x.chunk(WORLD), y.chunk(WORLD))):
        own = torch.nn.functional.cross_entropy(MODEL_FN()(xs).flatten(0, 1), ys.flatten(), ignore_index=-100)
        assert means[r] == pytest.approx(own.item(), rel=1e-6)


def test_equal_token_counts_make_both_ways_the_big_batch():
    x, y = make_token_batch(8, max_len=12, min_len=12)  # no padding: every rank holds the same tokens
    out = ddp_token_losses(MODEL_FN, x, y, 2)
    big = token_loss_grads(MODEL_FN(), x, y, 1)
    assert out["rank_mean"].tokens_per_rank[0] == out["rank_mean"].tokens_per_rank[1]
    for normalization in TOKEN_NORMALIZATIONS:
        assert relative_difference(out[normalization].grads, big) < 1e-6
    assert out["rank_mean"].reported_loss == pytest.approx(out["global_tokens"].reported_loss, rel=1e-6)
