"""llmlab.decoding against Hugging Face `generate` and its logits warpers.

Tiny random Llama / GPT-2 models (built from a config, no download) and the default
SmolLM2-135M-Instruct. HF always gets eos_token_id and pad_token_id explicitly, so the model's
generation config cannot change the comparison. "No EOS" is compared with HF given the model's
EOS id on outputs that do not contain it (then stopping at EOS and not stopping are the same).
"""

import copy

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from conftest import eos_hit_by_greedy, hf_generate, random_prompt, requires_cuda
from llmlab.decoding import (
    banned_ngram_tokens,
    beam_search,
    greedy,
    greedy_without_cache,
    next_token_logits,
    sample,
    sequence_logprob,
    top_p_filter,
    warp_logits,
)
from llmlab.modelinfo import accepts_logits_to_keep

PAD = 0


@pytest.fixture(params=["tiny_llama", "tiny_gpt2"])
def tiny_model(request):
    return request.getfixturevalue(request.param)


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 7, 50, 200])
def test_top_k_of_warp_logits_matches_hf_warper(k):
    logits = torch.randn(4, 97, generator=torch.Generator().manual_seed(k))
    logits[0, :10] = 3.0  # ties at the boundary
    expected = TopKLogitsWarper(k)(None, logits.clone())
    torch.testing.assert_close(warp_logits(logits, top_k=k), expected, rtol=0, atol=0)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9, 0.999])
def test_top_p_filter_matches_hf_warper(p):
    for scale in (0.3, 1.0, 5.0):  # flat to peaked
        logits = scale * torch.randn(4, 97, generator=torch.Generator().manual_seed(int(100 * p)))
        expected = TopPLogitsWarper(p)(None, logits.clone())
        got = top_p_filter(logits, p)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        assert (got.isfinite().sum(-1) >= 1).all()


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    kept = top_p_filter(probs.log()[None], 0.75).isfinite()[0]
    assert kept.tolist() == [True, True, False, False]
    kept = top_p_filter(probs.log()[None], 0.85).isfinite()[0]
    assert kept.tolist() == [True, True, True, False]


def test_filters_identity_settings():
    logits = torch.randn(2, 97)
    assert torch.equal(warp_logits(logits, top_k=0), logits)
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    assert torch.equal(warp_logits(logits), logits)


