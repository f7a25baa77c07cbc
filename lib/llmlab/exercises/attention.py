"""Exercises of notebook 14 (attention kernels: online softmax, FlashAttention, the KV cache)."""

from __future__ import annotations

import torch

from ..decoding import kv_cache_bytes
from .base import call_safely, direction, exercise, is_callable, is_int, smollm2_skeleton

KV_BUDGET, KV_BATCH = 2_000_000_000, 16   # 2 GB of bf16 KV cache for 16 conversations


def _longest_context(**kwargs) -> int:
    per_token = kv_cache_bytes(smollm2_skeleton().config, 1, batch=KV_BATCH, dtype=torch.bfloat16, **kwargs)
    return KV_BUDGET // per_token


@exercise("14.1", "the longest context a KV-cache budget holds", "an int (tokens per conversation)", is_int)
def _longest(answer):
    truth, got = _longest_context(), int(answer)
    if got == truth:
        return True, ("grouped-query attention is what buys it: with one K/V head per query head (MHA) the same "
                      "budget would hold a third of it.")
    if got == _longest_context(n_kv_heads=9):
        return False, "you priced 9 K/V heads: SmolLM2's 9 query heads share 3 K/V heads (grouped-query attention)."
    if got == 2 * truth or got == 2 * truth + 1:
        return False, "the cache holds two tensors per layer and token, K and V."
    if got in (truth // 2, (truth - 1) // 2):
        return False, "bf16 takes 2 bytes per number, not 4."
    if got in (KV_BATCH * truth, KV_BATCH * truth + KV_BATCH - 1):
        return False, f"the budget is shared by all {KV_BATCH} conversations of the batch."
    return False, (f"{direction(got, truth)}: bytes per token = 2 × layers × kv_heads × head_dim × bytes per element, "
                   f"times the batch; the context is the budget divided by that, rounded down.")


def _reference_merge(m_a, l_a, m_b, l_b):
    m = torch.maximum(m_a, m_b)
    return m, l_a * torch.exp(m_a - m) + l_b * torch.exp(m_b - m)


def _state(scores):
    """(max, Σ exp(s − max)) of each row; an empty block is (−inf, 0)."""
    if scores.shape[-1] == 0:
        return torch.full(scores.shape[:-1], float("-inf"), dtype=scores.dtype), torch.zeros(scores.shape[:-1],
                                                                                             dtype=scores.dtype)
    m = scores.amax(dim=-1)
    return m, torch.exp(scores - m[..., None]).sum(dim=-1)


@exercise("14.2", "merging two online-softmax states", "a function merge(m_a, l_a, m_b, l_b) -> (m, l)", is_callable)
def _merge(merge):
    g = torch.Generator().manual_seed(0)
    cases = [(torch.randn(5, 12, generator=g, dtype=torch.float64) * 3, 7),
             (torch.randn(3, 9, generator=g, dtype=torch.float64) * 40, 2),   # scores far apart
             (torch.randn(4, 6, generator=g, dtype=torch.float64), 6)]        # the second block is empty
    for scores, cut in cases:
        a, b = _state(scores[:, :cut]), _state(scores[:, cut:])
        truth = _state(scores)
        got, error = call_safely(merge, a[0].clone(), a[1].clone(), b[0].clone(), b[1].clone())
        if error:
            return False, error
        if not (isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(t, torch.Tensor) for t in got)):
            return False, "return a pair of tensors (m, l): the merged maximum and the merged sum, one per row."
        m, l = got
        if m.shape != truth[0].shape or l.shape != truth[1].shape:
            return False, f"return one m and one l per row: shapes {tuple(truth[0].shape)}."
        if not (torch.isfinite(m).all() and torch.isfinite(l).all()):
            return False, ("non-finite result: an empty block has m = −inf and l = 0; exp(m_b − m) must then be 0, "
                           "and m the other block's maximum.")
        if torch.allclose(m, truth[0]) and torch.allclose(l, truth[1], rtol=1e-10):
            continue
        if torch.allclose(l, a[1] + b[1]):
            return False, "each l was summed relative to its own block's maximum: rescale both to the merged one."
        if not torch.allclose(m, truth[0]):
            return False, "m must be the larger of the two maxima, row by row."
        return False, "l should be Σ exp(s − m) over both blocks, with m the merged maximum."
    return True, ("this is how FlashAttention's split-KV decoding (and ring attention) combine partial results "
                  "computed on different devices or thread blocks: exactly, in any order.")
