"""llmlab.modelinfo: what llmlab reads off a model, checked on Llama, GPT-2 and llmlab's own small models."""

import inspect

import pytest
import torch
from torch import nn

from llmlab.anatomy import TinyTransformer
from llmlab.modelinfo import (
    accepts_logits_to_keep,
    cache_keyword,
    check_fits_model,
    check_token_ids,
    context_size,
    output_cache,
    vocab_size,
)


def test_vocab_and_context_of_hugging_face_models(tiny_llama, tiny_gpt2):
    assert vocab_size(tiny_llama) == 97 and context_size(tiny_llama) == 128  # max_position_embeddings
    assert vocab_size(tiny_gpt2) == 97 and context_size(tiny_gpt2) == 64  # n_positions


def test_vocab_size_counts_the_embedding_rows_not_the_config(make_tiny_llama):
    """A resized embedding (e.g. padded to a multiple of 64) accepts the ids of every row."""
    model = make_tiny_llama()
    model.resize_token_embeddings(128)
    model.config.vocab_size = 97  # a stale config, as after some conversions
    assert vocab_size(model) == 128


def test_vocab_size_of_modules_without_a_config():
    torch.manual_seed(0)
    assert vocab_size(TinyTransformer(20, d_model=8, n_layers=1, n_heads=2)) == 20
    assert vocab_size(nn.Sequential(nn.Embedding(50, 4), nn.Linear(4, 50))) == 50
    assert vocab_size(nn.Linear(3, 3)) is None and context_size(nn.Linear(3, 3)) is None


def test_forward_keywords_follow_the_signature(tiny_llama):
    params = inspect.signature(type(tiny_llama).forward).parameters
    assert cache_keyword(tiny_llama) == ("cache" if "cache" in params else "past_key_values")
    assert accepts_logits_to_keep(tiny_llama) is ("logits_to_keep" in params)
    assert cache_keyword(nn.Linear(2, 2)) == "past_key_values" and not accepts_logits_to_keep(nn.Linear(2, 2))


def test_output_cache_is_what_the_next_forward_takes(tiny_llama):
    ids = torch.tensor([[1, 5, 7, 9]])
    with torch.no_grad():
        out = tiny_llama(input_ids=ids[:, :3], use_cache=True)
        cache = output_cache(out)
        assert cache is not None
        step = tiny_llama(input_ids=ids[:, 3:], use_cache=True, **{cache_keyword(tiny_llama): cache}).logits
        full = tiny_llama(input_ids=ids).logits
    torch.testing.assert_close(step[:, -1], full[:, -1], rtol=1e-5, atol=1e-5)
    assert output_cache(object()) is None


def test_check_token_ids_names_the_argument_and_the_range(tiny_llama):
    ok = torch.tensor([[0, 96]])
    assert check_token_ids(tiny_llama, ok) is ok
    with pytest.raises(ValueError, match=r"input_ids must be token ids in \[0, 96\].*\[0, 97\]"):
        check_token_ids(tiny_llama, torch.tensor([[0, 97]]))
    with pytest.raises(ValueError, match=r"^targets must be token ids in \[0, 96\]"):
        check_token_ids(tiny_llama, torch.tensor([-1, 3]), name="targets")
    with pytest.raises(TypeError, match="input_ids must hold integers"):
        check_token_ids(tiny_llama, torch.zeros(1, 2))
    check_token_ids(tiny_llama, torch.zeros(1, 0, dtype=torch.long))  # nothing to look up: fine
    check_token_ids(nn.Linear(2, 2), torch.tensor([10**6]))  # no vocabulary to hold it to
    with pytest.raises(ValueError, match="vocab_size - 1"):
        check_token_ids(nn.Linear(2, 2), torch.tensor([-1]))  # but never a negative id


def test_check_fits_model_at_the_boundaries(tiny_llama):
    prompt = torch.tensor([[1, 5, 7, 9]])
    check_fits_model(tiny_llama, prompt, max_new_tokens=124, eos_token_id=96)  # 4 + 124 = 128 positions
    with pytest.raises(ValueError, match=r"max_new_tokens must be <= 124"):
        check_fits_model(tiny_llama, prompt, max_new_tokens=125)
    with pytest.raises(ValueError, match=r"input_ids has 129 tokens, longer than the model's context of 128"):
        check_fits_model(tiny_llama, torch.ones(1, 129, dtype=torch.long))
    with pytest.raises(ValueError, match=r"eos_token_id must be a token id in \[0, 96\]"):
        check_fits_model(tiny_llama, prompt, eos_token_id=97)
    with pytest.raises(ValueError, match="input_ids must be token ids"):
        check_fits_model(tiny_llama, torch.tensor([[1, 97]]))


def test_decoding_no_longer_imports_perplexity():
    import ast
    from pathlib import Path

    import llmlab

    for path in (Path(llmlab.__file__).parent / "decoding").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(m and m.endswith("perplexity") for m in imported), path.name
