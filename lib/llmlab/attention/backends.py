"""PyTorch's own attention kernels on a GPU: which fused SDPA backend a device can run, timed
against SDPA's math backend on equal terms.

What PyTorch accepts (``aten/src/ATen/native/transformers/cuda/sdp_utils.cpp``):

* ``SDPBackend.FLASH_ATTENTION`` (FlashAttention-2) runs only on compute capability 8.0 to 12.1
  (A100, L4, H100, RTX 30xx/40xx ...) and only in float16 or bfloat16. On anything older, Colab's
  free T4 (sm75) included, forcing it raises "No available kernel".
* ``SDPBackend.EFFICIENT_ATTENTION`` (the memory-efficient CUTLASS kernel from xFormers) runs
  from sm50 on, in float16 and float32, and in bfloat16 only from sm80 on: on a T4 the fused
  kernel to time is this one, in float16.
* ``SDPBackend.MATH`` writes the formula out with the n×n matrices. For float16/bfloat16 inputs
  it computes in float32 (it upcasts q, k and v) unless
  ``torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp(True)`` is set (default False), so a
  fused-vs-math timing in half precision also compares half- against single-precision matmuls;
  :func:`sdpa_backend_timings` therefore times the math backend both ways.

On the CPU, ``FLASH_ATTENTION`` is PyTorch's fused flash-style C++ kernel (any float dtype).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from .._checks import check_int
from .._torch import resolve_device
from ..timing import Timing, interleaved

__all__ = ["FusedKernel", "fused_sdpa_kernel", "math_backend_length", "sdpa_backend_timings"]

_HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class FusedKernel:
    """The fused SDPA backend to time on a device: ``backend`` (an ``SDPBackend``), a readable
    ``name``, the ``dtype`` to run it in, and ``why`` it was chosen."""

    backend: SDPBackend
    name: str
    dtype: torch.dtype
    why: str


def fused_sdpa_kernel(device=None, *, capability: tuple[int, int] | None = None) -> FusedKernel:
    """The fused SDPA kernel ``device`` can run (see the module docstring for PyTorch's rules).

    CUDA: FlashAttention-2 in bfloat16 from compute capability 8.0 on (when this PyTorch was built
    with it), else the memory-efficient kernel in float16. ``capability`` (major, minor) replaces the
    device's own, to ask what another GPU would get (``(7, 5)``: a T4). CPU: PyTorch's fused
    flash-style C++ kernel, in float32."""
    device = resolve_device(device)
    if capability is not None:
        if not (isinstance(capability, tuple) and len(capability) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in capability)):
            raise TypeError(f"capability must be a (major, minor) tuple of two ints >= 0, got {capability!r}")
    elif device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
    if capability is None:
        return FusedKernel(SDPBackend.FLASH_ATTENTION, "CPU flash kernel", torch.float32,
                           "PyTorch's fused flash-style C++ kernel for the CPU")
    sm = f"sm{capability[0]}{capability[1]}"
    # A question about another GPU (capability given, no GPU here) assumes a build with the kernel.
    built = torch.backends.cuda.is_flash_attention_available() if device.type == "cuda" else True
    if capability >= (8, 0) and built:
        return FusedKernel(SDPBackend.FLASH_ATTENTION, "FlashAttention-2", torch.bfloat16,
                           f"{sm}: FlashAttention-2 runs from sm80 on, in fp16/bf16")
    reason = "FlashAttention-2 needs sm80 or newer" if capability < (8, 0) else \
        "this PyTorch was built without FlashAttention"
    dtype = torch.float16 if capability < (8, 0) else torch.bfloat16
    return FusedKernel(SDPBackend.EFFICIENT_ATTENTION, "memory-efficient kernel", dtype,
                       f"{sm}: {reason}; the memory-efficient kernel runs from sm50 on "
                       f"({'fp16/fp32 only below sm80' if capability < (8, 0) else 'fp16/bf16/fp32'})")


def _check_size(name: str, n, heads) -> tuple[int, int]:
    """The attention size both SDPA measurements take: a sequence length ``n`` in [1, 2**17] (its name:
    ``name``) and ``heads`` in [1, 1024]."""
    n = check_int(name, n, low=1, high=2**17)
    return n, check_int("heads", heads, low=1, high=1024)


def math_backend_length(device=None, *, heads: int = 16, longest: int = 8192, memory_bytes: int | None = None) -> int:
    """The longest power-of-two sequence length, at most ``longest``, whose math-backend forward +
    backward fits the GPU: about six (heads, n, n) float32 matrices (scores, probabilities and
    their gradients, with the upcast) in half of its memory (``memory_bytes``, default: the
    device's total). For 16 heads a 16 GB T4 or a 40 GB A100 gets 4,096, an 80 GB H100 8,192."""
    longest, heads = _check_size("longest", longest, heads)
    if memory_bytes is None:
        device = resolve_device(device)
        if device.type != "cuda":
            raise ValueError(f"device must be a CUDA device (or pass memory_bytes), got {device}")
        memory_bytes = torch.cuda.get_device_properties(device).total_memory
    memory_bytes = check_int("memory_bytes", memory_bytes, low=1)
    n = 1 << (longest.bit_length() - 1)
    while n > 1 and 6 * heads * n * n * 4 > memory_bytes // 2:
        n //= 2
    return n


@contextlib.contextmanager
def _math_in_input_precision(enabled: bool):
    """Let SDPA's math backend reduce in fp16/bf16 instead of upcasting to float32 (restored after)."""
    flag = getattr(torch.backends.cuda, "allow_fp16_bf16_reduction_math_sdp", None)
    if not enabled or flag is None:
        yield
        return
    before = torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed()
    flag(True)
    try:
        yield
    finally:
        flag(before)


def sdpa_backend_timings(n: int, *, kernel: FusedKernel | None = None, heads: int = 16, d: int = 64,
                         causal: bool = False, backward: bool = True, rounds: int = 5, device=None,
                         seed: int = 0) -> dict[str, Timing]:
    """Time SDPA forward (+ backward) with only ``kernel``'s backend (``"fused"``, default:
    :func:`fused_sdpa_kernel` of ``device``) against only the math backend (``"math"``, PyTorch's
    default: float32 inside for fp16/bf16 inputs), interleaved; for fp16/bf16 inputs also the math
    backend computing in the input precision (``"math, input precision"``, where this PyTorch has
    the switch). Inputs (1, heads, n, d) in ``kernel.dtype``, seeded. Method -> :class:`Timing`."""
    n, heads = _check_size("n", n, heads)
    d = check_int("d", d, low=1, high=256)
    seed = check_int("seed", seed, low=0)  # rounds: interleaved checks it
    device = resolve_device(device)
    if kernel is None:
        kernel = fused_sdpa_kernel(device)
    elif not isinstance(kernel, FusedKernel):
        raise TypeError(f"kernel must be a FusedKernel (from fused_sdpa_kernel), got {type(kernel).__name__}")
    g = torch.Generator(device=device).manual_seed(seed)
    q, k, v = (torch.randn(1, heads, n, d, device=device, dtype=kernel.dtype, generator=g).requires_grad_()
               for _ in range(3))

    def run(backend, low_precision_math=False):
        def step():
            with sdpa_kernel(backend), _math_in_input_precision(low_precision_math):
                if backward:
                    q.grad = k.grad = v.grad = None
                    F.scaled_dot_product_attention(q, k, v, is_causal=causal).sum().backward()
                else:
                    with torch.no_grad():
                        F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return step

    fns = {"fused": run(kernel.backend), "math": run(SDPBackend.MATH)}
    if kernel.dtype in _HALF and hasattr(torch.backends.cuda, "allow_fp16_bf16_reduction_math_sdp"):
        fns["math, input precision"] = run(SDPBackend.MATH, low_precision_math=True)
    return interleaved(fns, rounds=rounds, device=device)
