"""llmlab.widgets.anatomy: the notebook-09 mask explorer and the mask drawing."""

from __future__ import annotations

import pytest
import torch

from llmlab.anatomy import attention_mask
from llmlab.display import new_figure
from llmlab.widgets import MaskExplorer, mask_explorer
from llmlab.widgets.anatomy import draw_mask

TOKENS = "the big dog barks near the old barn .".split()


def test_readout_and_picture_follow_the_controls():
    w = mask_explorer(kind="causal", query=3)
    assert isinstance(w, MaskExplorer) and w.tokens == TOKENS
    assert w.last["visible_tokens"] == ["the", "big", "dog", "barks"] and not w.last["future_visible"]
    assert "query 3 (<code>barks</code>) sees 4 of 9 keys, none of them to its right" in w.readout_text
    assert w.n_prefix.disabled and w.last["allowed_pairs"] == 9 * 10 // 2
    picture = w.plot.value
    w.query.value = 6
    assert w.last["visible"] == list(range(7)) and w.plot.value != picture
    w.kind.value = "prefix"
    w.n_prefix.value = 8
    assert not w.n_prefix.disabled and w.last["future_visible"] and w.last["n_visible"] == 8
    assert "prefix mask, n_prefix = 8" in w.readout_text and "including tokens to its right" in w.readout_text
    w.kind.value = "bidirectional"
    assert w.last["n_visible"] == 9 and w.last["allowed_pairs"] == 81
    assert w.last == w.numbers("bidirectional", 8, 6)


def test_numbers_agree_with_attention_mask():
    w = mask_explorer(["a", "b", "c", "d", "e"], kind="prefix", n_prefix=2, query=0)
    for kind in ("causal", "prefix", "bidirectional"):
        for n_prefix in range(6):
            mask = attention_mask(kind, 5, n_prefix=n_prefix)
            for q in range(5):
                x = w.numbers(kind, n_prefix, q)
                assert x["visible"] == torch.nonzero(mask[q]).flatten().tolist()
                assert x["allowed_pairs"] == int(mask.sum())


def test_draw_mask_draws_rows_and_columns():
    fig = new_figure(4, 3)
    ax = fig.subplots()
    draw_mask(ax, torch.ones(2, 3, dtype=torch.bool), queries=["x", "y"], keys=["a", "b", "c"], row=1, title="cross")
    assert ax.get_title() == "cross" and [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert ax.images[0].get_array().shape == (2, 3)
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        draw_mask(ax, torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"row must be an int in \[0, 1\]"):
        draw_mask(ax, torch.ones(2, 2, dtype=torch.bool), row=2)


@pytest.mark.parametrize("args, kwargs, error, match", [
    (([],), {}, ValueError, "tokens must be a non-empty list"),
    ((["a", 3],), {}, ValueError, "tokens must be a non-empty list of strings"),
    ((None,), {"kind": "diagonal"}, ValueError, "kind must be one of"),
    ((None,), {"n_prefix": 10}, ValueError, r"n_prefix must be an int in \[0, 9\]"),
    ((None,), {"query": 9}, ValueError, r"query must be an int in \[0, 8\]"),
])
def test_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        mask_explorer(*args, **kwargs)


def _tiny_masked_lm():
    from llmlab.anatomy import TinyTransformer, WordVocab

    vocab = WordVocab.from_sentences(["the dog barks .", "the cat meows .", "a big dog barks loudly ."])
    torch.manual_seed(0)
    return TinyTransformer(len(vocab), d_model=16, n_layers=2, n_heads=2, max_len=16).eval(), vocab


def test_with_a_masked_lm_it_predicts_only_from_what_the_mask_shows():
    model, vocab = _tiny_masked_lm()
    words = ["[BOS]", "the", "dog", "barks", ".", "[EOS]"]
    w = mask_explorer(words, kind="bidirectional", query=2, model=model, vocab=vocab)
    x = w.last
    assert x["hidden"] == "dog" and len(x["guesses"]) == len(vocab.word_ids)
    assert abs(sum(p for _, p in x["guesses"]) - 1) < 1e-5 and x["guesses"][0][0] == x["top"]
    assert dict(x["guesses"])["dog"] == pytest.approx(x["p_true"])
    assert "masked LM, <code>dog</code> hidden behind [MASK]" in w.readout_text
    w.kind.value = "causal"
    causal = w.last["guesses"]
    # under the causal mask position 2 cannot see positions 3.., so changing them changes nothing
    other = mask_explorer(["[BOS]", "the", "dog", "meows", "loudly", "[EOS]"], kind="causal", query=2, model=model,
                          vocab=vocab)
    assert [p for _, p in other.last["guesses"]] == pytest.approx([p for _, p in causal], abs=1e-6)
    w.kind.value = "bidirectional"
    assert [p for _, p in w.last["guesses"]] != pytest.approx([p for _, p in causal], abs=1e-6)


def test_model_mode_bad_arguments():
    model, vocab = _tiny_masked_lm()
    with pytest.raises(TypeError, match="vocab must be"):
        mask_explorer(["the", "dog"], model=model, vocab={"the": 4})
    with pytest.raises(ValueError, match="not in it: \\['zebra'\\]"):
        mask_explorer(["the", "zebra"], model=model, vocab=vocab)
    with pytest.raises(TypeError, match="model"):
        mask_explorer(["the", "dog"], model="m", vocab=vocab)
