"""llmlab.attention.kv_cache: the KV-cache formula against the cache a real model builds."""

from __future__ import annotations

import pytest
import torch

from llmlab.attention import AttentionGeometry, attention_geometry, kv_cache_bytes, measured_kv_cache_bytes
from llmlab.models import LLAMA_PRESETS, random_llama


def test_geometry_of_llama_and_gpt2_configs():
    from transformers import GPT2Config, LlamaConfig

    assert attention_geometry(LlamaConfig(**LLAMA_PRESETS["smollm2-135m"])) == AttentionGeometry(30, 9, 3, 64)
    assert attention_geometry(LlamaConfig(**LLAMA_PRESETS["smollm2-135m"])).group_size == 3
    assert attention_geometry(GPT2Config(n_layer=12, n_head=12, n_embd=768)) == AttentionGeometry(12, 12, 12, 64)
    assert attention_geometry(LlamaConfig(hidden_size=64, num_attention_heads=8, num_hidden_layers=2,
                                          num_key_value_heads=None)).n_kv_heads == 8  # no GQA field: MHA


def test_formula():
    from transformers import LlamaConfig

    config = LlamaConfig(**LLAMA_PRESETS["smollm2-135m"])
    assert kv_cache_bytes(config, 1) == 2 * 30 * 3 * 64 * 4
    assert kv_cache_bytes(config, 8192, batch=4, dtype="bf16") == 2 * 30 * 3 * 64 * 8192 * 4 * 2
    assert kv_cache_bytes(config, 100, n_kv_heads=9) == 3 * kv_cache_bytes(config, 100)   # MHA: 3x GQA
    assert kv_cache_bytes(config, 100, n_kv_heads=1) * 3 == kv_cache_bytes(config, 100)   # MQA: 1/3
    assert kv_cache_bytes(config, 0) == 0


@pytest.mark.parametrize("batch, seq_len, dtype", [(1, 5, torch.float32), (3, 17, torch.float64), (2, 128, torch.float32)])
def test_measured_cache_of_a_random_llama_equals_the_formula(batch, seq_len, dtype):
    model = random_llama("tiny", dtype=dtype)
    ids = torch.randint(3, 97, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    assert measured_kv_cache_bytes(model, ids) == kv_cache_bytes(model.config, seq_len, batch=batch, dtype=dtype)
    assert kv_cache_bytes(model, seq_len, batch=batch, dtype=dtype) == kv_cache_bytes(model.config, seq_len, batch=batch,
                                                                                        dtype=dtype)


@pytest.mark.slow
def test_the_default_model_builds_the_cache_the_formula_says():
    from llmlab.models import load_model

    model, _ = load_model(device="cpu")
    ids = torch.randint(3, 1000, (2, 37), generator=torch.Generator().manual_seed(0))
    measured = measured_kv_cache_bytes(model, ids)
    assert measured == kv_cache_bytes(model.config, 37, batch=2) == 2 * 30 * 3 * 64 * 37 * 2 * 4
