"""llmlab.attention.backends: which fused SDPA kernel a device runs, and the fused-vs-math timing.

The kernel choice follows PyTorch's rules (sdp_utils.cpp): FlashAttention-2 from sm80 on in
fp16/bf16, the memory-efficient kernel below (a T4 is sm75: fp16), the CPU's own flash kernel. The
CPU kernel and the math backend are run here and must agree; the CUDA path runs where a GPU is.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from conftest import requires_cuda
from llmlab.attention import FusedKernel, fused_sdpa_kernel, math_backend_length, sdpa_backend_timings
from llmlab.attention import backends
from llmlab.timing import Timing


@pytest.mark.parametrize("capability, backend, dtype", [
    ((7, 5), SDPBackend.EFFICIENT_ATTENTION, torch.float16),   # T4: no FlashAttention-2, no bf16
    ((7, 0), SDPBackend.EFFICIENT_ATTENTION, torch.float16),   # V100
    ((8, 0), SDPBackend.FLASH_ATTENTION, torch.bfloat16),      # A100
    ((8, 9), SDPBackend.FLASH_ATTENTION, torch.bfloat16),      # L4
    ((9, 0), SDPBackend.FLASH_ATTENTION, torch.bfloat16),      # H100
])
def test_the_fused_kernel_follows_the_compute_capability(capability, backend, dtype):
    kernel = fused_sdpa_kernel("cpu", capability=capability)
    assert isinstance(kernel, FusedKernel) and kernel.backend == backend and kernel.dtype == dtype
    assert f"sm{capability[0]}{capability[1]}" in kernel.why
    if capability < (8, 0):
        assert "needs sm80" in kernel.why and kernel.name == "memory-efficient kernel"


def test_on_the_cpu_the_fused_kernel_is_pytorchs_flash_kernel_and_equals_the_math_backend():
    kernel = fused_sdpa_kernel("cpu")
    assert kernel.backend == SDPBackend.FLASH_ATTENTION and kernel.dtype == torch.float32
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 70, 16, generator=g) for _ in range(3))
    for causal in (False, True):
        with sdpa_kernel(kernel.backend):
            fused = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        with sdpa_kernel(SDPBackend.MATH):
            math = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        assert (fused - math).abs().max() < 1e-5


def test_math_backend_length_fits_six_float32_n_by_n_matrices_per_head_in_half_the_memory():
    gb = 10**9
    assert math_backend_length(heads=16, memory_bytes=16 * gb) == 4096      # T4
    assert math_backend_length(heads=16, memory_bytes=40 * gb) == 4096      # A100 40 GB
    assert math_backend_length(heads=16, memory_bytes=80 * gb) == 8192      # H100 80 GB
    assert math_backend_length(heads=16, longest=1024, memory_bytes=80 * gb) == 1024
    assert math_backend_length(heads=1, longest=1000, memory_bytes=80 * gb) == 512   # a power of two <= longest
    for mem in (10**6, 3 * gb, 17 * gb):
        n = math_backend_length(heads=4, memory_bytes=mem)
        assert 6 * 4 * n * n * 4 <= mem // 2 or n == 1
        assert n == 8192 or 6 * 4 * (2 * n) ** 2 * 4 > mem // 2              # the longest that fits


@pytest.mark.parametrize("backward", [False, True])
def test_backend_timings_on_the_cpu(backward):
    t = sdpa_backend_timings(64, heads=2, d=16, backward=backward, rounds=2, device="cpu")
    assert set(t) == {"fused", "math"}            # float32: the math backend has no upcast to undo
    assert all(isinstance(x, Timing) and len(x.times) == 2 and x.min > 0 for x in t.values())


def test_half_precision_also_times_the_math_backend_without_its_upcast_and_restores_the_switch(monkeypatch):
    bf16 = FusedKernel(SDPBackend.FLASH_ATTENTION, "CPU flash kernel", torch.bfloat16, "test")
    before = torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed()
    seen = []
    original = backends._math_in_input_precision

    def spy(enabled):
        seen.append(enabled)
        return original(enabled)

    monkeypatch.setattr(backends, "_math_in_input_precision", spy)
    t = sdpa_backend_timings(32, kernel=bf16, heads=1, d=16, causal=True, rounds=1, device="cpu")
    monkeypatch.undo()
    assert set(t) == {"fused", "math", "math, input precision"} and True in seen and False in seen
    assert torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed() == before
    with backends._math_in_input_precision(True):
        assert torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed()
    assert torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed() == before


@requires_cuda
def test_the_chosen_kernel_runs_on_this_gpu():
    kernel = fused_sdpa_kernel("cuda")
    n = min(1024, math_backend_length("cuda", heads=2))
    t = sdpa_backend_timings(n, kernel=kernel, heads=2, rounds=1, device="cuda")
    assert {"fused", "math"} <= set(t)
