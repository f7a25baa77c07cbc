"""llmlab.anatomy.summarize: ROUGE-1 by hand against Google's rouge-score package, the lead baseline, and
a real summary from the default chat model."""

from __future__ import annotations

import random

import pytest

from llmlab.anatomy import (SUMMARY_INSTRUCTION, lead_sentences, load_documents, rouge1, rouge_n, rouge_tokens,
                            summarize, summary_prompt)


def _reference(reference, candidate, n=1):
    from rouge_score import rouge_scorer

    score = rouge_scorer.RougeScorer([f"rouge{n}"], use_stemmer=False).score(reference, candidate)[f"rouge{n}"]
    return score.precision, score.recall, score.fmeasure


def _ours(reference, candidate, n=1):
    s = rouge_n(reference, candidate, n)
    return s.precision, s.recall, s.fmeasure


# Ported from google-research/rouge rouge_score/rouge_scorer_test.py (testRouge1, testRouge2,
# testRougeEmpty, testMultipleRougeTypes) and tokenize_test.py (testTokenize: punctuation and case).
@pytest.mark.parametrize("reference, candidate, n, expected", [
    ("testing one two", "testing", 1, (1, 1 / 3, 1 / 2)),
    ("testing one two", "testing one", 1, (1, 2 / 3, 4 / 5)),
    ("testing one two", "testing one", 2, (1, 1 / 2, 2 / 3)),
    ("testing one two", "", 1, (0, 0, 0)),
    ("", "testing", 1, (0, 0, 0)),
    ("first text", "text first", 2, (0, 0, 0)),
    ("Hello, World!", "hello world", 1, (1, 1, 1)),
])
def test_rouge_score_test_cases(reference, candidate, n, expected):
    assert _ours(reference, candidate, n) == pytest.approx(expected)
    assert _reference(reference, candidate, n) == pytest.approx(expected)


def test_clipped_counts_by_hand():
    # "the" twice in the candidate but once in the reference: one match only.
    s = rouge1("the cat sat", "the the cat")
    assert (s.precision, s.recall) == pytest.approx((2 / 3, 2 / 3))
    assert rouge_tokens("It's 3.5 km -- NOT 35!") == ["it", "s", "3", "5", "km", "not", "35"]


def test_random_texts_against_rouge_score():
    rng = random.Random(0)
    words = "the a cat dog sat ran on mat river bridge closed council 2024 rain's Rain".split()
    for _ in range(200):
        ref = " ".join(rng.choice(words) for _ in range(rng.randint(0, 12))) + rng.choice(["", ".", "!"])
        cand = " ".join(rng.choice(words) for _ in range(rng.randint(0, 12)))
        for n in (1, 2):
            assert _ours(ref, cand, n) == pytest.approx(_reference(ref, cand, n), abs=1e-12)


def test_on_the_shipped_articles_against_rouge_score():
    for doc in load_documents():
        lead = lead_sentences(doc["document"])
        assert doc["document"].startswith(lead) and lead.endswith(".") and lead.count(". ") == 0
        assert _ours(doc["summary"], lead) == pytest.approx(_reference(doc["summary"], lead), abs=1e-12)
    assert lead_sentences("One. Two! Three? Four.", 2) == "One. Two!"


@pytest.mark.parametrize("call, error, match", [
    (lambda: rouge1("a", 3), TypeError, "candidate must be a str"),
    (lambda: rouge_n("a", "a", 0), ValueError, "n must be an int >= 1"),
    (lambda: lead_sentences("", 1), ValueError, "document must be a non-empty str"),
    (lambda: lead_sentences("A. B.", 0), ValueError, "k must be an int >= 1"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.slow
def test_a_real_summary_from_the_chat_template(default_lm):
    model, tokenizer = default_lm
    doc = load_documents(n=1)[0]
    prompt = summary_prompt(tokenizer, doc["document"])
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\n")
    assert doc["document"] in prompt
    summary = summarize(model, tokenizer, doc["document"], max_new_tokens=40)
    assert 0 < len(summary.split()) < len(doc["document"].split())
    assert rouge1(doc["summary"], summary).fmeasure > 0.15
    with pytest.raises(ValueError, match="placeholder"):
        summary_prompt(tokenizer, "text", instruction="Summarize this.")
    assert "{document}" in SUMMARY_INSTRUCTION
