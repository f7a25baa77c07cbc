"""Repetition in generated text: how often a decoder says the same thing again, and two fixes.

Greedy and beam search maximise local probability, and once a phrase has appeared the model
finds it likely again, so they fall into loops; sampling breaks out.
:func:`repeated_ngram_fraction` measures that on token ids.

The two standard fixes change the scores of the next token before the decoder chooses it (the
decoders take them as ``repetition_penalty=`` and ``no_repeat_ngram_size=``):

* :func:`repetition_penalty_filter` (CTRL, Keskar et al. 2019): every token that already occurs
  in the sequence (prompt included) gets its score divided by ``penalty`` if positive and
  multiplied by it if negative, so ``penalty > 1`` lowers every nonzero score of a seen token:
  relative to every unpenalised token it becomes less likely (its probability itself can rise when
  a likelier token is penalised too);
* the n-gram ban: a token that would complete an n-gram already present in the sequence is
  banned (score -inf); :func:`banned_ngram_tokens` lists them for one sequence.

Both are identical to transformers' ``RepetitionPenaltyLogitsProcessor`` and
``NoRepeatNGramLogitsProcessor``; the decoders chain them in the order ``generate`` does
(penalty first). Shapes: ``scores`` is ``(batch, vocab)`` (or ``(vocab,)``),
``token_ids`` the sequences so far, ``(batch, seq)`` (or ``(seq,)``).
"""

from __future__ import annotations

import torch

from .._checks import check_float, check_int, check_tensor

__all__ = [
    "repeated_ngram_fraction",
    "repetition_penalty_filter",
    "banned_ngram_tokens",
]


def _token_list(token_ids, n) -> tuple[list[int], int]:
    """What both n-gram counters take: ``token_ids`` (a 1-D integer tensor, a (1, T) tensor or a sequence
    of ints) as a list of ints, and an n-gram size ``n`` >= 1."""
    n = check_int("n", n, low=1)
    if isinstance(token_ids, torch.Tensor):
        check_tensor("token_ids", token_ids, integer=True, dim=(1, 2))
        if token_ids.dim() == 2 and token_ids.shape[0] != 1:
            raise ValueError(f"token_ids must be one sequence, shape (T,) or (1, T), got {tuple(token_ids.shape)}")
        return token_ids.flatten().tolist(), n
    if isinstance(token_ids, (str, bytes)) or not hasattr(token_ids, "__iter__"):
        raise TypeError(f"token_ids must be a 1-D tensor or a sequence of ints, got {type(token_ids).__name__}")
    return [check_int("token_ids", t) for t in token_ids], n


def repeated_ngram_fraction(token_ids, n: int = 4) -> float:
    """Fraction of the n-grams of ``token_ids`` that already occurred earlier in it.

    ``token_ids``: one sequence, a (T,) or (1, T) integer tensor or a list of ints. Of its
    T - n + 1 n-grams (windows of ``n`` consecutive tokens), count those equal to an earlier
    window and divide by T - n + 1; 0.0 when the sequence is shorter than ``n``. A loop of
    period p repeated many times tends to 1; text without repeated phrases gives 0.
    """
    ids, n = _token_list(token_ids, n)
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    if not grams:
        return 0.0
    seen, repeats = set(), 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)


