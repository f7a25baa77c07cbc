"""llmlab.prompting: prompt templates, label scoring and in-context-learning evaluation.

The label scores are held against two independent references: Hugging Face's own loss
(``model(input_ids, labels=...)``: mean cross-entropy over the label tokens, times their number)
and llmlab.decoding.sequence_logprob (one unbatched forward per label), on tiny random Llama and
GPT-2 models and on the default model with its real tokenizer. The cases follow
lm-evaluation-harness's ``loglikelihood`` contract (EleutherAI/lm-evaluation-harness:
lm_eval/api/model.py, ``loglikelihood``: context and continuation tokenised apart, the score is
the summed log-probability of the continuation tokens): multi-token continuations, continuations
sharing a prefix, and batching that must not change a score.
"""

import pytest
import torch

from llmlab import prompting
from llmlab.decoding import sequence_logprob
from llmlab.prompting import (ALPACA_PROMPT, Template, alpaca_text, evaluate_icl, few_shot_prompt, icl_sweep,
                              label_logprobs, sample_demonstrations, weights_fingerprint)

SENTIMENT = Template("Review: {input}\nSentiment: {output}", instruction="Classify each review.")
DEMOS = [("a fine film", "positive"), ("so dull", "negative"), {"input": "loved it", "output": "positive"}]
QUERIES = [("great acting", "positive"), ("awful plot", "negative"), ("charming", "positive"), ("flat", "negative")]


def hf_label_logprob(model, prompt_ids, label_ids):
    """The reference: Hugging Face's mean cross-entropy over the label tokens, times their number."""
    ids = torch.tensor([prompt_ids + label_ids])
    labels = torch.tensor([[-100] * len(prompt_ids) + label_ids])
    with torch.no_grad():
        return -model(input_ids=ids, labels=labels).loss.item() * len(label_ids)


# ----------------------------------------------------------------------------- templates


def test_template_splits_the_example_at_the_answer():
    t = Template("Review: {input}\nSentiment: {output}")
    assert t.query("nice") == "Review: nice\nSentiment:"
    assert t.answer("positive") == " positive"  # the space moves to the answer, as the model writes it
    assert t.demonstration("nice", "positive") == "Review: nice\nSentiment: positive"
    assert Template("Q: {input}\nA:{output}").answer("yes") == "yes"
    assert Template("{input} ->  {output}").answer("x") == "  x"


@pytest.mark.parametrize("example", ["{input} {output} .", "no fields", "{output} {input}", "{input} {label}",
                                     "{input} {input} {output}", "{input} {output", "{0} {output}"])
def test_template_refuses_an_example_without_input_and_a_final_output(example):
    with pytest.raises(ValueError, match="example"):
        Template(example)


def test_template_refuses_wrong_types():
    with pytest.raises(TypeError, match="example"):
        Template(5)
    with pytest.raises(TypeError, match="instruction"):
        Template(instruction=None)
    with pytest.raises(TypeError, match="template"):
        few_shot_prompt([], "x", template=3)


def test_few_shot_prompt_layout():
    prompt = few_shot_prompt(DEMOS[:2], "great acting", template=SENTIMENT)
    assert prompt == ("Classify each review.\n\nReview: a fine film\nSentiment: positive\n\n"
                      "Review: so dull\nSentiment: negative\n\nReview: great acting\nSentiment:")
    # zero-shot: the task description and the query only
    assert few_shot_prompt([], "great acting", template=SENTIMENT) == "Classify each review.\n\nReview: great acting\nSentiment:"
    # a plain format string is a template without instruction; dicts and pairs both work
    assert few_shot_prompt([{"input": "1", "output": "2"}], "3", template="{input}={output}") == "1=2\n\n3="


@pytest.mark.parametrize("demos, exc, match", [
    ("review", TypeError, "demonstrations"),
    ({"input": "a", "output": "b"}, TypeError, "demonstrations"),
    ([("a", "b", "c")], TypeError, r"demonstrations\[0\]"),
    ([{"input": "a"}], ValueError, "input' and 'output"),
    ([("a", "")], ValueError, "output"),
    ([("a", 1)], TypeError, "output"),
])
def test_few_shot_prompt_refuses_malformed_demonstrations(demos, exc, match):
    with pytest.raises(exc, match=match):
        few_shot_prompt(demos, "q", template=SENTIMENT)


