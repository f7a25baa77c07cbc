"""llmlab.anatomy.classify: the linear probe against scikit-learn's LogisticRegression, and hidden-state
features / label-word prompting against unbatched forward passes of the real model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmlab.anatomy import (hidden_features, label_token_ids, load_classification_task, next_token_logprobs, prompt_classify,
                            shared_prefix_length, train_probe)


def _sklearn_fit(z, y, l2):
    """scikit-learn's multinomial logistic regression on the same standardised features: it minimises
    C·Σ_n CE_n + ½‖W‖², which is N·C times our mean CE + (λ/2)‖W‖² when C = 1/(λN)."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1 / (l2 * len(y)), tol=1e-10, max_iter=10_000)
    return clf.fit(z, y)


@pytest.mark.parametrize("l2", [1e-2, 1.0])
def test_probe_equals_sklearn_on_iris(l2):
    # Ported from scikit-learn sklearn/linear_model/tests/test_logistic.py::test_predict_iris (multinomial,
    # lbfgs): the same data, now checked coefficient by coefficient against the fitted estimator.
    from sklearn.datasets import load_iris

    iris = load_iris()
    names = [str(iris.target_names[t]) for t in iris.target]
    probe = train_probe(torch.tensor(iris.data), names, l2=l2)
    z = (torch.tensor(iris.data) - probe.mean.double()) / probe.std.double()
    clf = _sklearn_fit(z.numpy(), names, l2)
    assert list(clf.classes_) == list(probe.labels)
    # The softmax is unchanged by adding a constant to every class; both solutions have Σ_c W_c = 0 (the L2
    # optimum), but the intercepts are free: compare the centred ones.
    np.testing.assert_allclose(probe.weight.numpy(), clf.coef_, atol=2e-4)
    centred = probe.bias - probe.bias.mean()
    np.testing.assert_allclose(centred.numpy(), clf.intercept_ - clf.intercept_.mean(), atol=2e-4)
    assert probe.predict(torch.tensor(iris.data).float()) == list(clf.predict(z.numpy()))
    if l2 == 1e-2:
        predicted = probe.predict(torch.tensor(iris.data).float())
        assert sum(p == t for p, t in zip(predicted, names)) / len(names) > 0.95


def test_probe_on_random_separable_features():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 20, generator=g) * 3
    labels = [["x", "y", "z"][i % 3] for i in range(90)]
    features = centres[[i % 3 for i in range(90)]] + torch.randn(90, 20, generator=g)
    probe = train_probe(features, labels, l2=0.1)
    clf = _sklearn_fit(((features.double() - probe.mean.double()) / probe.std.double()).numpy(), labels, 0.1)
    np.testing.assert_allclose(probe.weight.numpy(), clf.coef_, atol=2e-4)
    assert probe.predict(features) == labels


@pytest.mark.parametrize("call, error, match", [
    (lambda: train_probe(torch.ones(3, 2), ["a", "b"]), ValueError, "features and labels must have the same length"),
    (lambda: train_probe(torch.ones(2, 2), ["a", "a"]), ValueError, "at least two classes"),
    (lambda: train_probe(torch.ones(2, 2), ["a", "b"], l2=0), ValueError, "l2 must be a number > 0"),
    (lambda: train_probe(torch.ones(2, 2, dtype=torch.long), ["a", "b"]), TypeError, "floating-point"),
])
def test_bad_probe_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_shared_prefix_length():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2, "every row keeps one token of its own"
    assert shared_prefix_length([[7], [7, 8]]) == 0 and shared_prefix_length([[1, 2], [3, 4]]) == 0
    with pytest.raises(ValueError, match="non-empty token lists"):
        shared_prefix_length([[1], []])


