"""llmlab.attention.flash_attention against PyTorch's scaled_dot_product_attention.

Values, log-sum-exp and gradients, causal and not, lengths that do not divide the block size,
n_q != n_k, half precision, the saved tensors. Cases ported (re-derived by running the peer here,
not copied) from:

* pytorch/pytorch test/test_transformers.py, TestSDPACPU.test_scaled_dot_product_fused_attention_vs_math_cpu
  (q, k, v as non-contiguous views of one packed tensor, seq_len 267, 3 heads, head_dim 8 and 16,
  causal and not, gradients through the packed tensor), test_causal_variants (upper-left vs
  lower-right causal masks when n_q != n_k) and
  TestSDPA.test_scaled_dot_product_attention_math_with_negative_scale;
* Dao-AILab/flash-attention tests/test_flash_attn.py, test_flash_attn_output and
  test_flash_attn_varlen_output (and test_flash_attn_race_condition for (239, 1)): the (seqlen_q,
  seqlen_k) pairs (113, 203), (108, 256), (256, 512), (512, 256), (1, 147), (239, 1), the odd head size 59, and its half-precision criterion: the kernel's error against an
  fp32 reference at most 2x (output) and 3x (gradients) PyTorch's own half-precision error;
* stanford-cs336/assignment2-systems tests/test_attention.py, test_flash_forward_pass_pytorch and
  test_flash_backward_pytorch (batch 4, 128 queries and keys, D 64, 3-D inputs; exactly one saved
  tensor of shape (batch, n_queries), the log-sum-exp);
* pytorch/pytorch test/inductor/test_flex_attention.py, test_fully_masked_out_rows_0_check: a
  query that sees no key gets output 0, log-sum-exp -inf and zero gradients, no NaN.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right, causal_upper_left

from llmlab.attention import flash_attention
from llmlab.memory import SavedTensorTracker

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def make(shape_q, n_k, d_v=None, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    *lead, n_q, d = shape_q
    q = torch.randn(*lead, n_q, d, generator=g, dtype=dtype).requires_grad_()
    k = torch.randn(*lead, n_k, d, generator=g, dtype=dtype).requires_grad_()
    v = torch.randn(*lead, n_k, d_v or d, generator=g, dtype=dtype).requires_grad_()
    d_out = torch.randn(*lead, n_q, d_v or d, generator=g, dtype=dtype)
    d_lse = torch.randn(*lead, n_q, generator=g, dtype=dtype)
    return q, k, v, d_out, d_lse


def reference_lse(q, k, causal, scale=None):
    """torch.logsumexp of the masked scores (the definition of L), top-left causal as SDPA."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ k.transpose(-2, -1) * scale
    if causal:
        s = s.masked_fill(torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).triu(1), float("-inf"))
    return torch.logsumexp(s, dim=-1)


def max_err(a, b):
    return 0.0 if a.numel() == 0 else (a - b).abs().max().item()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n_q, n_k, block", [
    (97, 97, 32),      # the case: 97 is not a multiple of the block
    (113, 203, 32), (203, 113, 16), (108, 256, 64),   # flash-attention's pairs
    (1, 147, 64), (239, 1, 8),                                          # one query; one key
    (64, 64, 64), (20, 20, 100), (9, 9, 1),                           # one block; block > n; block 1
])
def test_equals_sdpa_in_value_lse_and_gradients(dtype, causal, n_q, n_k, block):
    q, k, v, d_out, d_lse = make((2, 3, n_q, 16), n_k, d_v=12, dtype=dtype)
    out, lse = flash_attention(q, k, v, causal=causal, block_size=block, return_lse=True)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    ref_lse = reference_lse(q, k, causal)
    assert out.shape == ref.shape == (2, 3, n_q, 12) and lse.shape == (2, 3, n_q) and out.dtype == dtype
    tol = TOL[dtype]
    assert max_err(out, ref) < tol and max_err(lse, ref_lse) < tol
    # gradients of the output (through SDPA) and of the lse (through torch.logsumexp)
    grads = torch.autograd.grad((out, lse), (q, k, v), (d_out, d_lse))
    ref_grads = torch.autograd.grad((ref, ref_lse), (q, k, v), (d_out, d_lse))
    for name, g, r in zip("qkv", grads, ref_grads):
        assert max_err(g, r) < tol * max(1.0, r.abs().max().item()), name


@pytest.mark.parametrize("causal", [False, True])
def test_lse_equals_torch_flash_cpu_kernel(causal):
    """PyTorch's own CPU flash kernel returns the log-sum-exp too: the same numbers."""
    q, k, v, _, _ = make((2, 3, 97, 16), 97, dtype=torch.float32)
    out_ref, lse_ref = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal)[:2]
    out, lse = flash_attention(q, k, v, causal=causal, block_size=32, return_lse=True)
    assert max_err(out, out_ref) < 1e-5 and max_err(lse, lse_ref) < 1e-5


