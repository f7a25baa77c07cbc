"""llmlab.quantization.int8_quality: taking the dynamic int8 model apart (its weights, some of its linears, token 0)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llmlab.models import random_llama
from llmlab.perplexity import token_nlls
from llmlab.quantization import first_token_apart_nlls, float_linears, int8_dynamic_copy, int8_weights_in_float

_DYNAMIC = torch.ao.nn.quantized.dynamic.Linear
IDS = torch.randint(3, 97, (12,), generator=torch.Generator().manual_seed(0))


def logits(m, ids=IDS):
    with torch.no_grad():
        return m(input_ids=ids[None]).logits


def test_weights_in_float_is_the_int8_weights_decoded_with_float_activations():
    model = random_llama("tiny")
    q = int8_dynamic_copy(model)
    before = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    head_tied = model.lm_head.weight is model.model.embed_tokens.weight
    with int8_weights_in_float(model, q) as m:
        assert m is model
        for name, layer in q.named_modules():
            if isinstance(layer, _DYNAMIC):
                swapped = model.get_submodule(name)
                assert type(swapped) is nn.Linear and torch.equal(swapped.weight, layer.weight().dequantize())
        # by hand: one linear with the decoded weight, float input
        name = "model.layers.0.mlp.down_proj"
        x = torch.randn(3, model.get_submodule(name).in_features)
        w = q.get_submodule(name).weight().dequantize()
        assert torch.allclose(model.get_submodule(name)(x), x @ w.T, atol=1e-6)
        inside = logits(model)
    after = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert after.keys() == before.keys() and all(after[n] is before[n] for n in before)   # originals back
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == head_tied
    # weight-only int8 is closer to float32 than W8A8 (the activations stay float)
    ref = logits(model)
    assert (inside - ref).abs().max() < (logits(q) - ref).abs().max()


def test_float_linears_swaps_only_the_named_roles_and_restores_them():
    model = random_llama("tiny")
    q = int8_dynamic_copy(model)
    with float_linears(q, model, ["down_proj"]) as m:
        assert m is q
        for name, layer in model.named_modules():
            if name.endswith("down_proj"):
                assert q.get_submodule(name) is layer
            elif name.endswith("up_proj"):
                assert isinstance(q.get_submodule(name), _DYNAMIC)
    assert all(isinstance(q.get_submodule(n), _DYNAMIC) for n, _ in model.named_modules() if n.endswith("down_proj"))
    roles = sorted({n.rpartition(".")[2] for n, m in q.named_modules() if isinstance(m, _DYNAMIC)})
    with float_linears(q, model, roles):                       # every linear back: the float32 model exactly
        assert torch.equal(logits(q), logits(model))


def test_first_token_apart_matches_one_pass_in_float64():
    model = random_llama("tiny", dtype=torch.float64)
    one_pass = token_nlls(model, IDS, max_length=IDS.numel() - 1, stride=IDS.numel() - 1)
    apart = first_token_apart_nlls(model, IDS[None])
    assert apart.shape == one_pass.shape == (IDS.numel() - 1,)
    assert torch.allclose(apart.double(), one_pass.double(), atol=1e-9)


def test_first_token_apart_changes_per_tensor_int8():
    """Under per-tensor activation scales token 0 shares a scale with the rest in one pass, not when apart."""
    model = random_llama("tiny")
    q = int8_dynamic_copy(model)
    one_pass = token_nlls(q, IDS, max_length=IDS.numel() - 1, stride=IDS.numel() - 1)
    apart = first_token_apart_nlls(q, IDS)
    assert not torch.equal(apart, one_pass) and torch.isfinite(apart).all()
    assert torch.equal(apart[0], first_token_apart_nlls(q, IDS[:3])[0])   # token 1 only ever sees token 0


@pytest.mark.parametrize("call, error, match", [
    (lambda m, q: int8_weights_in_float(m, m).__enter__(), ValueError, "int8_model must hold dynamic int8"),
    (lambda m, q: float_linears(q, m, ["nope"]).__enter__(), ValueError, "roles must name"),
    (lambda m, q: float_linears(q, m, [3]).__enter__(), TypeError, "roles must be strings"),
    (lambda m, q: float_linears(q, random_llama("tiny", seed=1).model, ["down_proj"]).__enter__(), ValueError, "it lacks"),
    (lambda m, q: first_token_apart_nlls(m, IDS[:2]), ValueError, "input_ids"),
])
def test_bad_inputs(call, error, match):
    model = random_llama("tiny")
    with pytest.raises(error, match=match):
        call(model, int8_dynamic_copy(model))
