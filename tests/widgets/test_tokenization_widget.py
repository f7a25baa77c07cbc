"""llmlab.widgets.tokenization: the merges slider of notebook 10, driven as a person would."""

from __future__ import annotations

import pytest

from llmlab.display import tokens_html
from llmlab.tokenization import load_corpus, train_bpe
from llmlab.widgets import BPEMergesWidget, bpe_merges_widget

TEXT = "The ferryman rang the bell as he crossed the river. Ünïcödé and 🦙 too."


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(load_corpus(), 556)  # 300 merges


@pytest.fixture()
def widget(tokenizer):
    return bpe_merges_widget(tokenizer, TEXT, n_merges=10, curve_points=7)


def test_slider_re_segments_and_updates_readout(widget, tokenizer):
    w = widget
    assert isinstance(w, BPEMergesWidget) and w.merges.min == 0 and w.merges.max == 300 and w.merges.value == 10
    n_bytes = len(TEXT.encode("utf-8"))
    ids = tokenizer.truncated(10).encode(TEXT)
    assert w.last == {"n_merges": 10, "vocab_size": 266, "n_tokens": len(ids), "n_bytes": n_bytes,
                      "tokens_per_byte": len(ids) / n_bytes,
                      "latest": f"{tokenizer.merges[9][0]!r} + {tokenizer.merges[9][1]!r} → "
                                f"{tokenizer.merges[9][0] + tokenizer.merges[9][1]!r}"}
    assert w.readout_text == w.READOUT.format(**w.last)
    before = (w.readout_text, w.segmented.value, w.plot.value, w.last)
    w.merges.value = 300
    assert w.last["n_merges"] == 300 and w.last["vocab_size"] == 556
    assert w.last["n_tokens"] == len(tokenizer.encode(TEXT)) < before[3]["n_tokens"]
    assert w.readout_text != before[0] and w.segmented.value != before[1] and w.plot.value != before[2]
    assert w.plot.value[:8] == b"\x89PNG\r\n\x1a\n"
    # the segmented text is the text, token by token
    pieces = [tokenizer.token_bytes(i).decode("utf-8", errors="replace") for i in tokenizer.encode(TEXT)]
    assert w.segmented.value == tokens_html(pieces)


def test_no_merges_means_one_token_per_byte(widget):
    widget.merges.value = 0
    assert widget.last["tokens_per_byte"] == 1.0 and widget.last["vocab_size"] == 256
    assert "none (256 byte tokens)" in widget.readout_text


def test_curve_falls_and_is_dense_at_the_start(widget):
    assert widget.curve_merges[0] == 0 and widget.curve_merges[-1] == 300
    assert widget.curve[0] == 1.0
    assert all(a >= b for a, b in zip(widget.curve, widget.curve[1:]))
    assert sum(k <= 200 for k in widget.curve_merges) > sum(k > 200 for k in widget.curve_merges)


def test_arguments_are_checked(tokenizer):
    with pytest.raises(TypeError, match="BPETokenizer"):
        bpe_merges_widget(object(), TEXT)
    with pytest.raises(ValueError, match="text must be a non-empty str"):
        bpe_merges_widget(tokenizer, "")
    with pytest.raises(ValueError, match=r"n_merges must be an int in \[0, 300\]"):
        bpe_merges_widget(tokenizer, TEXT, n_merges=301)
    with pytest.raises(ValueError, match="curve_points"):
        bpe_merges_widget(tokenizer, TEXT, curve_points=1)
