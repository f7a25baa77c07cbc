"""llmlab.anatomy.tiny: attention written out equals torch's scaled_dot_product_attention under every
mask, and the TinyTransformer built on it behaves as its mask says."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from llmlab.anatomy import MASK_KINDS, TinyTransformer, attention, attention_mask, padded_mask


def _qkv(shape, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, requires_grad=requires_grad) for _ in range(3)]


@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("n, d", [(1, 4), (5, 8), (12, 16)])
def test_attention_equals_sdpa_under_every_mask(kind, n, d):
    q, k, v = _qkv((2, 3, n, d), seed=n)
    for n_prefix in sorted({0, n // 2, n}):
        mask = attention_mask(kind, n, n_prefix=n_prefix)
        torch.testing.assert_close(attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    torch.testing.assert_close(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_attention_with_a_mask_per_sequence_and_cross_attention_shapes():
    q, _, _ = _qkv((2, 3, 4, 8))
    k, v, _ = _qkv((2, 3, 6, 8), seed=1)
    mask = torch.rand(2, 1, 4, 6, generator=torch.Generator().manual_seed(2)) > 0.3
    mask[..., 0] = True
    torch.testing.assert_close(attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


@pytest.mark.parametrize("seq_len", [8, 33])
def test_fully_masked_out_rows(seq_len):
    # Ported from pytorch/pytorch test/test_transformers.py, TestSDPA.test_fully_masked_out_rows: every 4th
    # query row sees no key; the output there is 0, nothing is NaN, and outputs and gradients match SDPA's
    # math backend.
    q, k, v = (torch.rand(1, 1, seq_len, 16, generator=torch.Generator().manual_seed(i), requires_grad=True)
               for i in range(3))
    mask = torch.ones(1, 1, seq_len, seq_len, dtype=torch.bool)
    mask[0, 0, ::4, :] = False
    element_mask = torch.arange(seq_len)[:, None] % 5 == torch.arange(seq_len) % 5
    mask = mask & element_mask

    def out_and_grads(fn):
        out = fn(q, k, v, mask)
        return out, torch.autograd.grad(out.sum(), [q, k, v])

    ours, our_grads = out_and_grads(attention)
    with sdpa_kernel(SDPBackend.MATH):
        ref, ref_grads = out_and_grads(lambda *a: F.scaled_dot_product_attention(*a[:3], attn_mask=a[3]))
    torch.testing.assert_close(ours, ref)
    for mine, theirs in zip(our_grads, ref_grads):
        torch.testing.assert_close(mine, theirs)
        assert not mine.isnan().any()
    rows = (mask.sum(-1, keepdim=True) == 0).expand_as(ours)
    assert rows.any() and bool((ours[rows] == 0).all()) and bool((our_grads[0][rows] == 0).all())


def _pair(**kwargs):
    """The same weights twice: attention by hand and through SDPA."""
    torch.manual_seed(0)
    ours = TinyTransformer(31, **kwargs).eval()
    fused = TinyTransformer(31, use_sdpa=True, **kwargs).eval()
    fused.load_state_dict(ours.state_dict())
    return ours, fused


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_tiny_transformer_by_hand_equals_sdpa(kind):
    ours, fused = _pair(d_model=32, n_layers=2, n_heads=4, max_len=12)
    ids = torch.randint(4, 31, (3, 10), generator=torch.Generator().manual_seed(1))
    ids[1, 7:] = 0  # padding in one row: a per-sequence (batch, n, n) mask
    for mask in (attention_mask(kind, 10, n_prefix=4), padded_mask(kind, ids, n_prefix=4)):
        out = ours(ids, mask)
        assert out.shape == (3, 10, 31)
        torch.testing.assert_close(out, fused(ids, mask), rtol=1e-5, atol=1e-5)


def test_the_mask_decides_what_a_position_can_see():
    torch.manual_seed(0)
    model = TinyTransformer(20, d_model=16, n_layers=2, n_heads=2, max_len=8).eval()
    ids = torch.randint(4, 20, (1, 8), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[0, 5] = 4 if ids[0, 5] != 4 else 5
    with torch.no_grad():
        causal = (model(ids, attention_mask("causal", 8)) - model(changed, attention_mask("causal", 8))).abs().amax(-1)
        prefix = (model(ids, attention_mask("prefix", 8, n_prefix=6))
                  - model(changed, attention_mask("prefix", 8, n_prefix=6))).abs().amax(-1)
        full = (model(ids) - model(changed)).abs().amax(-1)
    assert bool((causal[0, :5] == 0).all()) and bool((causal[0, 5:] > 1e-4).all())
    assert bool((prefix[0, :] > 1e-4).all()), "inside the prefix, position 5 is visible to every prefix position"
    assert bool((full[0] > 1e-4).all())


def test_output_layer_is_tied_and_dropout_only_in_training():
    torch.manual_seed(0)
    model = TinyTransformer(15, d_model=16, n_layers=1, n_heads=2, max_len=6, dropout=0.5)
    ids = torch.randint(0, 15, (2, 6), generator=torch.Generator().manual_seed(0))
    model.train()
    assert not torch.equal(model(ids), model(ids)), "dropout draws a new mask each call"
    model.eval()
    assert torch.equal(model(ids), model(ids))
    n_params = sum(p.numel() for p in model.parameters())  # no separate output layer: it is the embedding
    assert n_params == 15 * 16 + 6 * 16 + (16 * 48 + 48 + 16 * 16 + 16 + 2 * 32 + 16 * 64 + 64 + 64 * 16 + 16) + 32


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(vocab_size=0), ValueError, "vocab_size must be an int >= 1"),
    (dict(vocab_size=10, d_model=30, n_heads=4), ValueError, "d_model must be divisible by n_heads"),
    (dict(vocab_size=10, dropout=1.0), ValueError, r"dropout must be a number in \[0, 1\)"),
    (dict(vocab_size=10, n_layers=2.5), TypeError, "n_layers must be an int"),
])
def test_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        TinyTransformer(**kwargs)


def test_bad_forward_arguments():
    model = TinyTransformer(10, d_model=8, n_heads=2, max_len=4)
    ids = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="this model has max_len=4"):
        model(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="input_ids must hold integers"):
        model(ids.float())
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        model(ids, torch.ones(4, 4))
    with pytest.raises(ValueError, match=r"mask must have shape \(4, 4\) or \(2, 4, 4\)"):
        model(ids, torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask must have shape"):
        model(ids, torch.ones(3, 4, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        attention(*_qkv((1, 2, 3)), torch.ones(2, 2))
