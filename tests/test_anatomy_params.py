"""llmlab.anatomy.params: parameter counts by formula equal the models transformers builds (on the meta
device, so even LLaMA-65B costs no memory), for random variations of every config knob the formula
reads, and the loaded SmolLM2-135M."""

from __future__ import annotations

import random

import pytest

from llmlab.anatomy import (FAMILIES, LLM_THRESHOLD, PAPER_CONFIGS, built_param_count, paper_config, param_breakdown,
                            param_count)
from llmlab.memory import count_parameters


@pytest.mark.parametrize("name", list(PAPER_CONFIGS))
def test_paper_configs_equal_the_built_models(name):
    config = paper_config(name)
    assert param_count(config) == built_param_count(config)


def test_paper_counts_are_the_published_sizes():
    """The sizes the papers and model cards quote, rounded as they round them."""
    millions = {name: param_count(paper_config(name)) / 1e6 for name in PAPER_CONFIGS}
    assert round(millions["BERT-base"]) == 109 and round(millions["BERT-large"]) == 335
    assert round(millions["GPT-2 small"]) == 124 and round(millions["GPT-2 XL"]) == 1558
    assert round(millions["T5-base"]) == 223 and round(millions["T5-11B"] / 1e3) == 11
    assert round(millions["GPT-3 175B"] / 1e3) == 175
    assert round(millions["LLaMA-7B"] / 1e3, 1) == 6.7 and round(millions["LLaMA-65B"] / 1e3, 1) == 65.3
    assert round(millions["SmolLM2-135M"]) == 135
    small = [n for n in PAPER_CONFIGS if param_count(paper_config(n)) < LLM_THRESHOLD]
    assert "BERT-large" in small and "GPT-2 XL" in small and "LLaMA-7B" in small and "LLaMA-13B" not in small


def _random_configs(seed: int):
    """Small configs with every knob the formulas read set at random (tied or not, biases, GQA, gated)."""
    from transformers import BertConfig, GPT2Config, LlamaConfig, T5Config

    rng = random.Random(seed)
    heads = rng.choice([1, 2, 4])
    d = heads * rng.choice([4, 8])
    yield LlamaConfig(vocab_size=rng.randint(10, 99), hidden_size=d, intermediate_size=rng.randint(5, 40),
                      num_hidden_layers=rng.randint(1, 3), num_attention_heads=heads,
                      num_key_value_heads=rng.choice([h for h in (1, 2, 4) if heads % h == 0]),
                      head_dim=rng.choice([None, 6]), attention_bias=rng.random() < 0.5, mlp_bias=rng.random() < 0.5,
                      tie_word_embeddings=rng.random() < 0.5)
    yield GPT2Config(vocab_size=rng.randint(10, 99), n_positions=rng.randint(8, 64), n_embd=d,
                     n_layer=rng.randint(1, 3), n_head=heads, n_inner=rng.choice([None, 24]),
                     tie_word_embeddings=rng.random() < 0.5)
    yield BertConfig(vocab_size=rng.randint(10, 99), hidden_size=d, num_hidden_layers=rng.randint(1, 3),
                     num_attention_heads=heads, intermediate_size=rng.randint(5, 40),
                     max_position_embeddings=rng.randint(8, 64), type_vocab_size=rng.randint(1, 3))
    yield T5Config(vocab_size=rng.randint(10, 99), d_model=d, d_kv=rng.choice([4, 8]), d_ff=rng.randint(5, 40),
                   num_layers=rng.randint(1, 3), num_decoder_layers=rng.choice([None, 1, 2]), num_heads=heads,
                   relative_attention_num_buckets=rng.choice([8, 32]),
                   feed_forward_proj=rng.choice(["relu", "gated-gelu"]), tie_word_embeddings=rng.random() < 0.5)


@pytest.mark.parametrize("seed", range(12))
def test_random_configs_equal_the_built_models(seed):
    for config in _random_configs(seed):
        assert config.model_type in FAMILIES
        assert param_count(config) == built_param_count(config), config


def test_breakdown_parts_add_up_and_embeddings_shrink_with_scale():
    smol, llama = param_breakdown(paper_config("SmolLM2-135M")), param_breakdown(paper_config("LLaMA-65B"))
    assert smol.total == param_count(paper_config("SmolLM2-135M")) and smol.head == 0  # tied
    assert llama.head == llama.embeddings  # untied: the output layer is a second V×d matrix
    assert smol.embeddings / smol.total > 0.2 and llama.embeddings / llama.total < 0.01
    bert = param_breakdown(paper_config("BERT-base"))
    assert bert.head == 768 * 768 + 768  # the pooler


def test_twelve_l_d_squared_rule_for_gpt2():
    """Blocks hold 12·L·d² weights (4d² attention + 8d² MLP) plus 13·L·d biases and norms."""
    for name in ("GPT-2 small", "GPT-2 XL", "GPT-3 175B"):
        c = paper_config(name)
        assert param_breakdown(c).blocks == 12 * c.n_layer * c.n_embd ** 2 + 13 * c.n_layer * c.n_embd


@pytest.mark.slow
def test_equal_to_the_loaded_default_model(default_lm):
    model, _ = default_lm
    assert param_count(model.config) == count_parameters(model).total == built_param_count(model.config)
    assert param_count(model.config) == param_count(paper_config("SmolLM2-135M"))


def test_bad_arguments():
    from transformers import MistralConfig

    with pytest.raises(TypeError, match="config must be a transformers PretrainedConfig"):
        param_count({"hidden_size": 8})
    with pytest.raises(ValueError, match=r"config.model_type must be one of \['llama', 'gpt2', 'bert', 't5'\]"):
        param_count(MistralConfig())
    with pytest.raises(ValueError, match="name must be one of"):
        paper_config("GPT-5")
    from transformers import GPT2Config
    with pytest.raises(ValueError, match="add_cross_attention"):
        param_count(GPT2Config(add_cross_attention=True))