# ----------------------------------------------------------------------------- label scoring


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_label_logprobs_equal_each_label_scored_alone(arch, tiny_llama, tiny_gpt2, char_tokenizer):
    """Labels of different lengths, sharing prefixes ("pos" / "positive" / "p"), one of them a
    single token: the batched, padded, row-sharing pass equals every label scored on its own."""
    model = tiny_llama if arch == "llama" else tiny_gpt2
    tok = char_tokenizer
    prompt = "Review: a fine film\nSentiment:"
    labels = [" positive", " negative", " pos", " p", " q", " positive!"]
    got = label_logprobs(model, tok, prompt, labels)
    assert got.shape == (len(labels),) and got.dtype == torch.float32
    prompt_ids = tok(prompt)["input_ids"]
    for score, label in zip(got.tolist(), labels):
        label_ids = tok(label, add_special_tokens=False)["input_ids"]
        assert score == pytest.approx(hf_label_logprob(model, prompt_ids, label_ids), abs=1e-4)
        alone = sequence_logprob(model, torch.tensor([prompt_ids + label_ids]), len(prompt_ids))
        assert score == pytest.approx(alone, abs=1e-4)
    assert (got < 0).all()


def test_label_logprobs_leave_the_model_as_it_was(tiny_llama, char_tokenizer):
    before = weights_fingerprint(tiny_llama)
    tiny_llama.train()
    try:
        label_logprobs(tiny_llama, char_tokenizer, "a", [" b"])
        assert tiny_llama.training  # the mode is restored
    finally:
        tiny_llama.eval()
    assert weights_fingerprint(tiny_llama) == before


@pytest.mark.parametrize("prompt, labels, exc, match", [
    ("p", [], ValueError, "labels must be a non-empty list"),
    ("p", " a", TypeError, "labels must be a list"),
    ("p", [" a", ""], ValueError, r"labels\[1\]"),
    ("p", [" a", None], TypeError, r"labels\[1\]"),
    ("", [" a"], ValueError, "prompt"),
    (None, [" a"], TypeError, "prompt"),
])
def test_label_logprobs_refuses_bad_input(tiny_llama, char_tokenizer, prompt, labels, exc, match):
    with pytest.raises(exc, match=match):
        label_logprobs(tiny_llama, char_tokenizer, prompt, labels)


# ----------------------------------------------------------------------------- in-context learning


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("n_demos", [0, 2])
def test_evaluate_icl_equals_label_logprobs_per_query(arch, n_demos, tiny_llama, tiny_gpt2, char_tokenizer):
    """The shared prefix runs once (its cache repeated for every row): the same scores as the
    full prompt of every query through label_logprobs."""
    model = tiny_llama if arch == "llama" else tiny_gpt2
    # the tiny GPT-2 has 64 positions: a compact template and fewer queries
    template = SENTIMENT if arch == "llama" else Template("{input}:{output}", separator=";")
    result = evaluate_icl(model, char_tokenizer, DEMOS[:n_demos], QUERIES, template=template,
                          labels=["positive", "negative", "neutral"])
    assert result.logprobs.shape == (len(QUERIES), 3)
    for row, (x, _) in zip(result.logprobs, QUERIES):
        prompt = few_shot_prompt(DEMOS[:n_demos], x, template=template)
        continuations = [template.answer(y) for y in ("positive", "negative", "neutral")]
        torch.testing.assert_close(row, label_logprobs(model, char_tokenizer, prompt, continuations), rtol=0, atol=1e-4)
    labels = ["positive", "negative", "neutral"]
    assert result.predictions == tuple(labels[i] for i in result.logprobs.argmax(1).tolist())
    assert result.targets == tuple(y for _, y in QUERIES)
    assert result.accuracy == sum(p == t for p, t in zip(result.predictions, result.targets)) / len(QUERIES)
    assert result.prompt == few_shot_prompt(DEMOS[:n_demos], QUERIES[0][0], template=template)


def test_evaluate_icl_refuses_bad_queries(tiny_llama, char_tokenizer):
    with pytest.raises(ValueError, match=r"queries\[1\] has output 'neutral'"):
        evaluate_icl(tiny_llama, char_tokenizer, [], [("a", "positive"), ("b", "neutral")], template=SENTIMENT,
                     labels=["positive", "negative"])
    with pytest.raises(ValueError, match="queries must be a non-empty"):
        evaluate_icl(tiny_llama, char_tokenizer, [], [], template=SENTIMENT, labels=["positive"])
    with pytest.raises(ValueError, match="labels must be a non-empty"):
        evaluate_icl(tiny_llama, char_tokenizer, [], QUERIES, template=SENTIMENT, labels=[])


def test_sample_demonstrations_is_balanced_seeded_and_without_replacement():
    pool = [(f"p{i}", "positive") for i in range(6)] + [(f"n{i}", "negative") for i in range(6)]
    for k in range(0, 13):
        demos = sample_demonstrations(pool, k, seed=1)
        assert len(demos) == k == len(set(demos))
        n_pos = sum(y == "positive" for _, y in demos)
        assert abs(n_pos - (k - n_pos)) <= 1
    assert sample_demonstrations(pool, 4, seed=1) == sample_demonstrations(pool, 4, seed=1)
    assert any(sample_demonstrations(pool, 4, seed=s) != sample_demonstrations(pool, 4, seed=1) for s in range(2, 6))
    # an unbalanced pool: the rare label runs out, the rest comes from the other
    assert sum(y == "b" for _, y in sample_demonstrations([("x", "a")] * 5 + [("y", "b")], 4)) == 1
    with pytest.raises(ValueError, match="k must be an int in"):
        sample_demonstrations(pool, 13)


