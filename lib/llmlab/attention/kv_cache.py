"""The KV cache a real model builds, measured: to hold against the formula.

The formula, ``bytes = 2 (K and V) × layers × kv_heads × head_dim × seq_len × batch × bytes per
element``, lives with notebook 02's decode roofline (:func:`llmlab.decoding.kv_cache_bytes`, which
also prices the same model as MHA or MQA); :func:`measured_kv_cache_bytes` runs a model once with
``use_cache=True`` and adds up the bytes of the keys and values it returns.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_tensor
from .._torch import model_device
from ..memory import tensor_bytes
from ..modelinfo import check_fits_model, output_cache

__all__ = ["measured_kv_cache_bytes"]


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
    check_tensor("input_ids", input_ids, dim=2, integer=True, min_numel=1)
    check_fits_model(model, input_ids)
    cache = output_cache(model(input_ids=input_ids.to(model_device(model)), use_cache=True))
    if cache is None:
        raise ValueError("model returned no KV cache with use_cache=True")
    return sum(tensor_bytes(t) for t in _cache_tensors(cache))
