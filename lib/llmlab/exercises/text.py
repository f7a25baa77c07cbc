"""Exercises of notebooks 01 (perplexity), 02 (decoding) and 10 (tokenization)."""

from __future__ import annotations

import math
import re
from functools import lru_cache

import torch

from ..decoding import banned_ngram_tokens, decode_roofline
from ..perplexity import PerplexityResult, bits_per_byte, forward_tokens, sliding_windows
from ..tokenization import load_corpus, load_parallel, load_samples, train_bpe, train_wordpiece, wordpiece_greedy
from .base import call_safely, close, direction, exercise, is_callable, is_int, smollm2_skeleton

# --- 01 perplexity -----------------------------------------------------------------------------

SEQ_LEN, MAX_LENGTH, STRIDE = 1000, 256, 64


@exercise("01.1", "tokens read by a sliding window", "an int (a number of tokens)", is_int)
def _forward_tokens(answer):
    truth = forward_tokens(SEQ_LEN, max_length=MAX_LENGTH, stride=STRIDE)
    answer = int(answer)
    if answer == truth:
        return True, f"the model reads {truth / (SEQ_LEN - 1):.2f}× the scored tokens to score each one once."
    if answer in (SEQ_LEN, SEQ_LEN - 1):
        return False, "that is about how many tokens are *scored*; every window after the first also re-reads context."
    if answer == forward_tokens(SEQ_LEN + 1, max_length=MAX_LENGTH, stride=STRIDE):
        return False, ("off by a little at the end: the text's last token is only a target (nothing follows it to "
                       "predict), so no window feeds it as input.")
    n_windows = len(sliding_windows(SEQ_LEN, max_length=MAX_LENGTH, stride=STRIDE))
    if answer == n_windows * MAX_LENGTH:
        return False, ("close: the number of windows is right, but not every window is full length: the last one stops "
                       "where the text stops (look at `sliding_windows` for where it ends).")
    if answer == math.ceil(SEQ_LEN / STRIDE) * MAX_LENGTH:
        return False, ("too many windows: they stop as soon as one reaches the text's last token (every later window "
                       "would only re-read tokens already scored), and not every window is full length.")
    return False, (f"{direction(answer, truth)}: add up the lengths of the windows "
                   "(each starts `stride` after the previous one, is at most `max_length` long, and none runs past the text).")


_BPB_CASES = [(12.0, 500, 2400), (3.5, 1, 4), (150.0, 1234, 5000), (1.0, 10, 10), (7.25, 999, 999)]


@exercise("01.2", "bits per byte from a perplexity", "a function bpb(ppl, n_tokens, n_bytes) -> float", is_callable)
def _bits_per_byte(bpb):
    for ppl, n_tokens, n_bytes in _BPB_CASES:
        truth = bits_per_byte(PerplexityResult(ppl=ppl, mean_nll=math.log(ppl), n_tokens=n_tokens), n_bytes)
        got, error = call_safely(bpb, ppl, n_tokens, n_bytes)
        if error:
            return False, error
        try:
            got = float(got)
        except (TypeError, ValueError):
            return False, f"bpb({ppl}, {n_tokens}, {n_bytes}) returned {type(got).__name__}, not a number."
        if close(got, truth, 1e-6):
            continue
        case = f"bpb({ppl}, {n_tokens}, {n_bytes}) is {direction(got, truth)}: "
        if truth and close(got * math.log(2), truth, 1e-6):
            return False, case + "you used log base 2 twice, or divided by ln 2 once too often."
        if truth and close(got, truth * math.log(2), 1e-6):
            return False, case + "that is nats per byte: a bit is ln 2 nats."
        if close(got, math.log2(ppl), 1e-6):
            return False, case + "that is bits per *token*: the total information is spread over the bytes."
        if ppl != 1 and n_tokens != n_bytes and close(got, n_bytes * math.log2(ppl) / n_tokens, 1e-6):
            return False, case + "tokens and bytes are swapped."
        return False, case + "the total information is n_tokens × (nats per token); convert nats to bits, divide by bytes."
    return True, ("bits per byte divides by the bytes, which do not depend on how the text was cut into tokens; the model's "
                  "total loss still does (solution 01.4).")


# --- 02 decoding -------------------------------------------------------------------------------

