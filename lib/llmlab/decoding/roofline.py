"""Roofline arithmetic for one decoded token: how fast batch-1 decoding could possibly be.

A decode step reads every weight (and the KV cache) once and does about 2 FLOPs per weight, so
its arithmetic intensity is ~1 FLOP per byte in fp16/bf16 (0.5 in fp32): far below any machine's
balance point (peak FLOP/s / bandwidth, hundreds on a GPU). The step is memory-bound and its
floor is ``bytes_per_token / bandwidth``.

* :func:`decode_roofline` counts the bytes and FLOPs of one step from a model and a context
  length, and returns a :class:`DecodeRoofline` (times at the memory and compute roofs).
* :func:`count_step_ops` counts the PyTorch operators one cached decode step runs: on a GPU each
  is about one kernel launch, a few microseconds of overhead however small the kernel;
* :func:`measure_bandwidth` measures the memory bandwidth this process gets with a large copy;
  :func:`known_gpu_peak` looks up a GPU's data-sheet bandwidth and bf16 FLOP/s in
  :data:`GPU_PEAKS`.
* :func:`kv_cache_bytes`: the KV cache's bytes, 2 (K and V) × layers × kv_heads × head_dim ×
  tokens × batch × bytes per element, from a config's :func:`attention_geometry`. Multi-head
  attention (MHA) has one K/V head per query head; grouped-query attention (GQA, Ainslie et al.
  2023) lets groups of query heads share one (SmolLM2-135M: 9 query heads, 3 K/V heads);
  multi-query attention (MQA, Shazeer 2019) keeps one. The cache, and the bytes every decode step
  reads from it, shrink by the sharing factor. Notebook 14 measures the cache a real model builds
  (:func:`llmlab.attention.measured_kv_cache_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# TorchDispatchMode is the documented __torch_dispatch__ extension point (torch.utils.flop_counter uses it too).
from torch.utils._python_dispatch import TorchDispatchMode

from .._checks import check_float, check_int, check_module, check_str
from .._torch import model_device, resolve_device, resolve_dtype
from ..modelinfo import cache_keyword, output_cache
from ..timing import timeit
from .limits import _check_request

__all__ = ["GPU_PEAKS", "known_gpu_peak", "measure_bandwidth", "DecodeRoofline", "decode_roofline",
           "AttentionGeometry", "attention_geometry", "kv_cache_bytes", "count_step_ops"]

# Peak HBM bandwidth (bytes/s) and dense bf16 tensor-core FLOP/s from the vendors' data sheets,
# matched by substring of torch.cuda.get_device_name() (first match wins: specific names first,
# e.g. "H100 PCIe" before "H100", "A100" before "A10", "L40S" before "L4").
GPU_PEAKS: dict[str, tuple[float, float]] = {
    "H200": (4.8e12, 989e12),
    "H100 PCIe": (2.0e12, 756e12),
    "H100 NVL": (3.9e12, 835e12),
    "H100": (3.35e12, 989e12),  # SXM
    "A100-PCIE-40GB": (1.555e12, 312e12),
    "A100": (2.0e12, 312e12),  # 80GB SXM
    "L40S": (0.864e12, 362e12),
    "L4": (0.3e12, 121e12),
    "A10": (0.6e12, 125e12),
    "T4": (0.32e12, 65e12),
    "V100": (0.9e12, 125e12),
}


def known_gpu_peak(device_name: str) -> tuple[float, float] | None:
    """(bandwidth bytes/s, bf16 FLOP/s) of a known GPU from its name (case-insensitive substring), or None."""
    device_name = check_str("device_name", device_name, allow_empty=True)
    for key, peak in GPU_PEAKS.items():
        if key.lower() in device_name.lower():
            return peak
    return None


def measure_bandwidth(device=None, *, n_bytes: int = 2**28, repeat: int = 5) -> float:
    """Memory bandwidth in bytes/s measured with a large copy (each copy reads and writes ``n_bytes``).

    ``device`` None means :func:`llmlab.default_device`. Median of ``repeat`` copies after one
    warm-up (:func:`llmlab.timing.timeit`, CUDA-synchronised). On a shared machine it measures
    what this process gets, which is what decoding gets too.
    """
    device = resolve_device(device)
    # At least one float32; at most 8 GiB (the copy holds two buffers of n_bytes).
    n_bytes = check_int("n_bytes", n_bytes, low=4, high=2**33)
    repeat = check_int("repeat", repeat, low=1)
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    seconds = timeit(lambda: dst.copy_(src), repeat=repeat, warmup=1, device=device)
    return 2 * src.numel() * src.element_size() / seconds


@dataclass(frozen=True)
class DecodeRoofline:
    """Bytes and FLOPs of one batch-1 decode step, and the time each would take at peak.

    ``t_memory = (weight_bytes + kv_bytes) / bandwidth``; ``t_compute = flops / peak_flops``. The
    step can be no faster than the larger of the two; ``intensity`` (FLOP per byte) far below
    the machine's ``peak_flops / bandwidth`` means memory-bound.
    """

    weight_bytes: int
    kv_bytes: int
    flops: float
    bandwidth: float
    peak_flops: float | None = None

    @property
    def bytes_per_token(self) -> int:
        return self.weight_bytes + self.kv_bytes

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved."""
        return self.flops / self.bytes_per_token

    @property
    def t_memory(self) -> float:
        """Seconds to move ``bytes_per_token`` at ``bandwidth``."""
        return self.bytes_per_token / self.bandwidth

    @property
    def t_compute(self) -> float | None:
        """Seconds to do ``flops`` at ``peak_flops`` (None when the peak is not given)."""
        return None if self.peak_flops is None else self.flops / self.peak_flops

    @property
    def floor_tokens_per_s(self) -> float:
        """Tokens/s at the roofline: 1 / max(t_memory, t_compute)."""
        return 1.0 / max(self.t_memory, self.t_compute or 0.0)


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


