"""llmlab.quantization.model: schemes swapped into a model in place, restored afterwards, and scored."""

from __future__ import annotations

import math

import pytest
import torch

from llmlab.models import random_llama
from llmlab.perplexity import token_nlls
from llmlab.quantization import (SCHEMES, apply_scheme, block_linears, dequantize_gguf, fake_quantize, paired_bootstrap,
                                 quantize_gguf, requantized, scheme_bits_per_weight, scheme_nlls)


@pytest.fixture()
def tiny():
    return random_llama("tiny", dtype=torch.float32)


def test_block_linears_leave_out_the_head(tiny):
    layers = block_linears(tiny)
    assert len(layers) == 2 * 7 and tiny.lm_head not in layers.values()


def test_requantized_swaps_and_restores(tiny):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    ptrs = {n: m.weight.data_ptr() for n, m in block_linears(tiny).items()}
    with requantized(tiny, "int4 per channel") as bpw:
        for name, layer in block_linears(tiny).items():
            assert torch.equal(layer.weight, fake_quantize(before[name + ".weight"], bits=4))
        assert bpw == pytest.approx((7168 * (4 + 16 / 32) + 2048 * (4 + 16 / 64)) / 9216)  # down_proj has 64 inputs
    after = tiny.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {n: m.weight.data_ptr() for n, m in block_linears(tiny).items()} == ptrs  # the same storage, no copy


def test_requantized_restores_after_an_exception(tiny):
    before = tiny.model.layers[0].mlp.up_proj.weight.clone()
    with pytest.raises(RuntimeError):
        with requantized(tiny, "Q4_0"):
            raise RuntimeError("boom")
    assert torch.equal(tiny.model.layers[0].mlp.up_proj.weight, before)


def test_gguf_scheme_is_the_round_trip():
    w = torch.randn(8, 64)
    assert torch.equal(apply_scheme(w, "Q5_0"), dequantize_gguf(quantize_gguf(w, "Q5_0"), "Q5_0"))
    assert torch.equal(apply_scheme(w, "int3 g32"), fake_quantize(w, bits=3, granularity=32, symmetric=False))


def test_bits_per_weight_of_every_scheme(tiny):
    expected = {"Q8_0": 8.5, "Q5_0": 5.5, "Q4_1": 5.0, "Q4_0": 4.5, "int3 g32": 4.0, "int2 g32": 3.0}
    for name, bpw in expected.items():
        assert scheme_bits_per_weight(tiny, name) == pytest.approx(bpw)
    assert list(SCHEMES)[:5] == ["Q8_0", "int8 per channel", "Q5_0", "Q4_1", "Q4_0"]


def test_scheme_nlls_scores_the_same_tokens(tiny):
    ids = torch.randint(3, 97, (40,), generator=torch.Generator().manual_seed(0))
    results = scheme_nlls(tiny, ids, ["Q8_0", "int2 g32"])
    assert [r.name for r in results] == ["as loaded", "Q8_0", "int2 g32"]
    ref = token_nlls(tiny, ids, max_length=39, stride=39)
    assert torch.equal(results[0].nll, ref) and all(r.nll.shape == (39,) for r in results)
    assert results[0].ppl == pytest.approx(math.exp(ref.double().mean().item()))
    assert abs(results[1].mean_nll - results[0].mean_nll) < abs(results[2].mean_nll - results[0].mean_nll)
    assert torch.equal(token_nlls(tiny, ids, max_length=39, stride=39), ref)  # the model was restored


def test_paired_bootstrap():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0] * 50)
    mean, lo, hi = paired_bootstrap(a + 0.5, a)
    assert (mean, lo, hi) == pytest.approx((0.5, 0.5, 0.5))
    b = a + torch.randn(200, generator=torch.Generator().manual_seed(0))
    mean, lo, hi = paired_bootstrap(b, a, seed=1)
    assert lo < mean < hi and hi - lo < 0.4
    assert paired_bootstrap(b, a, seed=1) == (mean, lo, hi)  # seeded
