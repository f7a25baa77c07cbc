"""The decoders: greedy, sampling (temperature, top-k, top-p) and beam search, with a KV cache.

Every decoder runs the prompt once, then feeds the model one new token per step and reuses the
keys and values of earlier tokens (the KV cache); :func:`greedy_without_cache` is the slow
reference that re-runs the whole prefix. Each is token-identical to Hugging Face
``model.generate`` with the matching settings (``tests/test_decoding.py`` holds them to it; the
details that matter are in ``shared/notes/matching-hf-generate.md``).

Shapes: ``input_ids`` is ``(1, prompt_len)``; every decoder returns ``(1, prompt_len + n_new)``
token ids on ``input_ids``' device, with ``n_new <= max_new_tokens`` (shorter when the sequence
ends with ``eos_token_id``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_float, check_int, check_tensor
from .._torch import model_device
from ..modelinfo import accepts_logits_to_keep, cache_keyword, output_cache, vocab_size
from .limits import MAX_NUM_BEAMS, _check_request
from .repetition import _repetition_controls

__all__ = [
    "greedy",
    "greedy_without_cache",
    "beam_search",
    "sample",
    "top_p_filter",
    "warp_logits",
    "sequence_logprob",
    "next_token_logits",
]

# A "parked" score: low enough never to win, finite so that sums stay ordered (as in HF).
_PARKED = -1.0e9


def _check_logits(logits) -> torch.Tensor:
    check_tensor("logits", logits, floating=True, min_numel=1)
    if logits.dim() < 1:
        raise ValueError("logits must have a vocabulary axis, shape (..., vocab), got a 0-d tensor")
    return logits


# ---------------------------------------------------------------------------------------------
# One forward pass with a KV cache (works with transformers 4.x `past_key_values` and 5.x `cache`)
# ---------------------------------------------------------------------------------------------


def _step(model, input_ids: torch.Tensor, cache):
    """Run ``input_ids`` (batch, n) after ``cache``; return last-position logits (batch, vocab) float32 and the cache."""
    kwargs = {cache_keyword(model): cache, "use_cache": True}
    if accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = 1  # as generate does: the LM head only for the last position
    out = model(input_ids=input_ids, **kwargs)
    return out.logits[:, -1, :].to(dtype=torch.float32), output_cache(out)


@torch.no_grad()
def next_token_logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits for the token after ``input_ids`` (1, prompt_len): float32, shape (vocab,), on ``input_ids``' device."""
    _check_request(model, input_ids)
    logits, _ = _step(model, input_ids.to(model_device(model)), None)
    return logits[0].to(input_ids.device)


# ---------------------------------------------------------------------------------------------
# Filters (logits warpers)
# ---------------------------------------------------------------------------------------------