def test_icl_sweep_rows_and_draws(tiny_llama, char_tokenizer):
    pool = [(f"good {i}", "positive") for i in range(4)] + [(f"bad {i}", "negative") for i in range(4)]
    sweep = icl_sweep(tiny_llama, char_tokenizer, pool, QUERIES, template=SENTIMENT, labels=["positive", "negative"],
                      shots=(0, 2, 4), draws=2, seed=5)
    assert sweep.shots == (0, 2, 4) and sweep.accuracy.shape == (3, 2)
    assert sweep.accuracy[0, 0] == sweep.accuracy[0, 1] and sweep.spread[0] == 0  # zero-shot: nothing to draw
    for i, k in enumerate((2, 4)):
        for d in range(2):
            demos = sample_demonstrations(pool, k, seed=5 + d)
            expected = evaluate_icl(tiny_llama, char_tokenizer, demos, QUERIES, template=SENTIMENT,
                                    labels=["positive", "negative"]).accuracy
            assert sweep.accuracy[i + 1, d].item() == pytest.approx(expected)
    torch.testing.assert_close(sweep.mean, sweep.accuracy.mean(1))
    with pytest.raises(ValueError, match="draws"):
        icl_sweep(tiny_llama, char_tokenizer, pool, QUERIES, template=SENTIMENT, labels=["positive"], draws=0)
    with pytest.raises(ValueError, match=r"shots\[0\]"):
        icl_sweep(tiny_llama, char_tokenizer, pool, QUERIES, template=SENTIMENT, labels=["positive"], shots=(9,))


def test_weights_fingerprint_sees_a_one_ulp_change(make_tiny_llama):
    model = make_tiny_llama()
    before = weights_fingerprint(model)
    assert weights_fingerprint(make_tiny_llama()) == before  # same seed, same weights
    with torch.no_grad():
        w = model.model.layers[1].mlp.up_proj.weight
        w[3, 5] = torch.nextafter(w[3, 5], torch.tensor(float("inf")))
    assert weights_fingerprint(model) != before


# ----------------------------------------------------------------------------- Alpaca


def test_alpaca_text_is_the_training_prompt_of_the_release():
    """The two templates of github.com/tatsu-lab/stanford_alpaca (README, "Data Release")."""
    with_input = alpaca_text("Sort the numbers.", "3, 1, 2", "1, 2, 3")
    assert with_input == ("Below is an instruction that describes a task, paired with an input that provides further "
                          "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
                          "Sort the numbers.\n\n### Input:\n3, 1, 2\n\n### Response:\n1, 2, 3")
    without = alpaca_text("Name a prime number.", "", "7")
    assert without == ("Below is an instruction that describes a task. Write a response that appropriately completes "
                       "the request.\n\n### Instruction:\nName a prime number.\n\n### Response:\n7")
    assert with_input.startswith(ALPACA_PROMPT.split("{")[0])
    with pytest.raises(ValueError, match="instruction"):
        alpaca_text("", "", "x")


# ----------------------------------------------------------------------------- the default model


@pytest.mark.slow
def test_default_model_scores_with_its_real_tokenizer(default_lm):
    """With the BPE tokenizer the demonstrations' boundary ("\\n\\n" + "Review") tokenises
    differently on its own than inside the prompt: evaluate_icl must still equal label_logprobs."""
    model, tokenizer = default_lm
    before = weights_fingerprint(model)
    result = evaluate_icl(model, tokenizer, DEMOS, QUERIES[:2], template=SENTIMENT, labels=["positive", "negative"])
    for row, (x, _) in zip(result.logprobs, QUERIES[:2]):
        prompt = few_shot_prompt(DEMOS, x, template=SENTIMENT)
        single = label_logprobs(model, tokenizer, prompt, [" positive", " negative"])
        torch.testing.assert_close(row, single, rtol=0, atol=2e-3)
        prompt_ids = tokenizer(prompt)["input_ids"]
        for score, label in zip(single.tolist(), [" positive", " negative"]):
            ref = hf_label_logprob(model, prompt_ids, tokenizer(label, add_special_tokens=False)["input_ids"])
            assert score == pytest.approx(ref, abs=2e-3)
    assert result.accuracy == 1.0  # two easy reviews after three demonstrations
    assert weights_fingerprint(model) == before