def test_warp_logits_order_is_temperature_topk_topp():
    logits = torch.randn(3, 97, generator=torch.Generator().manual_seed(1))
    expected = TopPLogitsWarper(0.8)(None, TopKLogitsWarper(20)(None, logits / 0.7))
    torch.testing.assert_close(warp_logits(logits, temperature=0.7, top_k=20, top_p=0.8), expected, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# Decoders vs generate on tiny models
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_matches_generate(tiny_model, seed):
    ids = random_prompt(seed)
    out = greedy(tiny_model, ids, 15)
    reference = hf_generate(tiny_model, ids, 15, 2, do_sample=False)
    if not (out[0, 5:] == 2).any():
        assert torch.equal(out, reference)
    eos = eos_hit_by_greedy(tiny_model, ids)
    out_eos = greedy(tiny_model, ids, 15, eos_token_id=eos)
    assert out_eos.shape[1] < 5 + 15 and out_eos[0, -1] == eos
    assert torch.equal(out_eos, hf_generate(tiny_model, ids, 15, eos, do_sample=False))


def test_greedy_without_cache_gives_the_same_tokens(tiny_llama):
    ids = random_prompt(3)
    assert torch.equal(greedy_without_cache(tiny_llama, ids, 12), greedy(tiny_llama, ids, 12))
    eos = eos_hit_by_greedy(tiny_llama, ids)
    assert torch.equal(greedy_without_cache(tiny_llama, ids, 12, eos_token_id=eos), greedy(tiny_llama, ids, 12, eos_token_id=eos))


def test_greedy_without_cache_runs_the_lm_head_once_per_forward(tiny_llama):
    """A fair reference: like greedy (and generate), every forward runs the LM head at the last position only."""
    assert accepts_logits_to_keep(tiny_llama)  # else the check below would pass for the wrong reason
    head_rows = []  # positions the LM head runs on, per forward
    hook = tiny_llama.get_output_embeddings().register_forward_hook(lambda mod, args, out: head_rows.append(args[0].shape[1]))
    try:
        ids = random_prompt(5)
        no_cache = greedy_without_cache(tiny_llama, ids, 4)
        assert head_rows == [1] * 4  # 4 forwards over 5, 6, 7 and 8 tokens, one head row each
        head_rows.clear()
        assert torch.equal(greedy(tiny_llama, ids, 4), no_cache)
        assert head_rows == [1] * 4  # greedy: the prefill and 3 cached steps, the same head work
    finally:
        hook.remove()


@pytest.mark.parametrize(
    "num_beams,length_penalty,use_eos",
    [(1, 1.0, False), (2, 1.0, True), (3, 0.0, True), (4, 2.0, True), (3, -0.5, False), (5, 1.0, True)],
)
def test_beam_search_matches_generate(tiny_model, num_beams, length_penalty, use_eos):
    for seed in (0, 1):
        ids = random_prompt(seed)
        eos = eos_hit_by_greedy(tiny_model, ids, at=2) if use_eos else 2
        reference = hf_generate(tiny_model, ids, 10, eos, do_sample=False, num_beams=num_beams,
                        length_penalty=length_penalty, early_stopping=True)
        out = beam_search(tiny_model, ids, 10, num_beams=num_beams, length_penalty=length_penalty,
                          eos_token_id=eos)
        assert torch.equal(out, reference), (seed, out.tolist(), reference.tolist())


def test_beam_search_with_one_beam_is_greedy(tiny_llama):
    ids = random_prompt(4)
    assert torch.equal(beam_search(tiny_llama, ids, 10, num_beams=1), greedy(tiny_llama, ids, 10))


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 10, 1.0), (1.5, 0, 0.8), (0.9, 5, 0.9)])
def test_sample_matches_generate_under_the_same_seed(tiny_model, temperature, top_k, top_p):
    for seed in (0, 1):
        ids = random_prompt(seed)
        torch.manual_seed(100 + seed)
        reference = hf_generate(tiny_model, ids, 12, 2, do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p)
        torch.manual_seed(100 + seed)
        out = sample(tiny_model, ids, 12, temperature=temperature, top_k=top_k, top_p=top_p, eos_token_id=2)
        assert torch.equal(out, reference)


