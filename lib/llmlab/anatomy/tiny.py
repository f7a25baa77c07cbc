"""A tiny transformer that takes any attention mask: one model, three architectures.

A causal decoder, a prefix decoder and a bidirectional encoder can share the *same* weights and
layers; what makes them different is the mask passed to attention (:mod:`.masks`) and the
objective they are trained with (:mod:`.objectives`). :class:`TinyTransformer` is a pre-norm
transformer (token + learned position embeddings, ``n_layers`` blocks of multi-head attention
and a GELU MLP, a final LayerNorm, the output layer tied to the token embedding) small enough to
train in seconds on a CPU.

Attention is written out (:func:`attention`)::

    scores = q kᵀ / sqrt(d_head)            (..., n_q, n_k)
    scores[~mask] = -inf                     a query never sees a key its mask hides
    out = softmax(scores) v                  (..., n_q, d_head)

and equals ``torch.nn.functional.scaled_dot_product_attention`` under the same mask (tests hold
them together; ``use_sdpa=True`` switches the model to the fused kernel). A query whose mask row
is all False gets a zero output, as PyTorch's kernel gives.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_float, check_int, check_tensor

__all__ = ["attention", "TinyTransformer"]


def _check_bool_mask(mask, *, dim=None) -> None:
    """An attention mask as the anatomy models take it: a bool tensor (True = may attend) of ``dim`` dimensions."""
    check_tensor("mask", mask, dim=dim)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = may attend), got dtype {mask.dtype}")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(d)) v with ``mask`` (bool, True = may attend) broadcast over the scores.

    Shapes: q (..., n_q, d), k (..., n_k, d), v (..., n_k, d_v), mask broadcastable to
    (..., n_q, n_k) or None (every query sees every key). Returns (..., n_q, d_v).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t, floating=True)
        if t.dim() < 2:
            raise ValueError(f"{name} must have at least 2 dimensions (..., n, d), got shape {tuple(t.shape)}")
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k must have q's head size {q.shape[-1]} in its last dimension, got shape {tuple(k.shape)}")
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(f"v must have one row per key ({k.shape[-2]}, as k), got shape {tuple(v.shape)}")
    if mask is not None:
        _check_bool_mask(mask)
        try:  # the scores' shape is (..., n_q, n_k), the batch dimensions of q and k broadcast
            shape = (*torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]), q.shape[-2], k.shape[-2])
            fits = torch.broadcast_shapes(mask.shape, shape) == shape
        except RuntimeError:
            shape, fits = (*q.shape[:-1], k.shape[-2]), False
        if not fits:
            raise ValueError(f"mask must broadcast to the scores' shape {shape} (..., n_q, n_k), got {tuple(mask.shape)}")
    return _attention(q, k, v, mask)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """:func:`attention` as the model runs it in every layer: shapes already right, no checks."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is None:
        return torch.softmax(scores, dim=-1) @ v
    # A row with no visible key would be all -inf, and softmax would give NaN (and NaN gradients).
    # Such rows get a finite dummy row instead and are zeroed after the softmax, as SDPA does.
    has_key = mask.any(dim=-1, keepdim=True)
    scores = scores.masked_fill(~mask, float("-inf")).masked_fill(~has_key, 0.0)
    return (torch.softmax(scores, dim=-1) * has_key) @ v


class _SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, use_sdpa: bool) -> torch.Tensor:
        batch, n, d = x.shape
        # (batch, n, 3d) -> three (batch, heads, n, d_head)
        q, k, v = self.qkv(x).view(batch, n, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        if mask is not None and mask.dim() == 3:
            mask = mask[:, None]  # (batch, n, n) -> (batch, 1, n, n): the same mask for every head
        if use_sdpa:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            y = _attention(q, k, v, mask)
        return self.out(y.transpose(1, 2).reshape(batch, n, d))


class _Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = _SelfAttention(d_model, n_heads)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, use_sdpa: bool) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), mask, use_sdpa))
        return x + self.drop(self.mlp(self.ln2(x)))


class TinyTransformer(nn.Module):
    """A pre-norm transformer language model whose attention mask is an argument of ``forward``.

    ``vocab_size`` tokens, width ``d_model`` (divisible by ``n_heads``), ``n_layers`` blocks,
    learned positions up to ``max_len``; ``dropout`` after attention and MLP (training only);
    ``use_sdpa`` runs attention with PyTorch's fused kernel instead of :func:`attention`.
    Weights are drawn from torch's global generator (seed it first).
    """

    def __init__(self, vocab_size: int, *, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                 max_len: int = 32, dropout: float = 0.0, use_sdpa: bool = False):
        super().__init__()
        self.vocab_size = check_int("vocab_size", vocab_size, low=1)
        self.d_model = check_int("d_model", d_model, low=1)
        self.n_layers = check_int("n_layers", n_layers, low=1)
        self.n_heads = check_int("n_heads", n_heads, low=1)
        if d_model % n_heads:
            raise ValueError(f"d_model must be divisible by n_heads, got d_model={d_model}, n_heads={n_heads}")
        self.max_len = check_int("max_len", max_len, low=1)
        dropout = check_float("dropout", dropout, low=0, high=1, high_open=True)
        self.use_sdpa = bool(use_sdpa)
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (batch, n, vocab_size) for ``input_ids`` (batch, n), ids in ``[0, vocab_size)``.

        ``mask``: bool (n, n) shared by the batch or (batch, n, n) per sequence, True where query
        i may attend to key j (:func:`~llmlab.anatomy.masks.attention_mask`); None lets every
        position see every position (as SDPA's ``attn_mask=None``).
        """
        check_tensor("input_ids", input_ids, dim=2, integer=True, min_numel=1)
        batch, n = input_ids.shape
        if n > self.max_len:
            raise ValueError(f"input_ids has {n} positions; this model has max_len={self.max_len}")
        if mask is not None:
            _check_bool_mask(mask, dim=(2, 3))
            if mask.shape[-2:] != (n, n) or (mask.dim() == 3 and mask.shape[0] not in (1, batch)):
                raise ValueError(f"mask must have shape ({n}, {n}) or ({batch}, {n}, {n}), got {tuple(mask.shape)}")
            mask = mask.to(input_ids.device)
        positions = torch.arange(n, device=input_ids.device)
        x = self.drop(self.tok(input_ids) + self.pos(positions))
        for block in self.blocks:
            x = block(x, mask, self.use_sdpa)
        return self.ln_f(x) @ self.tok.weight.T  # the output layer is the token embedding, tied
