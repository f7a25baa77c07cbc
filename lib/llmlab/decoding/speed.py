"""Wall-clock comparison of greedy decoders on one prompt (notebook 02 and ``python -m llmlab.bench``).

:func:`time_decoders` runs HF ``generate``, :func:`~llmlab.decoding.greedy`,
:func:`~llmlab.decoding.greedy_without_cache` and :class:`~llmlab.decoding.StaticDecoder` on
the same prompt through :mod:`llmlab.timing` and returns their tokens/s and the tokens they
produced (which must agree). Speed claims belong in the bench, not in tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import check_choice, check_int
from .._torch import model_device
from ..timing import Timing, interleaved
from .limits import _check_request
from .search import greedy, greedy_without_cache
from .static import StaticDecoder

__all__ = ["DECODERS", "DecoderTiming", "time_decoders"]

#: The decoders :func:`time_decoders` knows, by name.
DECODERS = ("generate", "greedy", "no_cache", "static")


@dataclass(frozen=True)
class DecoderTiming:
    """Decoders timed on one prompt, by name: ``tokens_per_s``, median ``seconds`` per run, every
    run's :class:`llmlab.timing.Timing` (``timings``, with its spread) and the ``sequences``
    (1, prompt_len + n_new) each returned, on the prompt's device."""

    tokens_per_s: dict[str, float]
    seconds: dict[str, float]
    sequences: dict[str, torch.Tensor]
    timings: dict[str, Timing]

    @property
    def identical(self) -> bool:
        """Did every decoder return the same tokens?"""
        outs = list(self.sequences.values())
        return all(torch.equal(outs[0], o) for o in outs[1:])


def _check_names(names) -> tuple[str, ...]:
    """``names``: a non-empty sequence of distinct names from :data:`DECODERS`."""
    if isinstance(names, (str, bytes)) or not hasattr(names, "__iter__"):
        raise TypeError(f"names must be a sequence of decoder names from {list(DECODERS)}, "
                        f"e.g. ('greedy',), got {names!r} ({type(names).__name__})")
    names = tuple(names)
    if not names:
        raise ValueError(f"names must hold at least one decoder name from {list(DECODERS)}")
    for name in names:
        check_choice("names", name, DECODERS)
    if len(set(names)) != len(names):
        raise ValueError(f"names must not repeat a decoder, got {names!r}")
    return names


def time_decoders(model, input_ids: torch.Tensor, max_new_tokens: int, *, names=("generate", "greedy", "static"),
                  repeat: int = 1, warmup: bool = True, static_decoder: StaticDecoder | None = None) -> DecoderTiming:
    """Time greedy decoding of ``max_new_tokens`` (stopping at the model's EOS) by each decoder in ``names``.

    ``names`` come from :data:`DECODERS`: HF ``generate``, :func:`~llmlab.decoding.greedy`,
    :func:`~llmlab.decoding.greedy_without_cache` ("no_cache") and
    :class:`~llmlab.decoding.StaticDecoder` ("static", built here unless ``static_decoder`` is
    given). The decoders run interleaved, one run each per round for ``repeat`` rounds
    (:func:`llmlab.timing.interleaved`, CUDA-synchronised), so a change in the machine's load hits
    them alike; each time is the median of its runs. ``warmup`` runs each decoder once on 2
    tokens first (which also captures the CUDA graph of a StaticDecoder). ``input_ids``: (1, prompt_len).
    """
    max_new_tokens, _ = _check_request(model, input_ids, max_new_tokens, min_new_tokens=1)
    names = _check_names(names)
    repeat = check_int("repeat", repeat, low=1)
    if static_decoder is not None:
        if not isinstance(static_decoder, StaticDecoder):
            raise TypeError(f"static_decoder must be a StaticDecoder or None, got {type(static_decoder).__name__}")
        if static_decoder.model is not model:
            raise ValueError("static_decoder was built for a different model than the one timed")

    device = model_device(model)
    ids = input_ids.to(device)
    L = ids.shape[1]
    if "static" in names and static_decoder is None:
        static_decoder = StaticDecoder(model, max_len=L + max_new_tokens)
    eos = getattr(model.generation_config, "eos_token_id", None)
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos  # all decoders stop at the model's EOS
    pad = getattr(model.generation_config, "pad_token_id", None)
    pad = eos if pad is None else pad
    runners = {
        "generate": lambda n: model.generate(ids, max_new_tokens=n, do_sample=False, num_beams=1,
                                             eos_token_id=eos, pad_token_id=pad),
        "greedy": lambda n: greedy(model, ids, n, eos_token_id=eos),
        "no_cache": lambda n: greedy_without_cache(model, ids, n, eos_token_id=eos),
        "static": lambda n: static_decoder.greedy(ids, n, eos_token_id=eos),
    }
    if warmup:
        for name in names:
            runners[name](min(2, max_new_tokens))
    last: dict[str, torch.Tensor] = {}

    def timed(name):
        return lambda: last.__setitem__(name, runners[name](max_new_tokens))

    timings = interleaved({name: timed(name) for name in names}, rounds=repeat, warmup=0, device=device)
    seconds = {name: timings[name].median for name in names}
    sequences = {name: last[name].to(input_ids.device) for name in names}
    tokens_per_s = {name: (last[name].shape[1] - L) / seconds[name] for name in names}
    return DecoderTiming(tokens_per_s, seconds, sequences, timings)