@pytest.mark.parametrize("dtype, head_dim", [(torch.float64, 16), (torch.float32, 8)])
@pytest.mark.parametrize("causal", [False, True])
def test_packed_qkv_views_vs_math_backend(dtype, head_dim, causal):
    """test_transformers.py TestSDPACPU.test_scaled_dot_product_fused_attention_vs_math_cpu:
    q, k, v are strided views of one (batch, seq, 3·heads·head_dim) tensor; gradients flow to it."""
    batch, seq_len, n_head = 2, 267, 3
    n_embd = n_head * head_dim
    x = torch.randn(batch, seq_len, 3 * n_embd, dtype=dtype, generator=torch.Generator().manual_seed(1))
    x, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()

    def heads(t):
        q, k, v = t.split(n_embd, dim=2)
        return [z.view(batch, seq_len, n_head, head_dim).transpose(1, 2) for z in (q, k, v)]

    actual = flash_attention(*heads(x), causal=causal, block_size=64)
    with sdpa_kernel(SDPBackend.MATH):
        math_ref = F.scaled_dot_product_attention(*heads(x2), is_causal=causal)
    assert max_err(actual, math_ref) < TOL[dtype]
    actual.sum().backward()
    math_ref.sum().backward()
    assert max_err(x.grad, x2.grad) < TOL[dtype] * 2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n_q, n_k, d", [(113, 203, 59), (256, 512, 64), (512, 256, 32)])
def test_half_precision_error_at_most_that_of_pytorch(dtype, causal, n_q, n_k, d):
    """flash-attention test_flash_attn_output: against an fp32 reference, our error is at most 2x
    (output) and 3x (gradients) the error of PyTorch computing in the half type itself."""
    q, k, v, d_out, _ = make((1, 2, n_q, d), n_k, dtype=dtype, seed=2)
    out = flash_attention(q, k, v, causal=causal, block_size=64)
    grads = torch.autograd.grad(out, (q, k, v), d_out)
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    with sdpa_kernel(SDPBackend.MATH):
        ref = F.scaled_dot_product_attention(q32, k32, v32, is_causal=causal)
        pt = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # the half-precision peer
    ref_grads = torch.autograd.grad(ref, (q32, k32, v32), d_out.float())
    pt_grads = torch.autograd.grad(pt, (q, k, v), d_out)
    assert out.dtype == dtype
    assert max_err(out.float(), ref) <= 2 * max_err(pt.float(), ref)
    for g, r, p in zip(grads, ref_grads, pt_grads):
        assert max_err(g.float(), r) <= 3 * max_err(p.float(), r)


def test_saves_exactly_q_k_v_output_and_lse():
    """CS336 test_flash_forward_pass_pytorch: 3-D inputs (batch 4, 128, D 64); exactly one saved
    tensor of shape (batch, n_queries), and it is the log-sum-exp. Here also: nothing else is saved."""
    q, k, v, d_out, _ = make((4, 128, 64), 128, dtype=torch.float32)
    out = flash_attention(q, k, v)
    saved = out.grad_fn.saved_tensors
    assert len(saved) == 5
    assert [t.shape for t in saved] == [q.shape, k.shape, v.shape, out.shape, (4, 128)]
    for t, original in zip(saved[:3], (q, k, v)):
        assert t.data_ptr() == original.data_ptr()          # the inputs themselves, not copies
    maybe_ls = [t for t in saved if t.shape == (q.shape[0], q.shape[1])]
    assert len(maybe_ls) == 1
    torch.testing.assert_close(maybe_ls[0], reference_lse(q, k, False), rtol=1e-5, atol=1e-5)
    # test_flash_backward_pytorch, at our tolerance rather than CS336's 1e-2
    out.backward(d_out)
    ref_grads = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v), (q, k, v), d_out)
    for g, r in zip((q.grad, k.grad, v.grad), ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


def test_saved_bytes_grow_linearly_not_quadratically():
    sizes = {}
    for n in (256, 512, 1024):
        q, k, v, _, _ = make((1, 1, n, 64), n, dtype=torch.float32)
        with SavedTensorTracker() as tracker:
            flash_attention(q, k, v)
        sizes[n] = tracker.peak_bytes
        assert tracker.peak_bytes == 4 * (4 * n * 64 + n)     # q, k, v, out (n×64) and lse (n), float32
    assert sizes[1024] == 4 * sizes[256] - 0                   # O(n): 4x the bytes for 4x the length


@pytest.mark.parametrize("n_q, n_k", [(5, 9), (9, 5), (1, 12), (12, 1)])
def test_causal_is_top_left_as_sdpa_when_lengths_differ(n_q, n_k):
    """test_transformers.py test_causal_variants: is_causal means causal_upper_left; FlashAttention
    (the library) and decoding with a cache use causal_lower_right, which differs."""
    q, k, v, _, _ = make((2, 2, n_q, 8), n_k)
    out = flash_attention(q, k, v, causal=True, block_size=4)
    upper = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_upper_left(n_q, n_k))
    lower = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(n_q, n_k))
    assert max_err(out, upper) < 1e-12
    assert max_err(out, F.scaled_dot_product_attention(q, k, v, is_causal=True)) < 1e-12
    if n_q < n_k:  # lower-right lets query i see i + n_k - n_q keys more: a different result
        assert max_err(out, lower) > 1e-3