def top_p_filter(logits: torch.Tensor, p: float, *, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability sums to >= ``p``.

    Sort the probabilities ascending and accumulate; a token is removed when the cumulative mass up
    to and including it is <= 1 - p (the unlikely tail), the ``min_tokens_to_keep`` most likely are
    always kept. ``logits``: (..., vocab); removed entries become -inf. Same as transformers'
    ``TopPLogitsWarper(p)``; ``p = 1`` returns the logits unchanged. NaN logits give NaN out.
    """
    return _top_p(_check_logits(logits), check_float("p", p, low=0.0, high=1.0, low_open=True),
                  check_int("min_tokens_to_keep", min_tokens_to_keep, low=1))


def warp_logits(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """The sampling distribution's logits: ``top_p_filter(top-k of logits / temperature, top_p)``.

    The order (temperature, then top-k, then top-p) is the one ``generate`` uses; softmax of the
    result is the distribution :func:`sample` draws from. A temperature so small that
    ``logits / temperature`` overflows gives the T -> 0 limit (greedy), never NaN.
    """
    return _warp(_check_logits(logits), _check_temperature(temperature), _check_top_k(top_k), _check_top_p(top_p))


def _check_temperature(temperature) -> float:
    return check_float("temperature", temperature, low=0.0, low_open=True)


def _check_top_k(top_k) -> int:
    return check_int("top_k", top_k, low=0)  # 0 keeps every token


def _check_top_p(top_p) -> float:
    return check_float("top_p", top_p, low=0.0, high=1.0, low_open=True)


# The filters as the decoders call them on every token: no checks, no host sync.

def _top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k == 0:
        return logits
    kth_largest = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def _top_p(logits: torch.Tensor, p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    if p == 1.0:
        return logits
    sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - p)
    remove_sorted[..., -min_tokens_to_keep:] = False
    remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def _warp(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    scores = logits
    if temperature != 1.0:
        scores = logits / temperature
    if temperature < 1.0:
        # A tiny temperature overflows logits / T to +-inf (softmax then gives NaN). Rows where that
        # happens use (logits - max) / T instead: the same softmax, 0 at the maximum and finite or
        # -inf elsewhere, which is the T -> 0 limit (greedy). Chosen on the device: no host sync.
        overflow = (torch.isfinite(scores) != torch.isfinite(logits)).any(dim=-1, keepdim=True)
        shifted = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
        scores = torch.where(overflow, shifted, scores)
    return _top_p(_top_k(scores, top_k), top_p)


# ---------------------------------------------------------------------------------------------
# Decoders
# ---------------------------------------------------------------------------------------------


def _check_controls(repetition_penalty, no_repeat_ngram_size) -> tuple[float, int]:
    """The repetition controls (penalty, n-gram size), checked once for every step's ``_repetition_controls``."""
    return (check_float("repetition_penalty", repetition_penalty, low=0.0, low_open=True),
            check_int("no_repeat_ngram_size", no_repeat_ngram_size, low=0))


def _decode_loop(model, input_ids, max_new_tokens, eos_token_id, choose, controls) -> torch.Tensor:
    """Shared loop: prefill once, then one cached forward per new token; ``choose(scores) -> (1, 1)``.

    ``controls`` (repetition penalty, n-gram ban) rewrite each step's logits from the whole
    sequence so far, prompt included, before ``choose`` sees them (as ``generate`` does).
    """
    sequence = input_ids.to(model_device(model), torch.long)
    if max_new_tokens == 0:
        return input_ids.clone()
    logits, cache = _step(model, sequence, None)
    for t in range(max_new_tokens):
        next_token = choose(_repetition_controls(logits, sequence, *controls))  # (1, 1)
        sequence = torch.cat([sequence, next_token], dim=1)
        if eos_token_id is not None and int(next_token) == eos_token_id:  # host sync: stop at EOS, as generate does
            break
        if t + 1 < max_new_tokens:
            logits, cache = _step(model, next_token, cache)
    return sequence.to(input_ids.device)


@torch.no_grad()
def greedy(model, input_ids: torch.Tensor, max_new_tokens: int, *, eos_token_id: int | None = None,
           repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0) -> torch.Tensor:
    """Greedy decoding: w_t = argmax_w P(w | w_<t), with a KV cache.

    ``input_ids`` (1, prompt_len) -> (1, prompt_len + n_new). ``repetition_penalty`` (> 0; 1 is
    off) and ``no_repeat_ngram_size`` (0 is off) rewrite the logits first
    (:mod:`llmlab.decoding.repetition`). Token-identical to
    ``model.generate(input_ids, do_sample=False, max_new_tokens=..., eos_token_id=...,
    repetition_penalty=..., no_repeat_ngram_size=...)``.
    """
    max_new_tokens, eos_token_id = _check_request(model, input_ids, max_new_tokens, eos_token_id)
    controls = _check_controls(repetition_penalty, no_repeat_ngram_size)
    return _decode_loop(model, input_ids, max_new_tokens, eos_token_id,
                        lambda scores: scores.argmax(dim=-1, keepdim=True), controls)


@torch.no_grad()
def greedy_without_cache(model, input_ids: torch.Tensor, max_new_tokens: int, *, eos_token_id: int | None = None) -> torch.Tensor:
    """Greedy decoding that re-runs the whole sequence every step (no KV cache): the slow reference.

    Step t costs a forward over prompt_len + t tokens, so n new tokens cost O(n * (prompt_len + n))
    token-forwards instead of O(prompt_len + n) with a cache. Like :func:`greedy` (and ``generate``,
    with or without its cache) each forward runs the LM head at the last position only
    (``logits_to_keep=1`` where the model takes it), so the two differ only in the re-run prefix.
    Same tokens as :func:`greedy`.
    """
    max_new_tokens, eos_token_id = _check_request(model, input_ids, max_new_tokens, eos_token_id)
    sequence = input_ids.to(model_device(model))
    kwargs = {"use_cache": False}
    if accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = 1  # the LM head for the last position only, as greedy's forwards do
    for _ in range(max_new_tokens):
        logits = model(input_ids=sequence, **kwargs).logits[:, -1, :].float()
        next_token = logits.argmax(dim=-1, keepdim=True)
        sequence = torch.cat([sequence, next_token], dim=1)
        if eos_token_id is not None and int(next_token) == eos_token_id:  # host sync: stop at EOS
            break
    return sequence.to(input_ids.device)


@torch.no_grad()
def sample(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    eos_token_id: int | None = None,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
) -> torch.Tensor:
    """Ancestral sampling: w_t ~ softmax(warp(logits_t)), warp = temperature, then top-k, then top-p.

    ``input_ids`` (1, prompt_len) -> (1, prompt_len + n_new). One ``torch.multinomial`` draw per step
    over the full vocabulary row, so with ``generator=None`` (the global RNG) and the same
    ``torch.manual_seed`` it is token-identical to ``model.generate(do_sample=True, temperature=...,
    top_k=..., top_p=..., repetition_penalty=..., no_repeat_ngram_size=...)``. ``top_k=0`` and
    ``top_p=1`` disable those filters; the repetition controls (off by default) act before them.
    """
    max_new_tokens, eos_token_id = _check_request(model, input_ids, max_new_tokens, eos_token_id)
    temperature, top_k, top_p = _check_temperature(temperature), _check_top_k(top_k), _check_top_p(top_p)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    controls = _check_controls(repetition_penalty, no_repeat_ngram_size)

    def choose(scores):
        probs = F.softmax(_warp(scores, temperature, top_k, top_p), dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=generator)

    return _decode_loop(model, input_ids, max_new_tokens, eos_token_id, choose, controls)


@torch.no_grad()
def beam_search(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    num_beams: int,
    length_penalty: float = 1.0,
    eos_token_id: int | None = None,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
) -> torch.Tensor:
    """Beam search: keep the ``num_beams`` partial sequences with the highest summed log-probability.

    Each step scores every (beam, token) continuation by s(beam) + log P(token | beam) and keeps the
    best 2 * num_beams (so enough survive when some end in EOS); ``1 <= num_beams <= min(vocab,
    MAX_NUM_BEAMS)``, since memory grows linearly with the beams. A continuation ending in EOS (or
    reaching ``max_new_tokens``) that ranks in the top ``num_beams`` becomes a finished hypothesis
    with score ``sum log p / n_generated ** length_penalty``; the rest continue. The search stops
    when ``num_beams`` hypotheses are finished (early stopping) or when the best running beam can no
    longer beat the worst finished one. Returns the best hypothesis, (1, prompt_len + n_new).
    The repetition controls (off by default) rewrite each beam's log-probabilities before they are
    added, from that beam's own sequence, as ``generate`` does. Token-identical to
    ``model.generate(num_beams=..., do_sample=False, length_penalty=..., early_stopping=True,
    repetition_penalty=..., no_repeat_ngram_size=...)``.
    """
    max_new_tokens, eos_token_id = _check_request(model, input_ids, max_new_tokens, eos_token_id)
    vocab = vocab_size(model)
    num_beams = check_int("num_beams", num_beams, low=1, high=min(MAX_NUM_BEAMS, vocab or MAX_NUM_BEAMS))
    length_penalty = check_float("length_penalty", length_penalty)
    controls = _check_controls(repetition_penalty, no_repeat_ngram_size)
    device = model_device(model)
    if max_new_tokens == 0:
        return input_ids.clone()
    prompt = input_ids.to(device, torch.long)

    B, prompt_len = num_beams, prompt.shape[1]
    n_keep = 2 * B  # candidates kept per step
    is_top_b = torch.arange(n_keep, device=device) < B

    # Running beams: sequences, summed log-probs. Only beam 0 is live at first (the others are copies).
    running = prompt.expand(B, prompt_len).clone()
    running_scores = torch.full((B,), _PARKED, device=device)
    running_scores[0] = 0.0
    # Finished hypotheses: fixed-size tensors, padded; `finished_len` = number of generated tokens.
    total_len = prompt_len + max_new_tokens
    finished = torch.zeros((B, total_len), dtype=torch.long, device=device)
    finished_scores = torch.full((B,), _PARKED, device=device)
    finished_len = torch.zeros((B,), dtype=torch.long, device=device)
    is_finished = torch.zeros((B,), dtype=torch.bool, device=device)
    can_improve = torch.ones((), dtype=torch.bool, device=device)  # can a running beam still beat the worst finished?

    # The prompt is run once per beam, as a batch of identical rows (as generate does).
    logits, cache = _step(model, running, None)
    for t in range(max_new_tokens):
        vocab = logits.shape[-1]
        # Summed log-probabilities of every (beam, token) continuation, flattened to (B * vocab,).
        log_probs = _repetition_controls(F.log_softmax(logits, dim=-1), running, *controls)
        total = (log_probs + running_scores[:, None]).reshape(-1)
        cand_scores, cand_idx = torch.topk(total, k=n_keep)
        cand_beam, cand_token = cand_idx // vocab, cand_idx % vocab
        candidates = torch.cat([running[cand_beam], cand_token[:, None]], dim=1)  # (2B, cur_len + 1)
        ends = torch.full_like(cand_token, t + 1 >= max_new_tokens, dtype=torch.bool)
        if eos_token_id is not None:
            ends |= cand_token == eos_token_id

        # Continue with the best B candidates that did not end (ended ones are parked far below).
        parked = cand_scores + ends.to(torch.float32) * _PARKED
        keep = torch.topk(parked, k=B).indices
        running, running_scores, beam_source = candidates[keep], parked[keep], cand_beam[keep]

        # Finished hypotheses: ended candidates among the top B, length-normalised, merged with the old.
        just_finished = ends & is_top_b
        hyp_scores = cand_scores / ((t + 1) ** length_penalty)
        hyp_scores += is_finished.all() * _PARKED  # early stopping: the set is already full
        hyp_scores += (~can_improve) * _PARKED
        hyp_scores += (~just_finished) * _PARKED
        padded = torch.zeros((n_keep, total_len), dtype=torch.long, device=device)
        padded[:, : candidates.shape[1]] = candidates
        merged_scores = torch.cat([finished_scores, hyp_scores])
        best = torch.topk(merged_scores, k=B).indices
        finished = torch.cat([finished, padded])[best]
        finished_scores = merged_scores[best]
        finished_len = torch.cat([finished_len, torch.full((n_keep,), t + 1, device=device)])[best]
        is_finished = torch.cat([is_finished, just_finished])[best]

        # Stop when B hypotheses are finished, when no running beam can beat the worst one, or at the limit.
        best_possible = running_scores[0] / ((t + 1) ** length_penalty)
        worst_finished = torch.where(is_finished, finished_scores.min(), torch.tensor(_PARKED, device=device))
        can_improve = can_improve & (best_possible > worst_finished).any()
        if bool(~can_improve | is_finished.all() | ends.all()):  # host sync: the search decides to stop
            break
        cache.reorder_cache(beam_source)
        logits, cache = _step(model, running[:, -1:], cache)

    best_len = prompt_len + int(finished_len[0])
    return finished[:1, :best_len].to(input_ids.device)


@torch.no_grad()
def sequence_logprob(model, input_ids: torch.Tensor, prompt_len: int) -> float:
    """Total log-probability of the continuation: sum_{t >= prompt_len} log P(x_t | x_<t).

    ``input_ids``: (1, total_len), the prompt followed by the continuation; ``1 <= prompt_len <
    total_len``. One forward pass; the sum is taken in float64.
    """
    _check_request(model, input_ids)
    total_len = input_ids.shape[1]
    if total_len < 2:
        raise ValueError(f"input_ids must hold a prompt and at least one continuation token, got shape {tuple(input_ids.shape)}")
    prompt_len = check_int("prompt_len", prompt_len, low=1, high=total_len - 1)
    ids = input_ids.to(model_device(model))
    logits = model(input_ids=ids, use_cache=False).logits[0, prompt_len - 1 : -1].float()  # predicts x_prompt_len..
    log_probs = F.log_softmax(logits, dim=-1)
    targets = ids[0, prompt_len:]
    return float(log_probs.gather(1, targets[:, None]).double().sum())
