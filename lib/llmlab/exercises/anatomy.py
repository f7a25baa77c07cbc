"""Exercises of notebook 09 (LLM anatomy)."""

from __future__ import annotations

from functools import lru_cache

import torch

from .. import anatomy as A
from .base import call_safely, close, dict_of, direction, exercise, is_callable, is_int

# --- 09 anatomy --------------------------------------------------------------------------------

@exercise("09.1", "a prefix-LM attention mask", "a function prefix_mask(n, n_prefix) -> bool tensor (n, n)", is_callable)
def _prefix_mask(prefix_mask):
    for n, n_prefix in [(6, 3), (5, 0), (5, 1), (4, 4), (8, 2), (1, 1)]:
        truth = A.attention_mask("prefix", n, n_prefix=n_prefix)
        got, error = call_safely(prefix_mask, n, n_prefix)
        if error:
            return False, error
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != (n, n):
            return False, f"prefix_mask({n}, {n_prefix}) must be an ({n}, {n}) tensor, got {getattr(got, 'shape', type(got).__name__)}."
        got = got.bool()
        if torch.equal(got, truth):
            continue
        case = f"prefix_mask({n}, {n_prefix})"
        if torch.equal(got, truth.T):
            return False, f"{case} is transposed: row i is the query, column j the key it may see."
        if torch.equal(got, A.attention_mask("causal", n)):
            return False, f"{case} is the causal mask: inside the prefix every position sees the whole prefix."
        if torch.equal(got, A.attention_mask("prefix", n, n_prefix=min(n, n_prefix + 1))) or \
                torch.equal(got, A.attention_mask("prefix", n, n_prefix=max(0, n_prefix - 1))):
            return False, f"{case} is off by one: the prefix is positions 0 .. n_prefix − 1."
        return False, f"{case} differs: query i sees key j if j is in the prefix or j <= i."
    return True, "the same mask as A.attention_mask('prefix', ...): causal outside the prefix, bidirectional inside."


LLAMA2_70B = dict(hidden_size=8192, num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
                  intermediate_size=28672, vocab_size=32000, tie_word_embeddings=False)


@lru_cache(maxsize=1)
def _llama2_70b() -> tuple[int, int, int]:
    """(total, total with tied embeddings, total without grouped-query attention) by llmlab's formula."""
    # transformers is slow to import: only this check needs a config class.
    from transformers import LlamaConfig

    total = A.param_count(LlamaConfig(**LLAMA2_70B))
    tied = A.param_count(LlamaConfig(**{**LLAMA2_70B, "tie_word_embeddings": True}))
    mha = A.param_count(LlamaConfig(**{**LLAMA2_70B, "num_key_value_heads": 64}))
    return total, tied, mha


@exercise("09.2", "LLaMA-2-70B by formula", 'a dict {"total": int, "gqa_saving": int}',
          dict_of(("total", "gqa_saving"), is_int))
def _llama2(answer):
    total, tied, mha = _llama2_70b()
    got_total, got_saving = int(answer["total"]), int(answer["gqa_saving"])
    if got_total != total:
        if got_total == tied:
            return False, "total: LLaMA-2 does not tie its output layer to the embedding: count both matrices."
        if got_total == mha:
            return False, "total: that is the count with 64 key/value heads; LLaMA-2-70B has 8."
        return False, (f"total is {direction(got_total, total)}: per block q, k, v, o (k and v with 8 heads of "
                       "d/64), gate/up/down, two RMSNorm weights; plus embedding, output layer and final norm.")
    if got_saving != mha - total:
        if 2 * got_saving == mha - total:
            return False, "gqa_saving: both the k and the v projection shrink."
        return False, f"gqa_saving is {direction(got_saving, mha - total)}: 2 · layers · d · (H − H_kv) · d_head."
    return True, f"{total / 1e9:.1f}B parameters (the paper's '70B'); grouped-query attention saves {got_saving / 1e9:.1f}B."


_ROUGE_CASES = [("the cat sat on the mat", "the cat lay on the mat"),
                ("The cat, the cat!", "the cat the cat the cat"),
                ("a b c d", "e f g"),
                ("one", "one"),
                ("It rained in Paris on Monday.", "On Monday it rained in Paris, said the report.")]


@exercise("09.3", "ROUGE-2 by hand", "a function rouge2(reference, candidate) -> (precision, recall, f1)", is_callable)
def _rouge2(rouge2):
    for reference, candidate in _ROUGE_CASES:
        truth = A.rouge_n(reference, candidate, n=2)
        got, error = call_safely(rouge2, reference, candidate)
        if error:
            return False, error
        try:
            p, r, f = (float(v) for v in got)
        except (TypeError, ValueError):
            return False, "return three numbers: (precision, recall, f1)."
        case = f"rouge2({reference!r}, {candidate!r})"
        if all(close(a, b, 1e-9) or abs(a - b) < 1e-12 for a, b in zip((p, r, f), (truth.precision, truth.recall, truth.fmeasure))):
            continue
        if close(p, truth.recall, 1e-9) and close(r, truth.precision, 1e-9):
            return False, f"{case}: precision and recall are swapped (precision divides by the candidate's bigrams)."
        if reference.lower() != reference or "," in reference:
            return False, f"{case} differs: lower-case and split at every non-alphanumeric run first (A.rouge_tokens)."
        return False, (f"{case} differs: count each bigram at most as often as it occurs in the other text "
                       "(clipped counts), over the bigrams of each text.")
    return True, "the same scores as A.rouge_n(..., n=2), clipping and punctuation included."
