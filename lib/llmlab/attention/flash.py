"""FlashAttention in plain PyTorch: exact attention that never builds the n×n score matrix.

Attention is ``out = softmax(q kᵀ · scale) v`` with ``scale = 1/sqrt(d)``. Plain attention
materialises the scores ``S = q kᵀ · scale`` (n_q × n_k per head) and the probabilities
``P = softmax(S)``, and autograd keeps ``P`` for backward: O(n²) memory.

**Online softmax** (Milakov & Gimelshein 2018, "Online normalizer calculation for softmax"):
a row's softmax can be built one block of keys at a time. Keep the running maximum ``m`` and the
running sum ``l = Σ exp(s - m)``; for a new block with scores ``s_j``::

    m_new = max(m, max(s_j))
    l     = exp(m - m_new) · l + Σ exp(s_j - m_new)          (rescale what you have)
    acc   = exp(m - m_new) · acc + exp(s_j - m_new) @ v_j     (the unnormalised output)

and at the end ``out = acc / l`` and the log-sum-exp ``L = m + log l``. Every step is exact
algebra: the result equals softmax(S) v up to floating-point rounding.

**FlashAttention** (Dao et al. 2022; FlashAttention-2, Dao 2023) runs this over blocks of
``block_size`` keys, so the scores held at any moment are ``n_q × block_size``, never
``n_q × n_k``. Its backward pass saves only ``q, k, v``, the output and ``L`` (O(n) memory) and
recomputes each block's probabilities as ``P = exp(S - L)``; with ``D = rowsum(dO ∘ O)``::

    dV += Pᵀ dO,   dP = dO Vᵀ,   dS = P ∘ (dP - D),   dQ += dS K · scale,   dK += dSᵀ Q · scale.

The loop here runs over key blocks and treats all query rows of a block step at once
(FlashAttention-1's loop order; on a GPU the query rows are split into blocks too, one per
thread block, running side by side; the arithmetic per row is the same). FlashAttention-2 makes
the query block the outer loop so that a block's running ``acc, m, l`` stay on chip.

Conventions (those of ``torch.nn.functional.scaled_dot_product_attention``):

* ``causal=True`` masks key j for query i when j > i, counted from the top-left corner (SDPA's
  ``is_causal``, ``torch.nn.attention.bias.causal_upper_left``) also when n_q != n_k. The
  FlashAttention library and a decode step with a KV cache align the diagonal bottom-right
  instead (``causal_lower_right``: query i sees keys j <= i + n_k - n_q); for one new query
  against a cache, pass ``causal=False``.
* A query that sees no key (only possible here with n_k = 0) gets output 0, log-sum-exp -inf
  and zero gradients, as SDPA gives 0 and flex_attention gives 0 and -inf.
* float16/bfloat16 inputs are computed in float32 blocks (as the GPU kernels accumulate in
  float32); the output has the input dtype, the log-sum-exp is float32.
* NaN in gives NaN out. Finite inputs give finite outputs unless a score q·k itself overflows
  the dtype (then SDPA gives NaN too).
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from .._checks import check_bool, check_float, check_int, check_tensor

__all__ = ["flash_attention"]

_HALF = (torch.float16, torch.bfloat16)


def _upper_triangle(block_size: int, device) -> torch.Tensor:
    """(block, block) bool, True where key c lies after query r (c > r): hidden under ``causal``."""
    return torch.ones(block_size, block_size, dtype=torch.bool, device=device).triu(1)


def _masked_scores(q_rows, k_block, causal, hide):
    """Scores of every query row from ``j0`` on against one key block: (..., rows, b)."""
    s = q_rows @ k_block.transpose(-2, -1)
    if causal:  # the first rows of the slice sit on the diagonal: hide their later keys
        r, b = min(s.shape[-2], k_block.shape[-2]), k_block.shape[-2]
        s[..., :r, :].masked_fill_(hide[:r, :b], float("-inf"))
    return s


def _forward(q, k, v, causal: bool, block_size: int, scale: float):
    """Online softmax over key blocks. Returns (out in q's dtype, lse in the compute dtype)."""
    acc_dtype = torch.float32 if q.dtype in _HALF else q.dtype
    n_q, n_k = q.shape[-2], k.shape[-2]
    qs = q.to(acc_dtype) * scale                                   # scale once, not every block
    acc = q.new_zeros((*q.shape[:-1], v.shape[-1]), dtype=acc_dtype)  # Σ exp(s - m) v, unnormalised
    m = q.new_full(q.shape[:-1], float("-inf"), dtype=acc_dtype)   # running row maximum
    l = q.new_zeros(q.shape[:-1], dtype=acc_dtype)                 # running Σ exp(s - m)
    hide = _upper_triangle(block_size, q.device) if causal else None
    for j0 in range(0, n_k, block_size):
        i0 = j0 if causal else 0           # top-left causal: query i sees key j iff j <= i
        if i0 >= n_q:
            break
        k_j = k[..., j0:j0 + block_size, :].to(acc_dtype)
        v_j = v[..., j0:j0 + block_size, :].to(acc_dtype)
        s = _masked_scores(qs[..., i0:, :], k_j, causal, hide)     # (..., n_q - i0, b)
        m_old = m[..., i0:]                                        # views: updated in place below
        m_new = torch.maximum(m_old, s.amax(dim=-1))
        p = s.sub_(m_new[..., None]).exp_()                        # in place: s is not needed again
        alpha = (m_old - m_new).exp_()                             # rescale of what we had
        l[..., i0:].mul_(alpha).add_(p.sum(dim=-1))
        acc[..., i0:, :].mul_(alpha[..., None]).add_(p @ v_j)
        m_old.copy_(m_new)
    seen = l > 0                                                   # False only for rows with no key
    out = torch.where(seen[..., None], acc / torch.where(seen, l, 1.0)[..., None], 0.0)
    lse = m + torch.log(l)                                         # -inf where no key was seen
    return out.to(q.dtype), lse


def _backward(q, k, v, out, lse, d_out, d_lse, causal: bool, block_size: int, scale: float):
    """Gradients of q, k, v, recomputing each block's probabilities from q, k and the lse."""
    acc_dtype = lse.dtype
    n_q, n_k = q.shape[-2], k.shape[-2]
    qs = q.to(acc_dtype) * scale
    d_out = d_out.to(acc_dtype)
    # D = rowsum(dO ∘ O); a gradient of the lse adds P ∘ dL to dS: fold it into D.
    D = (d_out * out.to(acc_dtype)).sum(dim=-1) - d_lse
    dq = torch.zeros_like(qs)
    dk = torch.zeros(k.shape, dtype=acc_dtype, device=k.device)
    dv = torch.zeros(v.shape, dtype=acc_dtype, device=v.device)
    hide = _upper_triangle(block_size, q.device) if causal else None
    for j0 in range(0, n_k, block_size):
        i0 = j0 if causal else 0
        if i0 >= n_q:
            break                                                  # later keys are seen by no query
        k_j = k[..., j0:j0 + block_size, :].to(acc_dtype)
        v_j = v[..., j0:j0 + block_size, :].to(acc_dtype)
        q_i, do_i = qs[..., i0:, :], d_out[..., i0:, :]
        p = _masked_scores(q_i, k_j, causal, hide).sub_(lse[..., i0:, None]).exp_()  # recomputed
        dv[..., j0:j0 + block_size, :] = p.transpose(-2, -1) @ do_i
        ds = (do_i @ v_j.transpose(-2, -1)).sub_(D[..., i0:, None]).mul_(p)      # P ∘ (dP - D)
        dq[..., i0:, :] += ds @ k_j
        dk[..., j0:j0 + block_size, :] = ds.transpose(-2, -1) @ q_i   # q_i already carries the scale
    return (dq * scale).to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


class _FlashAttention(torch.autograd.Function):
    """Saves exactly q, k, v, the output and the per-row log-sum-exp; backward recomputes."""

    @staticmethod
    def forward(ctx, q, k, v, causal, block_size, scale):
        out, lse = _forward(q, k, v, causal, block_size, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.causal, ctx.block_size, ctx.scale = causal, block_size, scale
        return out, lse

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_lse):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _backward(q, k, v, out, lse, d_out, d_lse, ctx.causal, ctx.block_size, ctx.scale)
        return dq, dk, dv, None, None, None


def _check_inputs(q, k, v) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t, floating=True)
        if t.dim() < 2:
            raise ValueError(f"{name} must have at least 2 dimensions (..., n, d), got shape {tuple(t.shape)}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name} must have q's dtype {q.dtype}, got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name} must be on q's device {q.device}, got {t.device}")
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k must have q's head size {q.shape[-1]} in its last dimension, got shape {tuple(k.shape)}")
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(f"v must have one row per key ({k.shape[-2]}, as k), got shape {tuple(v.shape)}")
    try:
        torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(f"q, k and v must have broadcastable leading (batch, head) dimensions, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)} and {tuple(v.shape)}") from None


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                    block_size: int = 64, scale: float | None = None, return_lse: bool = False):
    """Exact attention softmax(q kᵀ · scale) v, tiled over blocks of ``block_size`` keys.

    Shapes: q (..., n_q, d), k (..., n_k, d), v (..., n_k, d_v), any broadcastable leading
    (batch, head) dimensions; returns (..., n_q, d_v), and with ``return_lse=True`` also the
    per-row log-sum-exp of the scores L (..., n_q) (differentiable too). ``scale`` defaults to
    1/sqrt(d), as SDPA's. Equals ``torch.nn.functional.scaled_dot_product_attention(q, k, v,
    is_causal=causal, scale=scale)`` in value and gradients up to rounding. For backward it saves
    only q, k, v, the output and L (see the module docstring for the conventions: top-left
    causal mask, a query with no key gets 0).
    """
    _check_inputs(q, k, v)
    causal = check_bool("causal", causal)
    block_size = check_int("block_size", block_size, low=1)
    return_lse = check_bool("return_lse", return_lse)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else check_float("scale", scale)
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    q, k, v = (t.expand(*batch, *t.shape[-2:]) for t in (q, k, v))  # views: no copy
    out, lse = _FlashAttention.apply(q, k, v, causal, block_size, scale)
    return (out, lse) if return_lse else out