_NGRAM_CASES = [([1, 2, 3, 1, 2], 3), ([5, 5, 5, 5], 2), ([1, 2, 3], 4), ([4, 7, 4, 8, 4], 2), ([3, 1, 3, 1, 3], 1),
                 ([9, 8, 7, 9, 8, 6, 9, 8], 3), ([1, 2, 1, 2, 1, 2], 4), ([2], 2)]


def _ngram_cases():
    """Hand-made cases plus random sequences over a small vocabulary (many repeats)."""
    g = torch.Generator().manual_seed(0)
    randoms = [(torch.randint(0, 4, (int(length),), generator=g).tolist(), n)
               for length, n in [(12, 2), (20, 3), (30, 4), (9, 3), (25, 1)]]
    return _NGRAM_CASES + randoms


@exercise("02.1", "the no-repeat n-gram ban", "a function banned(token_ids, n) -> the banned token ids", is_callable)
def _ngram_ban(banned):
    for ids, n in _ngram_cases():
        truth = set(banned_ngram_tokens(ids, n))
        got, error = call_safely(banned, list(ids), n)
        if error:
            return False, error
        try:
            got = {int(t) for t in got}
        except (TypeError, ValueError):
            return False, f"banned({ids}, {n}) returned {type(got).__name__}: return a list (or set) of token ids."
        if got == truth:
            continue
        case = f"banned({ids}, n={n}) = {sorted(got)}"
        if n > 1 and got == set(banned_ngram_tokens(ids, n + 1)):
            return False, f"{case}: match the last n − 1 tokens (the n-gram's first part), not the last n."
        if n > 1 and got == set(banned_ngram_tokens(ids, n - 1)):
            return False, f"{case}: an n-gram has n tokens: match the last n − 1, then ban the one that followed them."
        if got < truth:
            return False, f"{case} misses some: look at every earlier position, the n-gram that ends the sequence included."
        return False, f"{case} bans too much: a token is banned only if it followed the same n − 1 tokens before."
    return True, "the same bans as llmlab's no_repeat_ngram_size (and so as generate's)."


