"""A Llama-family model whose attention reads and writes a :class:`~llmlab.serving.PagedKVCache`.

:class:`PagedLlama` runs the model's own weights (:class:`llmlab.decoding.llama.LlamaWeights`) on a
batch of sequences of different lengths, each bringing any number of new tokens (a whole prompt
at prefill, one token per decode step). Per layer, the new tokens' keys and values are written to
the slots the cache allocated for them, and each sequence's keys and values are gathered back from
its blocks through its block table — the PagedAttention access pattern (Kwon et al. 2023),
written with a gather and ``scaled_dot_product_attention`` instead of a fused kernel.
"""

from __future__ import annotations

from typing import Hashable

import torch
import torch.nn.functional as F

from ..decoding.llama import LlamaWeights
from .paged import PagedKVCache

__all__ = ["PagedLlama"]


class PagedLlama:
    """``PagedLlama(model, num_blocks=..., block_size=...)``: the model's weights plus a paged cache.

    :meth:`forward` takes the ids of the sequences to advance and, for each, its new tokens; it
    returns the logits after each sequence's last new token. The cache (``.cache``) keeps
    everything else: which blocks hold which sequence, and how long each one is.
    """

    def __init__(self, model, *, num_blocks: int, block_size: int, who: str = "serve"):
        self.weights = w = LlamaWeights(model, who=who)  # checks the model; PagedKVCache checks the sizes
        self.cache = PagedKVCache(len(w.layers), w.n_kv_heads, w.head_dim, num_blocks=num_blocks,
                                  block_size=block_size, dtype=w.dtype, device=w.device)

    @torch.no_grad()
    def forward(self, seq_ids: list[Hashable], new_tokens: list[list[int]], *, all_logits: bool = False) -> torch.Tensor:
        """Run ``new_tokens[b]`` after what sequence ``seq_ids[b]`` has cached; return logits (batch, vocab), in
        the model's dtype, of each sequence's last new token, or (batch, n_max, vocab) of every new token with
        ``all_logits=True`` (rows past a sequence's own count are padding). Every sequence must exist
        in the cache (:meth:`PagedKVCache.add`) and bring at least one token."""
        w, cache, device = self.weights, self.cache, self.weights.device
        n = [len(t) for t in new_tokens]
        batch, n_max = len(seq_ids), max(n)
        starts = [cache.lengths[s] for s in seq_ids]
        # Host book-keeping: slots for the new tokens (blocks allocated, copy-on-write), then the tables.
        slots = torch.tensor([slot for s, k in zip(seq_ids, n) for slot in cache.allocate(s, k)],
                             dtype=torch.long, device=device)
        slot_table = cache.slot_table(seq_ids, device)  # (batch, max_len)
        tokens = torch.tensor([t + [0] * (n_max - len(t)) for t in new_tokens], dtype=torch.long, device=device)
        offsets = torch.arange(n_max, device=device)
        positions = torch.tensor(starts, device=device)[:, None] + offsets  # (batch, n_max)
        is_new = offsets[None, :] < torch.tensor(n, device=device)[:, None]  # real tokens, not padding
        # Query i of sequence b sees key j when j <= its position (causal) and j < the sequence's length.
        lengths = torch.tensor([s + k for s, k in zip(starts, n)], device=device)
        keys_at = torch.arange(slot_table.shape[1], device=device)
        visible = (keys_at[None, None, :] <= positions[:, :, None]) & (keys_at[None, None, :] < lengths[:, None, None])
        mask = visible[:, None]  # (batch, 1, n_max, max_len), broadcast over heads

        cos, sin = w.rope_tables(positions)  # (batch, n_max, head_dim)
        cos, sin = cos[:, None], sin[:, None]
        x = F.embedding(tokens, w.embed)
        for i, layer in enumerate(w.layers):

            def attend(q, k, v, i=i):
                # Store the new keys/values in their slots, then read the whole sequence back from its blocks.
                cache.write(i, slots, k.transpose(1, 2)[is_new], v.transpose(1, 2)[is_new])
                keys, values = cache.gather(i, slot_table)
                return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True)

            x = w.block(layer, x, cos, sin, attend)
        if all_logits:
            return w.logits(x)
        last = torch.tensor(n, device=device) - 1
        return w.logits(x[torch.arange(batch, device=device), last])
