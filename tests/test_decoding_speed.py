"""llmlab.decoding.speed: time_decoders on the tiny Llama (what it returns, not how fast: speed
claims live in `python -m llmlab.bench`)."""

import dataclasses

import pytest
import torch

from conftest import random_prompt
from llmlab.decoding import DECODERS, DecoderTiming, StaticDecoder, greedy, time_decoders
from llmlab.timing import Timing


def test_every_decoder_returns_the_same_tokens(tiny_llama):
    ids = random_prompt(0, length=6)
    timing = time_decoders(tiny_llama, ids, 10, names=DECODERS, repeat=2)
    assert isinstance(timing, DecoderTiming)
    assert list(timing.tokens_per_s) == list(timing.seconds) == list(timing.sequences) == list(DECODERS)
    assert timing.identical
    # Interleaved rounds: every decoder ran `repeat` times, and `seconds` is the median of those runs.
    assert all(len(timing.timings[n].times) == 2 and timing.seconds[n] == timing.timings[n].median for n in DECODERS)
    expected = greedy(tiny_llama, ids, 10, eos_token_id=tiny_llama.generation_config.eos_token_id)
    for name in DECODERS:
        assert torch.equal(timing.sequences[name], expected)
        assert timing.sequences[name].device == ids.device
        n_new = expected.shape[1] - ids.shape[1]
        assert timing.seconds[name] > 0 and timing.tokens_per_s[name] > 0
        assert timing.tokens_per_s[name] == pytest.approx(n_new / timing.seconds[name])
    assert not hasattr(timing, "n_new")
    with pytest.raises(dataclasses.FrozenInstanceError):
        timing.seconds = {}


def test_identical_is_false_when_tokens_differ():
    a, b = torch.tensor([[5, 6, 7]]), torch.tensor([[5, 6, 8]])
    t = Timing((1.0,))
    assert not DecoderTiming({"x": 1.0, "y": 1.0}, {"x": 1.0, "y": 1.0}, {"x": a, "y": b}, {"x": t, "y": t}).identical
    assert DecoderTiming({"x": 1.0}, {"x": 1.0}, {"x": a}, {"x": t}).identical


def test_given_static_decoder_and_short_runs(tiny_llama):
    ids = random_prompt(1, length=4)
    decoder = StaticDecoder(tiny_llama, max_len=5)
    # One new token: the warm-up run must not ask the decoder for more than fits in max_len.
    timing = time_decoders(tiny_llama, ids, 1, names=["static", "greedy"], static_decoder=decoder)
    assert timing.identical and timing.sequences["static"].shape == (1, 5)
    timing = time_decoders(tiny_llama, ids, 1, names=("no_cache",), warmup=False)
    assert timing.sequences["no_cache"].shape == (1, 5)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(names="greedy"), TypeError, "names"),
    (dict(names=None), TypeError, "names"),
    (dict(names=("greedy", "fast")), ValueError, "names"),
    (dict(names=()), ValueError, "names"),
    (dict(names=("greedy", "greedy")), ValueError, "names"),
    (dict(repeat=0), ValueError, "repeat"),
    (dict(repeat=1.0), TypeError, "repeat"),
    (dict(static_decoder="static"), TypeError, "static_decoder"),
])
def test_bad_arguments(tiny_llama, kwargs, error, match):
    with pytest.raises(error, match=match):
        time_decoders(tiny_llama, random_prompt(0), 2, **kwargs)


def test_bad_sizes_and_foreign_static_decoder(tiny_llama, make_tiny_llama):
    ids = random_prompt(0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        time_decoders(tiny_llama, ids, 0, names=("greedy",))
    with pytest.raises(TypeError, match="max_new_tokens"):
        time_decoders(tiny_llama, ids, 2.5, names=("greedy",))
    with pytest.raises(ValueError, match="input_ids"):
        time_decoders(tiny_llama, ids[0], 2, names=("greedy",))
    other = StaticDecoder(make_tiny_llama(), max_len=16)
    with pytest.raises(ValueError, match="different model"):
        time_decoders(tiny_llama, ids, 2, names=("static",), static_decoder=other)
