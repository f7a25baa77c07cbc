"""The KV cache's bytes: the formula, and the cache a real model builds.

Decoding keeps, for every layer and every past token, one key and one value vector per
key/value head (notebook 02's KV cache). Its size is

    bytes = 2 (K and V) × layers × kv_heads × head_dim × seq_len × batch × bytes per element.

Multi-head attention (MHA) has one K/V head per query head; grouped-query attention (GQA,
Ainslie et al. 2023) lets groups of query heads share one (SmolLM2-135M: 9 query heads, 3 K/V
heads); multi-query attention (MQA, Shazeer 2019) keeps a single one. The cache shrinks by the
sharing factor, and so does the memory traffic of every decode step (notebook 02's roofline).

* :func:`attention_geometry` reads layers, query heads, K/V heads and head size from a Hugging
  Face config (Llama and GPT-2 spellings);
* :func:`kv_cache_bytes` is the formula;
* :func:`measured_kv_cache_bytes` runs a model once with ``use_cache=True`` and adds up the bytes
  of the keys and values it returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_int, check_module, check_tensor, check_token_ids
from .._torch import model_device, resolve_dtype
from ..memory import tensor_bytes
from ..perplexity import context_size, vocab_size

__all__ = ["AttentionGeometry", "attention_geometry", "kv_cache_bytes", "measured_kv_cache_bytes"]

# Larger than any real context or batch; catches a typo (an extra zero or three) at once.
_MAX_TOKENS = 2**40


@dataclass(frozen=True)
class AttentionGeometry:
    """The attention shape of a transformer: ``n_layers``, query heads ``n_heads``, key/value
    heads ``n_kv_heads`` (= n_heads for MHA, 1 for MQA) and ``head_dim``."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int

    @property
    def group_size(self) -> int:
        """Query heads per K/V head (1 = MHA)."""
        return self.n_heads // self.n_kv_heads


def attention_geometry(config) -> AttentionGeometry:
    """Layers, heads, K/V heads and head size of a Hugging Face model config (or a model).

    Llama-style names (``num_hidden_layers``, ``num_attention_heads``, ``num_key_value_heads``,
    ``head_dim``, ``hidden_size``) and GPT-2's (``n_layer``, ``n_head``, ``n_embd``); without
    ``num_key_value_heads`` every query head has its own K/V head, without ``head_dim`` it is
    hidden size / heads.
    """
    if isinstance(config, nn.Module):
        config = getattr(config, "config", None)

    def first(*names):
        for name in names:
            value = getattr(config, name, None)
            if value is not None:
                return value
        return None

    n_layers = first("num_hidden_layers", "n_layer")
    n_heads = first("num_attention_heads", "n_head")
    hidden = first("hidden_size", "n_embd")
    if n_layers is None or n_heads is None:
        raise TypeError(f"config must be a transformer config with layers and heads (e.g. model.config), "
                        f"got {type(config).__name__}")
    n_kv_heads = first("num_key_value_heads") or n_heads
    head_dim = first("head_dim") or (hidden // n_heads if hidden else None)
    if head_dim is None:
        raise TypeError("config must give head_dim or hidden_size (e.g. model.config)")
    return AttentionGeometry(int(n_layers), int(n_heads), int(n_kv_heads), int(head_dim))


def kv_cache_bytes(config, seq_len: int, *, batch: int = 1, dtype=torch.float32,
                   n_kv_heads: int | None = None) -> int:
    """Bytes of the KV cache: 2 × layers × kv_heads × head_dim × seq_len × batch × element size.

    ``config``: a Hugging Face config (or model); ``dtype`` the cache's element type (a
    ``torch.dtype`` or a name such as ``"bf16"``). ``n_kv_heads`` replaces the config's K/V head
    count, to price the same model as MHA (= its query heads) or MQA (1).
    """
    geo = attention_geometry(config)
    seq_len = check_int("seq_len", seq_len, low=0, high=_MAX_TOKENS)
    batch = check_int("batch", batch, low=1, high=_MAX_TOKENS)
    dtype = resolve_dtype(dtype)
    kv_heads = geo.n_kv_heads if n_kv_heads is None else check_int("n_kv_heads", n_kv_heads, low=1)
    element = torch.finfo(dtype).bits // 8
    return 2 * geo.n_layers * kv_heads * geo.head_dim * seq_len * batch * element


def _cache_tensors(cache):
    """The key and value tensors of a transformers cache (5.x ``.layers``, 4.x tuples)."""
    if hasattr(cache, "layers"):
        for layer in cache.layers:
            yield from (t for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
                        if isinstance(t, torch.Tensor))
    elif hasattr(cache, "key_cache"):
        yield from cache.key_cache
        yield from cache.value_cache
    else:
        for layer in cache:
            yield from (t for t in layer if isinstance(t, torch.Tensor))


@torch.no_grad()
def measured_kv_cache_bytes(model: nn.Module, input_ids: torch.Tensor) -> int:
    """Bytes of the keys and values ``model`` caches for ``input_ids`` (batch, seq_len).

    One forward pass with ``use_cache=True``; the sum of the bytes of every key and value tensor
    in the cache it returns (``past_key_values``, called ``cache`` in transformers 5).
    """
    check_module("model", model)
    check_tensor("input_ids", input_ids, dim=2, integer=True, min_numel=1)
    check_token_ids("input_ids", input_ids, vocab_size(model))
    context = context_size(model)
    if context is not None and input_ids.shape[1] > context:
        raise ValueError(f"input_ids has {input_ids.shape[1]} tokens, longer than the model's context of {context} positions")
    out = model(input_ids=input_ids.to(model_device(model)), use_cache=True)
    cache = getattr(out, "cache", None)
    if cache is None:
        cache = getattr(out, "past_key_values", None)
    if cache is None:
        raise ValueError("model returned no KV cache with use_cache=True")
    return sum(tensor_bytes(t) for t in _cache_tensors(cache))
