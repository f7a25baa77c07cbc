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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# TorchDispatchMode is the documented __torch_dispatch__ extension point (torch.utils.flop_counter uses it too).
from torch.utils._python_dispatch import TorchDispatchMode

from .._checks import check_float, check_int, check_module, check_str
from .._torch import model_device, resolve_device, resolve_dtype
from ..timing import timeit
from .limits import check_fits_model, check_input_ids
from .search import _step

__all__ = ["GPU_PEAKS", "known_gpu_peak", "measure_bandwidth", "DecodeRoofline", "decode_roofline", "count_step_ops"]

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
    KV cache, 2 * n_layers * n_kv_heads * head_dim * context_len elements. FLOPs: 2 per weight of
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

    config = model.config
    n_layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    n_heads = getattr(config, "num_attention_heads", None) or config.n_head
    n_kv_heads = getattr(config, "num_key_value_heads", None) or n_heads
    hidden = getattr(config, "hidden_size", None) or config.n_embd
    head_dim = getattr(config, "head_dim", None) or hidden // n_heads

    n_read, n_matmul = _weights_per_token(model)
    weight_bytes = n_read * elem
    kv_bytes = 2 * n_layers * n_kv_heads * head_dim * context_len * elem
    flops = 2.0 * n_matmul + 4.0 * n_layers * n_heads * head_dim * context_len
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
    runs through the model with the KV cache, as every decoder here does per token. On a GPU each
    counted operator is about one kernel launch, whatever the size of its tensors: this count
    times the per-launch overhead is a floor on the step time that no bandwidth removes (a CUDA
    graph replays the whole step with one launch).
    """
    check_module("model", model)
    check_input_ids(input_ids)
    check_fits_model(model, input_ids, max_new_tokens=1)
    input_ids = input_ids.to(model_device(model))
    logits, cache = _step(model, input_ids, None)
    next_id = logits.argmax(-1, keepdim=True)
    counter = _OpCounter()
    with counter:
        _step(model, next_id, cache)
    return counter.n_ops
