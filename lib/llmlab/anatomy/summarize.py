"""Summarisation with a decoder-only chat model, scored with ROUGE-1 written out by hand.

An encoder-decoder (T5, BART) reads the document with a bidirectional encoder and writes the
summary with a causal decoder that cross-attends to it; a decoder-only model (GPT, LLaMA,
SmolLM2) reads the document as the first part of one causal sequence, after an instruction, and
continues it with the summary (:func:`summary_prompt`, :func:`summarize`).

ROUGE-1 (Lin, 2004) compares the words of a candidate summary with a reference summary::

    overlap   = Σ_w min(count_candidate(w), count_reference(w))     (clipped unigram matches)
    precision = overlap / #candidate words,  recall = overlap / #reference words
    F1        = 2 P R / (P + R)

with the tokenisation of Google's ``rouge-score`` package (lower case, every run of characters
other than a-z and 0-9 is a separator, no stemming: ``RougeScorer(["rouge1"], use_stemmer=False)``,
which the tests compare against).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import torch

from .._checks import check_int, check_module, check_str
from .._torch import model_device
from ..decoding import greedy

__all__ = ["rouge_tokens", "RougeScore", "rouge_n", "rouge1", "lead_sentences", "SUMMARY_INSTRUCTION",
           "summary_prompt", "summarize"]

_NON_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """``text`` lower-cased and split at every run of characters outside [a-z0-9]."""
    check_str("text", text, allow_empty=True)
    return [t for t in _NON_ALPHANUMERIC.sub(" ", text.lower()).split() if t]


@dataclass(frozen=True)
class RougeScore:
    """Precision, recall and their harmonic mean (F1), each in [0, 1]."""

    precision: float
    recall: float
    fmeasure: float


def rouge_n(reference: str, candidate: str, n: int = 2) -> RougeScore:
    """ROUGE-n of ``candidate`` against ``reference``: clipped n-gram overlap over the n-grams of
    each (0 for all three numbers when either text has no n-gram)."""
    n = check_int("n", n, low=1)
    grams = []
    for name, text in (("reference", reference), ("candidate", candidate)):
        tokens = rouge_tokens(check_str(name, text, allow_empty=True))
        grams.append(Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)))
    ref, cand = grams
    overlap = sum(min(count, cand[g]) for g, count in ref.items())
    precision = overlap / max(sum(cand.values()), 1)
    recall = overlap / max(sum(ref.values()), 1)
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return RougeScore(precision, recall, f)


def rouge1(reference: str, candidate: str) -> RougeScore:
    """ROUGE-1 (unigram overlap) of ``candidate`` against ``reference``."""
    return rouge_n(reference, candidate, 1)


def lead_sentences(document: str, k: int = 1) -> str:
    """The first ``k`` sentences of ``document`` (split after ``.``, ``!`` or ``?`` followed by a
    space): the "lead" baseline that news summaries are measured against."""
    check_str("document", document)
    k = check_int("k", k, low=1)
    sentences = re.split(r"(?<=[.!?])\s+", document.strip())
    return " ".join(sentences[:k])


SUMMARY_INSTRUCTION = "Summarize the following article in one sentence.\n\n{document}"


def summary_prompt(tokenizer, document: str, *, instruction: str = SUMMARY_INSTRUCTION) -> str:
    """The chat-formatted prompt that asks the model for a summary: one user turn holding
    ``instruction`` with the document filled in, then the assistant's turn opened
    (``apply_chat_template(..., add_generation_prompt=True)``)."""
    check_str("document", document)
    check_str("instruction", instruction)
    if "{document}" not in instruction:
        raise ValueError("instruction must contain the placeholder {document}")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("tokenizer has no chat template: use an instruction-tuned model")
    messages = [{"role": "user", "content": instruction.format(document=document)}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@torch.no_grad()
def summarize(model, tokenizer, document: str, *, max_new_tokens: int = 60,
              instruction: str = SUMMARY_INSTRUCTION) -> str:
    """The model's summary of ``document``: greedy decoding (:func:`llmlab.decoding.greedy`) of
    :func:`summary_prompt` until the end-of-turn token or ``max_new_tokens``; returns the new text."""
    check_module("model", model)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, low=1)
    prompt = summary_prompt(tokenizer, document, instruction=instruction)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(model_device(model))
    out = greedy(model, ids, max_new_tokens, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