@exercise("02.2", "where the KV cache outweighs the weights", "an int (a context length in tokens)", is_int)
def _kv_equals_weights(answer):
    model = smollm2_skeleton()
    at = [decode_roofline(model, n, bandwidth=1.0, dtype="bf16") for n in (0, 1)]
    weight_bytes, kv_per_token = at[0].weight_bytes, at[1].kv_bytes
    truth = math.ceil(weight_bytes / kv_per_token)  # first length with kv_bytes >= weight_bytes
    answer = int(answer)
    if abs(answer - truth) <= max(1, truth // 200):
        return True, f"about {truth:,} tokens: past that, each decoded token reads more cache than weights."
    ratio = answer / truth
    for factor, hint in [(2, "the cache holds both K and V, for every layer"),
                         (0.5, "count K and V once each, per layer and per KV head"),
                         (1 / 3, "SmolLM2 uses grouped-query attention: the cache stores the *KV* heads, not the query heads")]:
        if abs(ratio - factor) < 0.02 * factor:
            return False, f"off by a factor {factor:g}: {hint}."
    return False, (f"{direction(answer, truth)}: bytes of the cache per token = 2 × layers × KV heads × head_dim × 2 bytes "
                   "(bf16); compare with the bytes of every weight, read once per token.")


def _min_p_reference(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Hugging Face's min-p filter (``generate(min_p=...)``) on one row of logits."""
    # transformers is slow to import: only this check needs it.
    from transformers.generation.logits_process import MinPLogitsWarper

    return MinPLogitsWarper(min_p)(None, logits[None].clone())[0]


def _min_p_cases() -> list[tuple[torch.Tensor, float]]:
    g = torch.Generator().manual_seed(0)
    cases = [(torch.randn(50, generator=g) * scale, p) for scale, p in ((1.0, 0.1), (3.0, 0.05), (0.3, 0.5), (6.0, 0.2))]
    return cases + [(torch.tensor([2.0, 2.0, 1.0, -1.0, -30.0]), 0.3), (torch.tensor([4.0, -4.0, -4.0]), 0.9)]


@exercise("02.4", "the min-p filter", "a function min_p_filter(logits, min_p) -> logits with -inf where removed",
          is_callable)
def _min_p(min_p_filter):
    for logits, p in _min_p_cases():
        truth = _min_p_reference(logits, p)
        got, error = call_safely(min_p_filter, logits.clone(), p)
        if error:
            return False, error
        if not isinstance(got, torch.Tensor) or got.shape != logits.shape:
            return False, f"return a tensor of the logits' shape {tuple(logits.shape)}, with -inf where a token is removed."
        kept, want = torch.isfinite(got), torch.isfinite(truth)
        case = f"with min_p = {p} on {logits.numel()} logits you keep {int(kept.sum())} tokens"
        if torch.equal(kept, want):
            if not torch.allclose(got[kept], logits[kept]):
                return False, "the right tokens survive, but leave their logits as they were (sampling renormalises later)."
            continue
        probs = logits.softmax(-1)
        if torch.equal(kept, probs >= p):
            return False, f"{case}: the threshold is min_p times the *top* token's probability, not min_p itself."
        if torch.equal(kept, logits >= p * logits.max()):
            return False, f"{case}: compare probabilities (after softmax), not logits."
        if kept.sum() > want.sum():
            return False, f"{case}: too many; a token survives only if its probability reaches min_p × the largest one."
        return False, f"{case}: too few; a token whose probability reaches min_p × the largest one must survive."
    return True, ("the same tokens survive as under Hugging Face's MinPLogitsWarper: a threshold that scales with the "
                  "model's confidence, like top-p adapting to the distribution's shape.")


# --- 10 tokenization ---------------------------------------------------------------------------

FRENCH_MERGES = 500


@lru_cache(maxsize=1)
def _french_costs() -> tuple[int, int]:
    corpus, french = load_corpus(), load_parallel()["French"]
    with_french = train_bpe(corpus + [french] * 20, 256 + FRENCH_MERGES)
    without = train_bpe(corpus, 256 + FRENCH_MERGES)
    return len(with_french.encode(french)), len(without.encode(french))


@exercise("10.1", "what French costs after training on it", "an int (a number of tokens)", is_int)
def _french_tokens(answer):
    truth, before = _french_costs()
    answer = int(answer)
    if answer == truth:
        return True, f"{before / truth:.1f}× fewer tokens than before: the merges follow the training text."
    if answer == before:
        return False, "that is the cost under the tokenizer trained *without* the French copies: retrain first."
    if answer == len(load_parallel()["French"].encode("utf-8")):
        return False, "that is the number of bytes: encode the notice and count the tokens."
    return False, (f"{direction(answer, truth)}: train with train_bpe(corpus + [french] * 20, 256 + {FRENCH_MERGES}), "
                   "then count the ids of the French notice.")


@lru_cache(maxsize=1)
def _wordpiece_case() -> tuple[frozenset, tuple[str, ...]]:
    vocab = frozenset(train_wordpiece(load_corpus(), 1000).get_vocab())
    words = re.findall(r"[A-Za-z]+", load_samples()["English prose"])
    extra = ("tokenization", "unbelievably", "xqzj", "a", "antidisestablishmentarianism", "Q")
    return vocab, tuple(dict.fromkeys([*words, *extra]))


@exercise("10.2", "WordPiece's greedy longest match", "a function cut(word, vocab) -> list of str", is_callable)
def _longest_match(cut):
    vocab, words = _wordpiece_case()
    for word in words:
        truth = wordpiece_greedy(word, vocab)
        got, error = call_safely(cut, word, vocab)
        if error:
            return False, error
        if isinstance(got, tuple):
            got = list(got)
        if got == truth:
            continue
        if not isinstance(got, list) or not all(isinstance(p, str) for p in got):
            return False, f"cut({word!r}, vocab) returned {type(got).__name__}: return a list of str."
        if truth == ["[UNK]"]:
            return False, f"{word!r} cannot be cut with this vocabulary: WordPiece then gives ['[UNK]'] for the whole word."
        if "".join(p.removeprefix("##") for p in got) != word:
            return False, f"cut({word!r}) = {got}: the pieces, without '##', must spell the word."
        if any(p.startswith("##") for p in got[:1]) or not all(p.startswith("##") for p in got[1:]):
            return False, f"cut({word!r}) = {got}: only pieces after the first carry the '##' prefix."
        if len(got) > len(truth):
            return False, f"cut({word!r}) = {got}: at each step take the *longest* entry that matches."
        return False, f"cut({word!r}) = {got} differs from WordPiece's cut: match from the left, longest first."
    return True, f"the same cut as WordPiece on all {len(words)} words."