def test_tasks_are_balanced_and_disjoint():
    for name in ("sentiment", "topic"):
        train, test = load_classification_task(name, "train"), load_classification_task(name, "test")
        assert len(train) == len(test) == 32
        labels = tuple(dict.fromkeys(e.label for e in train))
        assert set(labels) == {e.label for e in test} and len(labels) in (2, 4)
        for split in (train, test):
            assert all(sum(e.label == lab for e in split) == 32 // len(labels) for lab in labels)
        assert not {e.text for e in train} & {e.text for e in test}
    with pytest.raises(ValueError, match=r"name must be one of \['sentiment', 'topic'\]"):
        load_classification_task("spam", "train")
    with pytest.raises(ValueError, match=r"split must be one of \['train', 'test'\]"):
        load_classification_task("topic", "dev")


@pytest.mark.slow
def test_features_and_prompt_logits_equal_unbatched_forward_passes(default_lm):
    model, tokenizer = default_lm
    texts = ["The soup was cold.", "A wonderful film with a brilliant cast and a happy ending."]
    for pool in ("mean", "last"):
        batched = hidden_features(model, tokenizer, texts, layer=-1, pool=pool, batch_size=2)
        for i, text in enumerate(texts):
            ids = tokenizer(text, return_tensors="pt").input_ids
            with torch.no_grad():
                h = model(ids, output_hidden_states=True).hidden_states[-1][0]
            torch.testing.assert_close(batched[i], h.mean(0) if pool == "mean" else h[-1], rtol=1e-4, atol=1e-4)
    middle = hidden_features(model, tokenizer, texts[:1], layer=5)
    with torch.no_grad():
        h5 = model(tokenizer(texts[0], return_tensors="pt").input_ids, output_hidden_states=True).hidden_states[5][0]
    torch.testing.assert_close(middle[0], h5.mean(0), rtol=1e-4, atol=1e-4)

    words = {"positive": " positive", "negative": " negative"}
    prompts = [f"Review: {t}\nSentiment:" for t in texts]
    result = prompt_classify(model, tokenizer, prompts, words, batch_size=2)
    ids = label_token_ids(tokenizer, words)
    for i, prompt in enumerate(prompts):
        with torch.no_grad():
            last = model(tokenizer(prompt, return_tensors="pt").input_ids).logits[0, -1]
        expected = torch.log_softmax(last, dim=-1)[[ids["positive"], ids["negative"]]]
        torch.testing.assert_close(result.logits[i], expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(next_token_logprobs(model, tokenizer, prompts, batch_size=1)[i],
                                   torch.log_softmax(last, dim=-1), rtol=1e-4, atol=1e-4)
        assert result.predictions[i] == ("positive" if expected[0] > expected[1] else "negative")
    assert result.labels == ("positive", "negative")

    # Chat prompts share a long prefix (system prompt, instruction): cached once, the same logits.
    chat = [tokenizer.apply_chat_template([{"role": "user", "content": f"Sentiment of: {t}"}], tokenize=False,
                                          add_generation_prompt=True) for t in texts + ["Fine.", "Dreadful food."]]
    assert shared_prefix_length(tokenizer(chat)["input_ids"]) > 20
    cached = prompt_classify(model, tokenizer, chat, words, batch_size=3)
    plain = prompt_classify(model, tokenizer, chat, words, batch_size=4, share_prefix=False)
    torch.testing.assert_close(cached.logits, plain.logits, rtol=1e-4, atol=1e-4)
    assert cached.predictions == plain.predictions


@pytest.mark.slow
def test_bad_prompt_and_feature_arguments(default_lm):
    model, tokenizer = default_lm
    with pytest.raises(ValueError, match="is 2 tokens"):
        label_token_ids(tokenizer, {"sports": "sports", "food": " food"})
    with pytest.raises(TypeError, match="words must be a dict"):
        label_token_ids(tokenizer, [" yes", " no"])
    with pytest.raises(ValueError, match="texts must be a non-empty list"):
        hidden_features(model, tokenizer, [])
    with pytest.raises(ValueError, match=r"pool must be one of \['mean', 'last'\]"):
        hidden_features(model, tokenizer, ["a"], pool="max")
    with pytest.raises(ValueError, match=r"layer must be an int in \[-31, 30\]"):
        hidden_features(model, tokenizer, ["a"], layer=31)
