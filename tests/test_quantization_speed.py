"""llmlab.quantization.speed: the dynamic-int8 copy, the bytes it reads, and the timing record (no speed asserted)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llmlab.decoding import decode_roofline, greedy
from llmlab.models import random_llama
from llmlab.quantization import fake_quantize, int4_kernel_available, int8_dynamic_copy, int8_weight_bytes, time_int8, time_matvec
from llmlab.quantization.speed import _int4_pack


def test_int8_copy_replaces_every_linear_and_leaves_the_model_alone():
    model = random_llama("tiny")
    q = int8_dynamic_copy(model)
    assert not any(type(m) is nn.Linear for m in q.modules())
    assert all(type(m) is nn.Linear for m in model.modules() if "Linear" in type(m).__name__)
    ids = torch.randint(3, 97, (1, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(ids).logits, q(ids).logits
    assert (a - b).abs().max() < 0.05 * a.abs().max()


def test_bytes_formula():
    model = random_llama("tiny")
    fp32, int8 = int8_weight_bytes(model)
    assert fp32 == decode_roofline(model, 0, bandwidth=1.0).weight_bytes
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    n_lin = sum(m.weight.numel() for m in linears)  # the head is the tied embedding: counted once
    assert int8 == fp32 - 3 * n_lin + 4 * len(linears) + 4 * 32
    assert 3.5 < fp32 / int8 < 4


def test_timing_record():
    model = random_llama("tiny")
    prompt = torch.randint(3, 97, (1, 5), generator=torch.Generator().manual_seed(0))
    t = time_int8(model, prompt, n_new=3, prefill_len=12, rounds=2, copy_bytes=2**20)
    assert set(t.decode) == set(t.prefill) == {"fp32", "int8"} and len(t.decode["fp32"].times) == 2
    assert t.decode_speedup > 0 and t.prefill_speedup > 0 and t.max_logit_diff >= 0
    assert t.predicted_decode_speedup == pytest.approx(t.weight_bytes[0] / t.weight_bytes[1])
    assert t.same_tokens == torch.equal(greedy(model, prompt, 3), greedy(int8_dynamic_copy(model), prompt, 3))
    # the copy in the decode rounds, and what the record derives from it
    assert t.copy_bytes == 2**20 and t.bandwidth == pytest.approx(2 * 2**20 / t.copy.median)
    assert len(t.round_ratios("decode")) == 2 and t.seconds_per_token("fp32") == pytest.approx(t.decode["fp32"].median / 3)
    f = t.weight_read_fraction
    assert 0 < f <= 1 and 1 <= t.bytes_only_speedup <= t.predicted_decode_speedup
    assert t.bytes_only_speedup == pytest.approx(1 / ((1 - f) + f / t.predicted_decode_speedup))   # Amdahl by hand


def test_matvec_kernels_compute_the_product():
    w = torch.randn(96, 128, generator=torch.Generator().manual_seed(0)) * 0.05
    t = time_matvec(w, rounds=2, repeat=2, group_size=64)
    expected = {"fp32", "bf16", "int8"} | ({"int4"} if int4_kernel_available() else set())
    assert set(t.times) == set(t.weight_bytes) == set(t.rel_error) == expected
    assert t.rel_error["fp32"] == 0 and 0 < t.rel_error["bf16"] < t.rel_error["int8"] < 0.05
    assert t.bits_per_weight("fp32") == 32 and t.bits_per_weight("bf16") == 16
    assert t.bytes_ratio("int8") == pytest.approx(4, rel=1e-3) and len(t.round_ratios("int8")) == 2
    if "int4" in t.times:
        assert t.bits_per_weight("int4") == 4 + 32 / 64 and t.rel_error["int8"] < t.rel_error["int4"] < 0.2


@pytest.mark.skipif(not int4_kernel_available(), reason="this torch has no int4 CPU kernel")
@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int4_packing_matches_our_asymmetric_rtn(group_size):
    """aten's int4 kernel on our packing == x @ (llmlab's asymmetric 4-bit RTN weights)^T, up to bf16."""
    g = torch.Generator().manual_seed(group_size)
    w, x = torch.randn(64, 256, generator=g), torch.randn(3, 256, generator=g)
    packed, scales = _int4_pack(w, group_size)
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.bfloat16(), packed, group_size, scales).float()
    w_hat = fake_quantize(w, bits=4, granularity=group_size, symmetric=False)
    ref = x.bfloat16().float() @ w_hat.T
    assert (y - ref).norm() / ref.norm() < 2e-2
    assert (y - x @ w.T).norm() / (x @ w.T).norm() > 2 * (y - ref).norm() / ref.norm()   # it is the 4-bit product


def test_matvec_bad_group_size():
    with pytest.raises(ValueError, match="group_size"):
        time_matvec(torch.randn(8, 96), group_size=64)
    with pytest.raises(ValueError, match="group_size"):
        time_matvec(torch.randn(8, 96), group_size=48)