@pytest.mark.parametrize("causal", [False, True])
def test_a_query_with_no_key_gets_zero_and_minus_inf(causal):
    """flex_attention's convention (test_fully_masked_out_rows_0_check); SDPA also returns zeros."""
    q, k, v, d_out, d_lse = make((2, 3, 5, 8), 0)
    out, lse = flash_attention(q, k, v, causal=causal, return_lse=True)
    assert torch.equal(out, torch.zeros_like(out)) and torch.equal(out, F.scaled_dot_product_attention(q, k, v))
    assert torch.all(lse == float("-inf"))
    dq, = torch.autograd.grad((out, lse), (q,), (d_out, d_lse))
    assert torch.equal(dq, torch.zeros_like(dq))


def test_broadcast_leading_dims_2d_inputs_and_own_scale():
    q, _, _, _, _ = make((2, 3, 10, 8), 10)
    _, k, v, _, _ = make((3, 10, 8), 14, d_v=5)          # k, v shared by the batch: broadcast
    ref = F.scaled_dot_product_attention(q, k, v)
    assert max_err(flash_attention(q, k, v, block_size=4), ref) < 1e-12
    g = torch.autograd.grad(flash_attention(q, k, v, block_size=4).sum(), k)[0]
    assert max_err(g, torch.autograd.grad(ref.sum(), k)[0]) < 1e-12 and g.shape == k.shape
    q2, k2, v2 = q[0, 0], k[0], v[0]                     # no leading dims at all
    assert max_err(flash_attention(q2, k2, v2, block_size=3), F.scaled_dot_product_attention(q2, k2, v2)) < 1e-12
    for scale in (0.5, -1e-4 * 8, 3.0):                  # negative scale: test_transformers' math case
        assert max_err(flash_attention(q, k, v, scale=scale, block_size=4),
                       F.scaled_dot_product_attention(q, k, v, scale=scale)) < 1e-10


def test_float64_gradcheck_including_the_lse():
    q, k, v, _, _ = make((1, 1, 5, 3), 6, d_v=2)
    for causal in (False, True):
        assert torch.autograd.gradcheck(lambda q, k, v: flash_attention(q, k, v, causal=causal, block_size=2,
                                                                        return_lse=True), (q, k, v))


def test_large_scores_stay_finite_and_exact():
    """The running max keeps exp() in range: scores of several hundred do not overflow float32."""
    q, k, v, _, _ = make((1, 2, 50, 16), 70, dtype=torch.float32)
    q = (q * 40).detach()
    out = flash_attention(q, k, v, block_size=16)
    ref = F.scaled_dot_product_attention(q, k, v)
    assert torch.isfinite(out).all() and max_err(out, ref) < 1e-5
    assert (q @ k.transpose(-2, -1) / 4).abs().max() > 100


def test_deterministic_and_block_size_only_changes_rounding():
    q, k, v, _, _ = make((1, 2, 77, 16), 77, dtype=torch.float32)
    a = flash_attention(q, k, v, causal=True, block_size=16)
    assert torch.equal(a, flash_attention(q, k, v, causal=True, block_size=16))
    for block in (7, 64, 200):
        assert max_err(a, flash_attention(q, k, v, causal=True, block_size=block)) < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_on_cuda(dtype):
    q, k, v, d_out, _ = make((2, 4, 300, 64), 300, dtype=dtype)
    q, k, v, d_out = (t.detach().cuda().requires_grad_(t.requires_grad) for t in (q, k, v, d_out))
    out = flash_attention(q, k, v, causal=True)
    grads = torch.autograd.grad(out, (q, k, v), d_out)
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    with sdpa_kernel(SDPBackend.MATH):
        ref = F.scaled_dot_product_attention(q32, k32, v32, is_causal=True)
        pt = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    ref_grads = torch.autograd.grad(ref, (q32, k32, v32), d_out.float())
    pt_grads = torch.autograd.grad(pt, (q, k, v), d_out)
    slack = 1e-5 if dtype == torch.float32 else 0.0
    assert max_err(out.float(), ref) <= 2 * max_err(pt.float(), ref) + slack
    for g, r, p in zip(grads, ref_grads, pt_grads):
        assert max_err(g.float(), r) <= 3 * max_err(p.float(), r) + slack
