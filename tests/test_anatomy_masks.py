"""llmlab.anatomy.masks: the causal, prefix and bidirectional masks, by hand and against transformers'
own mask functions (transformers/masking_utils.py: causal_mask_function, bidirectional_mask_function,
and or_masks(causal, blockwise_overlay) for a bidirectional prefix, the PaliGemma-style prefix LM)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmlab.anatomy import MASK_KINDS, attention_mask, encoder_decoder_masks
from llmlab.anatomy.masks import _additive_mask as additive_mask

T, F_ = True, False


def test_the_three_masks_by_hand():
    assert attention_mask("causal", 4).tolist() == [[T, F_, F_, F_], [T, T, F_, F_], [T, T, T, F_], [T, T, T, T]]
    assert attention_mask("prefix", 4, n_prefix=2).tolist() == [
        [T, T, F_, F_], [T, T, F_, F_], [T, T, T, F_], [T, T, T, T]]
    assert attention_mask("bidirectional", 3).tolist() == [[T] * 3] * 3
    assert attention_mask("causal", 1).tolist() == [[T]]


@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_prefix_mask_interpolates_between_causal_and_bidirectional(n):
    causal, full = attention_mask("causal", n), attention_mask("bidirectional", n)
    assert torch.equal(attention_mask("prefix", n, n_prefix=0), causal)
    assert torch.equal(attention_mask("prefix", n, n_prefix=1), causal)  # a 1-token prefix sees only itself
    assert torch.equal(attention_mask("prefix", n, n_prefix=n), full)
    for kind in MASK_KINDS:
        for n_prefix in range(n + 1):
            mask = attention_mask(kind, n, n_prefix=n_prefix)
            assert mask.dtype == torch.bool and mask.shape == (n, n)
            assert bool(mask.diagonal().all()), "every position sees itself"
            assert bool((mask | ~causal).all()), "every mask allows at least the causal pairs"


def _hf_mask(mask_function, n: int) -> torch.Tensor:
    q, kv = torch.arange(n)[:, None], torch.arange(n)[None, :]
    zero = torch.zeros((), dtype=torch.long)
    return mask_function(zero, zero, q, kv).expand(n, n).bool()


@pytest.mark.parametrize("n", [1, 4, 7])
def test_equal_to_transformers_mask_functions(n):
    from transformers.masking_utils import (bidirectional_mask_function, blockwise_overlay, causal_mask_function,
                                            or_masks)

    assert torch.equal(attention_mask("causal", n), _hf_mask(causal_mask_function, n))
    assert torch.equal(attention_mask("bidirectional", n), _hf_mask(bidirectional_mask_function, n))
    for n_prefix in range(n + 1):
        # block id 0 for the prefix, -1 (no block) after it: bidirectional inside the block, causal elsewhere
        blocks = torch.where(torch.arange(n) < n_prefix, 0, -1)[None]
        hf = _hf_mask(or_masks(causal_mask_function, blockwise_overlay(blocks)), n)
        assert torch.equal(attention_mask("prefix", n, n_prefix=n_prefix), hf), n_prefix


def test_causal_mask_is_what_sdpa_is_causal_means():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 6, 8, generator=g) for _ in range(3))
    ours = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask("causal", 6))
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_encoder_decoder_masks():
    m = encoder_decoder_masks(3, 2)
    assert torch.equal(m.encoder, torch.ones(3, 3, dtype=torch.bool))
    assert torch.equal(m.decoder, attention_mask("causal", 2))
    assert m.cross.shape == (2, 3) and bool(m.cross.all())


def test_additive_mask():
    mask = attention_mask("prefix", 4, n_prefix=2)
    add = additive_mask(mask)
    assert add.dtype == torch.float32 and torch.equal(add == 0, mask)
    assert bool((add[~mask] == torch.finfo(torch.float32).min).all())
    assert additive_mask(mask, dtype="bf16").dtype == torch.bfloat16
    scores = torch.randn(4, 4)
    torch.testing.assert_close(torch.softmax(scores + add, -1), torch.softmax(scores.masked_fill(~mask, -torch.inf), -1))


@pytest.mark.parametrize("call, error, match", [
    (lambda: attention_mask("sideways", 3), ValueError, r"kind must be one of \['causal', 'prefix', 'bidirectional'\]"),
    (lambda: attention_mask("causal", 0), ValueError, r"n must be an int in \[1, 32768\], got 0"),
    (lambda: attention_mask("causal", 2.0), TypeError, r"n must be an int"),
    (lambda: attention_mask("prefix", 4, n_prefix=5), ValueError, r"n_prefix must be an int in \[0, 4\], got 5"),
    (lambda: attention_mask("prefix", 4, n_prefix=-1), ValueError, r"n_prefix must be an int in \[0, 4\]"),
    (lambda: attention_mask("causal", 4, n_prefix=9), ValueError, r"n_prefix must be an int in \[0, 4\]"),
    (lambda: attention_mask("prefix", 4, n_prefix=True), TypeError, r"n_prefix must be an int"),
    (lambda: encoder_decoder_masks(0, 2), ValueError, r"n_source must be an int in \[1, 32768\]"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
