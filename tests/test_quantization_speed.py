"""llmlab.quantization.speed: the dynamic-int8 copy, the bytes it reads, and the timing record (no speed asserted)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llmlab.decoding import decode_roofline, greedy
from llmlab.models import random_llama
from llmlab.quantization import int8_dynamic_copy, int8_weight_bytes, time_int8


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
    t = time_int8(model, prompt, n_new=3, prefill_len=12, rounds=2)
    assert set(t.decode) == set(t.prefill) == {"fp32", "int8"} and len(t.decode["fp32"].times) == 2
    assert t.decode_speedup > 0 and t.prefill_speedup > 0 and t.max_logit_diff >= 0
    assert t.predicted_decode_speedup == pytest.approx(t.weight_bytes[0] / t.weight_bytes[1])
    assert t.same_tokens == torch.equal(greedy(model, prompt, 3), greedy(int8_dynamic_copy(model), prompt, 3))
