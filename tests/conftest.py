"""Shared test fixtures. Tests run on the CPU unless a test asks for CUDA explicitly."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="session")
def default_lm():
    """The default SmolLM2-135M-Instruct model and tokenizer, float32 on the CPU, loaded once."""
    from llmlab.models import load_model

    model, tokenizer = load_model(device="cpu")
    return model, tokenizer


@pytest.fixture(scope="session")
def tiny_llama():
    """A tiny random Llama (same family as SmolLM2) built from a config: no download, float32, eval."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_gpt2():
    """A tiny random GPT-2 built from a config: no download, float32, eval."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=1, eos_token_id=2)
    return GPT2LMHeadModel(config).eval()
