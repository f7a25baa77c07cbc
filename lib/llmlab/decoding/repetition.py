"""Repetition in generated text: how often a decoder says the same thing again.

Greedy and beam search maximise local probability, and once a phrase has appeared the model
finds it likely again, so they fall into loops; sampling breaks out.
:func:`repeated_ngram_fraction` measures that on token ids.
"""

from __future__ import annotations

import numbers

import torch

from .._checks import check_int, check_tensor

__all__ = ["repeated_ngram_fraction"]


def _token_list(token_ids) -> list[int]:
    """``token_ids`` (a 1-D integer tensor, a (1, T) tensor or a sequence of ints) as a list of ints."""
    if isinstance(token_ids, torch.Tensor):
        check_tensor("token_ids", token_ids, integer=True, dim=(1, 2))
        if token_ids.dim() == 2 and token_ids.shape[0] != 1:
            raise ValueError(f"token_ids must be one sequence, shape (T,) or (1, T), got {tuple(token_ids.shape)}")
        return token_ids.flatten().tolist()
    if isinstance(token_ids, (str, bytes)) or not hasattr(token_ids, "__iter__"):
        raise TypeError(f"token_ids must be a 1-D tensor or a sequence of ints, got {type(token_ids).__name__}")
    ids = list(token_ids)
    for t in ids:
        if isinstance(t, bool) or not isinstance(t, numbers.Integral):
            raise TypeError(f"token_ids must hold ints (token ids), got {t!r} ({type(t).__name__})")
    return [int(t) for t in ids]


def repeated_ngram_fraction(token_ids, n: int = 4) -> float:
    """Fraction of the n-grams of ``token_ids`` that already occurred earlier in it.

    ``token_ids``: one sequence, a (T,) or (1, T) integer tensor or a list of ints. Of its
    T - n + 1 n-grams (windows of ``n`` consecutive tokens), count those equal to an earlier
    window and divide by T - n + 1; 0.0 when the sequence is shorter than ``n``. A loop of
    period p repeated many times tends to 1; text without repeated phrases gives 0.
    """
    ids = _token_list(token_ids)
    n = check_int("n", n, low=1)
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    if not grams:
        return 0.0
    seen, repeats = set(), 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)