def _check_scores_and_ids(scores, token_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """``scores`` (batch, vocab) float and ``token_ids`` (batch, seq) integer, as 2-D tensors."""
    check_tensor("scores", scores, floating=True, dim=(1, 2), min_numel=1)
    check_tensor("token_ids", token_ids, integer=True, dim=(1, 2))
    if scores.dim() != token_ids.dim():
        raise ValueError(f"scores and token_ids must both be 1-D or 2-D, got {tuple(scores.shape)}, {tuple(token_ids.shape)}")
    scores2, ids2 = (scores[None], token_ids[None]) if scores.dim() == 1 else (scores, token_ids)
    if scores2.shape[0] != ids2.shape[0]:
        raise ValueError(f"scores and token_ids must hold the same number of sequences, got {scores2.shape[0]}, {ids2.shape[0]}")
    if ids2.numel() and int(ids2.min()) < 0:
        raise ValueError(f"token_ids must be token ids >= 0, got {int(ids2.min())}")
    return scores2, ids2.long()


def repetition_penalty_filter(scores: torch.Tensor, token_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """Penalise every token already in ``token_ids``: score / penalty if > 0, score * penalty if < 0.

    ``penalty > 1`` lowers every nonzero score of a seen token, so it becomes less likely *relative
    to the unseen tokens*; its probability can still rise when a likelier seen token loses more (scores 10
    and 1 seen, 0 unseen, penalty 2: the second's probability goes from 1.2e-4 to 0.011).
    Applied once per distinct token however often it occurred; ``penalty = 1`` changes nothing,
    ``penalty < 1`` rewards repeats instead. Ids past the vocabulary of ``scores`` are ignored
    (they cannot be generated). Same as transformers' ``RepetitionPenaltyLogitsProcessor(penalty)``.
    Returns a new tensor of the shape of ``scores``.
    """
    penalty = check_float("penalty", penalty, low=0.0, low_open=True)
    scores2, ids = _check_scores_and_ids(scores, token_ids)
    return _penalise_repeats(scores2, ids, penalty).reshape(scores.shape)


# The filters as the decoders call them on every step: ``scores`` (batch, vocab), ``ids`` (batch,
# seq) long; no checks, no host sync.

def _penalise_repeats(scores2: torch.Tensor, ids: torch.Tensor, penalty: float) -> torch.Tensor:
    vocab = scores2.shape[-1]
    # One spare column absorbs out-of-vocabulary ids, then is cut off.
    seen = torch.zeros((scores2.shape[0], vocab + 1), dtype=torch.bool, device=scores2.device)
    seen.scatter_(1, ids.to(scores2.device).clamp(max=vocab), True)
    penalised = torch.where(scores2 < 0, scores2 * penalty, scores2 / penalty)
    return torch.where(seen[:, :vocab], penalised, scores2)


def _ban_repeated_ngrams(scores2: torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    vocab, seq = scores2.shape[-1], ids.shape[-1]
    if seq < n:
        return scores2.clone()
    ids = ids.to(scores2.device)
    windows = ids.unfold(1, n, 1)                          # (batch, seq - n + 1, n): every n-gram so far
    prefix = ids[:, seq - (n - 1):]                        # (batch, n - 1): what the next token would extend
    starts_like_prefix = (windows[..., :-1] == prefix[:, None, :]).all(dim=-1)
    # A matching n-gram bans its last token; the others point at a spare column that is cut off.
    targets = torch.where(starts_like_prefix, windows[..., -1].clamp(max=vocab), vocab)
    banned = torch.zeros((scores2.shape[0], vocab + 1), dtype=torch.bool, device=scores2.device)
    banned.scatter_(1, targets, True)
    return scores2.masked_fill(banned[:, :vocab], float("-inf"))


def banned_ngram_tokens(token_ids, n: int) -> list[int]:
    """The tokens ``no_repeat_ngram_size=n`` bans after one sequence, sorted (for reading).

    ``token_ids``: one sequence, as for :func:`repeated_ngram_fraction`. Written as the plain
    loop: every earlier n-gram that starts with the last n-1 tokens bans its last token.
    """
    ids, n = _token_list(token_ids, n)
    if len(ids) < n:
        return []
    prefix = ids[len(ids) - (n - 1):] if n > 1 else []
    return sorted({ids[i + n - 1] for i in range(len(ids) - n + 1) if ids[i : i + n - 1] == prefix})


def _repetition_controls(scores: torch.Tensor, token_ids: torch.Tensor, repetition_penalty: float,
                         no_repeat_ngram_size: int) -> torch.Tensor:
    """Both controls in ``generate``'s order (the penalty, then the n-gram ban) for the decoders' steps: (batch, vocab) scores, (batch, seq)
    long ids, settings already checked; ``scores`` itself when both controls are off."""
    if repetition_penalty != 1.0:
        scores = _penalise_repeats(scores, token_ids, repetition_penalty)
    if no_repeat_ngram_size > 0:
        scores = _ban_repeated_ngrams(scores, token_ids, no_repeat_ngram_size)
    return scores