def _weights_per_token(model: nn.Module) -> tuple[int, int]:
    """(weights read per decoded token, weights that take part in a matrix multiply).

    Every parameter is counted once (a tied LM head and input embedding are one tensor). A lookup
    table (an ``nn.Embedding`` that is not also the LM head: an untied input embedding, GPT-2's
    position table) is read one row per token and does no multiply.
    """
    head = model.get_output_embeddings()
    head_weight = None if head is None else head.weight
    lookups = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding) and m.weight is not head_weight}
    n_read = n_matmul = 0
    for p in model.parameters():  # tied weights appear once
        if id(p) in lookups:
            n_read += p.shape[-1]  # one row
        else:
            n_read += p.numel()
            n_matmul += p.numel() if p.dim() == 2 else 0  # matrices; norms and biases add no matmul
    return n_read, n_matmul


def decode_roofline(model, context_len: int, *, bandwidth: float, peak_flops: float | None = None,
                    dtype: torch.dtype | str | None = None) -> DecodeRoofline:
    """Roofline of decoding one token at ``context_len`` with batch 1.

    Bytes: every weight once (tied embeddings once; one row of an untied lookup table) plus the
    KV cache, 2 * n_layers * n_kv_heads * head_dim * context_len elements
    (:func:`llmlab.attention.kv_cache_bytes`). FLOPs: 2 per weight of
    every matrix multiply (the LM head included) plus 4 * n_layers * n_heads * head_dim *
    context_len for q.k and attention.v. ``bandwidth`` (bytes/s) and ``peak_flops`` (FLOP/s, or
    None to leave the compute roof out) must be > 0. ``dtype`` (e.g. ``torch.bfloat16`` or
    ``"bf16"``) defaults to the model's.
    """
    check_module("model", model)
    context_len = check_int("context_len", context_len, low=0)
    bandwidth = check_float("bandwidth", bandwidth, low=0.0, low_open=True)
    if peak_flops is not None:
        peak_flops = check_float("peak_flops", peak_flops, low=0.0, low_open=True)
    params = list(model.parameters())
    if not params:
        raise ValueError("model has no parameters: there is nothing to decode with")
    elem = params[0].element_size() if dtype is None else torch.finfo(resolve_dtype(dtype)).bits // 8

    geo = attention_geometry(model.config)
    n_read, n_matmul = _weights_per_token(model)
    weight_bytes = n_read * elem
    kv_dtype = dtype if dtype is not None else (params[0].dtype if params[0].is_floating_point() else torch.float32)
    kv_bytes = kv_cache_bytes(model.config, context_len, dtype=kv_dtype)
    flops = 2.0 * n_matmul + 4.0 * geo.n_layers * geo.n_heads * geo.head_dim * context_len
    return DecodeRoofline(weight_bytes, kv_bytes, flops, bandwidth, peak_flops)


class _OpCounter(TorchDispatchMode):
    """Counts the ATen operators dispatched inside it, views (which launch no kernel) excluded."""

    def __init__(self):
        super().__init__()
        self.n_ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        returns = func._schema.returns
        is_view = any(r.alias_info is not None and not r.alias_info.is_write for r in returns)
        self.n_ops += not is_view
        return func(*args, **(kwargs or {}))


@torch.no_grad()
def count_step_ops(model, input_ids: torch.Tensor) -> int:
    """Number of PyTorch operators (ATen ops, views excluded) in one cached decode step after ``input_ids``.

    The prompt ``input_ids`` (1, prompt_len) is prefilled first (not counted); then one new token
    runs through the model with the KV cache, as every decoder here does per token. On a GPU an
    operator costs about one kernel launch, whatever the size of its tensors; some (such as
    allocations and scalar reads) launch none, some more than one (a split-K matrix product and its
    reduction), and the op set on CUDA can differ from the CPU's, so a count taken on the CPU
    estimates a GPU step's launches, no more. Launches times the per-launch overhead is a floor on
    the step time that no bandwidth removes (a CUDA graph replays the whole step with one launch).
    """
    _check_request(model, input_ids, 1)     # the decoders' door: a (1, prompt_len) id tensor that fits the model
    cache_kw = cache_keyword(model)
    out = model(input_ids=input_ids.to(model_device(model)), use_cache=True)         # prefill, not counted
    next_id = out.logits[:, -1].argmax(-1, keepdim=True)
    counter = _OpCounter()
    with counter:
        model(input_ids=next_id, use_cache=True, **{cache_kw: output_cache(out)})  # one decode step
    return counter.n_ops