def test_sample_with_private_generator_is_reproducible_and_stops_at_eos(tiny_llama):
    ids = random_prompt(5)
    a = sample(tiny_llama, ids, 12, generator=torch.Generator().manual_seed(7))
    b = sample(tiny_llama, ids, 12, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    eos = int(a[0, 5 + 2])
    c = sample(tiny_llama, ids, 12, generator=torch.Generator().manual_seed(7), eos_token_id=eos)
    first = int((a[0, 5:] == eos).nonzero()[0]) + 1
    assert torch.equal(c, a[:, : 5 + first])


def test_sample_with_tiny_temperature_is_greedy(tiny_llama):
    ids = random_prompt(6)
    assert torch.equal(sample(tiny_llama, ids, 10, temperature=1e-4), greedy(tiny_llama, ids, 10))


CONTROLS = [(1.0, 0), (3.0, 0), (0.7, 0), (1.0, 1), (1.0, 2), (1.0, 3), (1.5, 2)]


@pytest.mark.parametrize("repetition_penalty,no_repeat_ngram_size", CONTROLS)
def test_repetition_controls_match_generate(tiny_model, repetition_penalty, no_repeat_ngram_size):
    """greedy, beam search and sampling with repetition_penalty / no_repeat_ngram_size vs generate."""
    controls = dict(repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
    changed = 0
    for seed in (0, 1, 2):
        ids = random_prompt(seed, length=6)
        out = greedy(tiny_model, ids, 15, eos_token_id=2, **controls)
        assert torch.equal(out, hf_generate(tiny_model, ids, 15, 2, do_sample=False, **controls))
        changed += not torch.equal(out, greedy(tiny_model, ids, 15, eos_token_id=2))
        if no_repeat_ngram_size:  # no generated token completes an n-gram seen before it
            assert all(int(out[0, j]) not in banned_ngram_tokens(out[0, :j], no_repeat_ngram_size)
                       for j in range(ids.shape[1], out.shape[1]))
        for num_beams, length_penalty in ((2, 1.0), (3, 0.5)):
            reference = hf_generate(tiny_model, ids, 10, 2, do_sample=False, num_beams=num_beams,
                                    length_penalty=length_penalty, early_stopping=True, **controls)
            out = beam_search(tiny_model, ids, 10, num_beams=num_beams, length_penalty=length_penalty,
                              eos_token_id=2, **controls)
            assert torch.equal(out, reference), (seed, num_beams, out.tolist(), reference.tolist())
        torch.manual_seed(50 + seed)
        reference = hf_generate(tiny_model, ids, 12, 2, do_sample=True, temperature=0.8, top_k=20, top_p=0.9, **controls)
        torch.manual_seed(50 + seed)
        out = sample(tiny_model, ids, 12, temperature=0.8, top_k=20, top_p=0.9, eos_token_id=2, **controls)
        assert torch.equal(out, reference)
    if controls != {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0}:
        assert changed > 0  # the setting does change what greedy writes: the comparison is not vacuous


def test_repetition_controls_bad_values(tiny_llama):
    ids = random_prompt(0)
    for decode in (lambda **kw: greedy(tiny_llama, ids, 3, **kw), lambda **kw: sample(tiny_llama, ids, 3, **kw),
                   lambda **kw: beam_search(tiny_llama, ids, 3, num_beams=2, **kw)):
        with pytest.raises(ValueError, match="repetition_penalty"):
            decode(repetition_penalty=0.0)
        with pytest.raises(TypeError, match="repetition_penalty"):
            decode(repetition_penalty="high")
        with pytest.raises(ValueError, match="no_repeat_ngram_size"):
            decode(no_repeat_ngram_size=-1)
        with pytest.raises(TypeError, match="no_repeat_ngram_size"):
            decode(no_repeat_ngram_size=2.0)


def test_sequence_logprob_matches_hf_scores(tiny_model):
    ids = random_prompt(7)
    out = tiny_model.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=PAD,
                              output_scores=True, return_dict_in_generate=True)
    # generate's per-step scores are the raw logits under greedy: sum the chosen tokens' log-softmax.
    steps = [torch.log_softmax(s[0].float(), -1)[tok] for s, tok in zip(out.scores, out.sequences[0, 5:])]
    expected = float(torch.stack(steps).double().sum())
    assert sequence_logprob(tiny_model, out.sequences, 5) == pytest.approx(expected, abs=1e-4)
    assert sequence_logprob(tiny_model, out.sequences, 5) < 0


def test_next_token_logits_is_the_last_position(tiny_llama):
    ids = random_prompt(8)
    expected = tiny_llama(ids).logits[0, -1]
    torch.testing.assert_close(next_token_logits(tiny_llama, ids), expected)


def test_max_new_tokens_zero_returns_the_prompt(tiny_llama):
    ids = random_prompt(9)
    for out in (greedy(tiny_llama, ids, 0), sample(tiny_llama, ids, 0), beam_search(tiny_llama, ids, 0, num_beams=2)):
        assert torch.equal(out, ids)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    ({"temperature": 0.0}, "temperature"), ({"temperature": -1.0}, "temperature"),
    ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"top_k": -1}, "top_k"),
])
def test_sample_rejects_bad_settings(tiny_llama, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample(tiny_llama, random_prompt(0), 3, **kwargs)


def test_bad_arguments(tiny_llama):
    ids = random_prompt(0)
    with pytest.raises(ValueError, match="num_beams"):
        beam_search(tiny_llama, ids, 3, num_beams=0)
    with pytest.raises(ValueError, match="top_k must"):
        warp_logits(torch.randn(1, 5), top_k=-2)
    with pytest.raises(ValueError, match="p must"):
        top_p_filter(torch.randn(1, 5), 0.0)
    with pytest.raises(ValueError, match="input_ids"):
        greedy(tiny_llama, torch.randint(3, 97, (2, 4)), 3)
    with pytest.raises(TypeError, match="input_ids"):
        greedy(tiny_llama, ids.float(), 3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy(tiny_llama, ids, -1)
    with pytest.raises(ValueError, match="prompt_len"):
        sequence_logprob(tiny_llama, ids, ids.shape[1])
    with pytest.raises(ValueError, match="prompt_len"):
        sequence_logprob(tiny_llama, ids, 0)
    with pytest.raises(ValueError, match="eos_token_id"):
        greedy(tiny_llama, ids, 3, eos_token_id=-1)
    with pytest.raises(ValueError, match="length_penalty"):
        beam_search(tiny_llama, ids, 3, num_beams=2, length_penalty=float("nan"))
    with pytest.raises(ValueError, match="min_tokens_to_keep"):
        top_p_filter(torch.randn(1, 5), 0.5, min_tokens_to_keep=0)
    with pytest.raises(ValueError, match="input_ids"):
        greedy(tiny_llama, torch.zeros((1, 0), dtype=torch.long), 3)
    with pytest.raises(ValueError, match="input_ids"):
        next_token_logits(tiny_llama, ids[0])  # (prompt_len,) instead of (1, prompt_len)


@pytest.mark.parametrize("call,match", [
    (lambda m, ids: greedy(m, ids, 1.5), "max_new_tokens"),
    (lambda m, ids: greedy(m, ids, True), "max_new_tokens"),
    (lambda m, ids: greedy_without_cache(m, ids, "3"), "max_new_tokens"),
    (lambda m, ids: greedy(m, ids, 3, eos_token_id="2"), "eos_token_id"),
    (lambda m, ids: greedy(m, ids.tolist(), 3), "input_ids"),
    (lambda m, ids: greedy(m, ids.to(torch.uint8), 3), "input_ids"),
    (lambda m, ids: greedy("model", ids, 3), "model"),
    (lambda m, ids: beam_search(m, ids, 3, num_beams=2.0), "num_beams"),
    (lambda m, ids: beam_search(m, ids, 3, num_beams=2, length_penalty="long"), "length_penalty"),
    (lambda m, ids: sample(m, ids, 3, top_k=2.5), "top_k"),
    (lambda m, ids: sample(m, ids, 3, temperature="hot"), "temperature"),
    (lambda m, ids: sample(m, ids, 3, top_p=None), "top_p"),
    (lambda m, ids: sample(m, ids, 3, generator=0), "generator"),
    (lambda m, ids: sequence_logprob(m, ids, 2.0), "prompt_len"),
    (lambda m, ids: next_token_logits(m, ids.float()), "input_ids"),
    (lambda m, ids: warp_logits(torch.arange(5), top_k=2), "logits"),
    (lambda m, ids: warp_logits(torch.randn(5), top_k=True), "top_k"),
    (lambda m, ids: warp_logits([1.0, 2.0]), "logits"),
])
def test_wrong_types_raise_type_error(tiny_llama, call, match):
    with pytest.raises(TypeError, match=match):
        call(tiny_llama, random_prompt(0))


def test_integral_arguments_of_other_types_are_accepted(tiny_llama):
    """NumPy and 0-d tensor integers are ints too: the same result as with Python ints."""
    ids = random_prompt(12)
    expected = greedy(tiny_llama, ids, 6)
    assert torch.equal(greedy(tiny_llama, ids, np.int64(6)), expected)
    assert torch.equal(greedy(tiny_llama, ids, torch.tensor(6)), expected)
    eos = int(expected[0, -3])
    assert torch.equal(greedy(tiny_llama, ids, 6, eos_token_id=np.int32(eos)), greedy(tiny_llama, ids, 6, eos_token_id=eos))


@requires_cuda
def test_cuda_model_outputs_come_back_on_the_input_device(tiny_llama):
    model = copy.deepcopy(tiny_llama).cuda()
    ids = random_prompt(13)  # on the CPU, the model on the GPU
    decoders = [
        lambda x: greedy(model, x, 8), lambda x: greedy_without_cache(model, x, 8),
        lambda x: beam_search(model, x, 8, num_beams=2), lambda x: greedy(model, x, 0),
        lambda x: beam_search(model, x, 0, num_beams=2),
        lambda x: sample(model, x, 4, generator=torch.Generator("cuda").manual_seed(0)),
    ]
    for decode in decoders:
        on_cpu, on_gpu = decode(ids), decode(ids.cuda())
        assert on_cpu.device.type == "cpu" and on_gpu.device.type == "cuda"
        assert torch.equal(on_cpu, on_gpu.cpu())
    assert next_token_logits(model, ids).device.type == "cpu"
    assert next_token_logits(model, ids.cuda()).device.type == "cuda"


# ---------------------------------------------------------------------------------------------
# The default model (SmolLM2-135M-Instruct)
# ---------------------------------------------------------------------------------------------

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, a little robot"]


@pytest.fixture(scope="module")
def default_prompts(default_lm):
    _, tokenizer = default_lm
    return [tokenizer(text, return_tensors="pt").input_ids for text in PROMPTS]


@pytest.mark.slow
def test_default_model_greedy_and_beam(default_lm, default_prompts):
    model, tokenizer = default_lm
    eos = tokenizer.eos_token_id
    for ids in default_prompts[::2]:
        reference = hf_generate(model, ids, 20, eos, do_sample=False)
        assert torch.equal(greedy(model, ids, 20, eos_token_id=eos), reference)
    ids = default_prompts[0]
    reference = hf_generate(model, ids, 12, eos, do_sample=False, num_beams=3, early_stopping=True)
    assert torch.equal(beam_search(model, ids, 12, num_beams=3, eos_token_id=eos), reference)


@pytest.mark.slow
def test_default_model_eos_is_hit(default_lm, default_prompts):
    model, _ = default_lm
    ids = default_prompts[1]
    eos = eos_hit_by_greedy(model, ids, n=20, at=6)
    reference = hf_generate(model, ids, 20, eos, do_sample=False)
    assert reference.shape[1] < ids.shape[1] + 20
    assert torch.equal(greedy(model, ids, 20, eos_token_id=eos), reference)


@pytest.mark.slow
def test_default_model_sampling(default_lm, default_prompts):
    model, tokenizer = default_lm
    eos = tokenizer.eos_token_id
    ids = default_prompts[2]
    for temperature, top_k, top_p in [(0.8, 50, 0.95), (1.2, 0, 0.9)]:
        torch.manual_seed(3)
        reference = hf_generate(model, ids, 12, eos, do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p)
        torch.manual_seed(3)
        out = sample(model, ids, 12, temperature=temperature, top_k=top_k, top_p=top_p, eos_token_id=eos)
        assert torch.equal(out, reference)


@pytest.mark.slow
def test_default_model_repetition_controls(default_lm):
    """SmolLM2 on a prompt that loops under greedy and beam search: both controls, all three decoders.

    Each control on its own and the other combinations are compared with ``generate`` on the tiny
    models (test_repetition_controls_match_generate); here one combined setting keeps CI's time down
    (beam search with a repetition penalty costs ~40 s per call on a loaded 2-core CPU)."""
    model, tokenizer = default_lm
    eos = tokenizer.eos_token_id
    ids = tokenizer("I like cats. I like dogs. I like", return_tensors="pt").input_ids
    for controls in ({"repetition_penalty": 1.2, "no_repeat_ngram_size": 2},):
        reference = hf_generate(model, ids, 16, eos, do_sample=False, **controls)
        assert torch.equal(greedy(model, ids, 16, eos_token_id=eos, **controls), reference)
        reference = hf_generate(model, ids, 8, eos, do_sample=False, num_beams=3, early_stopping=True, **controls)
        assert torch.equal(beam_search(model, ids, 8, num_beams=3, eos_token_id=eos, **controls), reference)
        torch.manual_seed(4)  # top_k given explicitly: generate's default (50) would apply otherwise
        reference = hf_generate(model, ids, 12, eos, do_sample=True, top_k=50, top_p=0.9, **controls)
        torch.manual_seed(4)
        assert torch.equal(sample(model, ids, 12, top_k=50, top_p=0.9, eos_token_id=eos, **controls), reference)


# ---------------------------------------------------------------------------------------------
# Sampling at a temperature that underflows: the T -> 0 limit (greedy), never NaN
# ---------------------------------------------------------------------------------------------


def test_a_tiny_temperature_is_the_greedy_limit_not_nan(tiny_llama):
    logits = torch.tensor([[3.0, 1.0, -2.0, 3.5]])
    for t in (1e-45, 1e-38, 1e-30):
        probs = warp_logits(logits, temperature=t).softmax(-1)
        assert torch.isfinite(probs).all() and torch.equal(probs, torch.tensor([[0.0, 0.0, 0.0, 1.0]]))
    # Ties at the maximum share the mass (the limit of softmax(logits / T)).
    tied = warp_logits(torch.tensor([2.0, 2.0, -1.0]), temperature=1e-40).softmax(-1)
    torch.testing.assert_close(tied, torch.tensor([0.5, 0.5, 0.0]))
    # An ordinary temperature is untouched by the safe path (bit-identical to logits / T).
    assert torch.equal(warp_logits(logits, temperature=0.7), logits / 0.7)
    ids = torch.tensor([[1, 5, 7, 9]])
    assert torch.equal(sample(tiny_llama, ids, 8, temperature=1e-45), greedy(tiny_llama, ids, 8))
