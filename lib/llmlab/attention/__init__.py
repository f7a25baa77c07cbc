"""Attention kernels: exact attention without the n×n matrix, what it costs, and the KV cache.

* ``flash``: :func:`flash_attention`, FlashAttention's tiled forward and backward (online
  softmax over key blocks) as a ``torch.autograd.Function`` saving only q, k, v, the output and
  the per-row log-sum-exp; equal to ``scaled_dot_product_attention`` up to rounding;
* ``cost``: the methods compared (:data:`ATTENTION_METHODS`: plain, SDPA math, SDPA, flash) and
  what they cost: :func:`attention_memory` (saved bytes and peak allocation, measured),
  :func:`attention_flops` (counted), :func:`attention_traffic` (the GPU slow-memory model vs
  block size), :func:`attention_timings`, :func:`op_profile`;
* ``backends``: PyTorch's own kernels on a GPU: :func:`fused_sdpa_kernel` (FlashAttention-2 from
  sm80 on, else the memory-efficient kernel) and :func:`sdpa_backend_timings` (fused against the
  math backend, the math backend also without its float32 upcast);
* ``kv_cache``: :func:`measured_kv_cache_bytes` (the cache a real model builds), to hold against
  :func:`kv_cache_bytes` (2 × layers × kv_heads × head_dim × tokens × bytes), which lives with
  notebook 02's roofline in :mod:`llmlab.decoding` and is re-exported here with
  :func:`attention_geometry`.
"""

from .cost import (
    ATTENTION_METHODS,
    L2_CACHE_BYTES,
    SHARED_MEMORY_PER_BLOCK,
    AttentionFlops,
    AttentionMemory,
    AttentionTraffic,
    OpProfile,
    attention_flops,
    attention_function,
    attention_inputs,
    attention_memory,
    attention_timings,
    attention_traffic,
    op_profile,
)
from .backends import FusedKernel, fused_sdpa_kernel, math_backend_length, sdpa_backend_timings
from .flash import flash_attention
from ..decoding.roofline import AttentionGeometry, attention_geometry, kv_cache_bytes
from .kv_cache import measured_kv_cache_bytes

__all__ = [
    "flash_attention",
    "ATTENTION_METHODS", "SHARED_MEMORY_PER_BLOCK", "L2_CACHE_BYTES", "attention_function", "attention_inputs",
    "AttentionMemory", "attention_memory", "AttentionFlops", "attention_flops",
    "AttentionTraffic", "attention_traffic", "attention_timings", "OpProfile", "op_profile",
    "FusedKernel", "fused_sdpa_kernel", "math_backend_length", "sdpa_backend_timings",
    "AttentionGeometry", "attention_geometry", "kv_cache_bytes", "measured_kv_cache_bytes",
]
