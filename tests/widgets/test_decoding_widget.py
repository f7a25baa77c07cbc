"""llmlab.widgets.decoding: the temperature / top-k / top-p sliders of notebook 02, on a tiny random Llama."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from llmlab.widgets import DecodingWidget, decoding_widget


class CharTokenizer:
    """A stand-in for a Hugging Face tokenizer: one token per character (id = code point mod 97)."""

    def __call__(self, text, return_tensors=None):
        assert return_tensors == "pt"
        return SimpleNamespace(input_ids=torch.tensor([[ord(c) % 97 for c in text]]))

    def decode(self, ids):
        return "".join(f"<{i}>" for i in ids)


@pytest.fixture()
def widget(tiny_llama):
    return decoding_widget(tiny_llama, CharTokenizer(), "Once upon a time", n_show=4)


def test_builds_with_the_models_next_token_distribution(widget, tiny_llama):
    ids = CharTokenizer()("Once upon a time", return_tensors="pt").input_ids
    with torch.no_grad():
        probs = torch.softmax(tiny_llama(ids).logits[0, -1].float(), dim=-1)
    assert isinstance(widget, DecodingWidget) and widget.plot is None
    assert len(widget.kept) == 97 and widget.last["n_kept"] == 97 and widget.last["vocab"] == 97
    best = int(probs.argmax())
    assert widget.kept[0] == (f"<{best}>", pytest.approx(float(probs[best]), rel=1e-5))
    assert [p for _, p in widget.kept] == sorted((p for _, p in widget.kept), reverse=True)
    entropy = float(-(probs * probs.log()).sum())
    assert widget.last["entropy"] == pytest.approx(entropy, rel=1e-4)
    assert "kept <b>97</b> of 97 tokens" in widget.summary.value
    assert widget.readout_text.count("<tr>") == 5 and "... and 93 more" in widget.readout_text  # n_show rows + 1
    assert "Once upon a time" in widget.widget.children[0].value


def test_refresh_follows_every_slider(widget):
    text, summary, entropy = widget.readout_text, widget.summary.value, widget.last["entropy"]
    widget.temperature.value = 2.0
    assert widget.last["entropy"] > entropy and widget.readout_text != text and widget.summary.value != summary
    widget.temperature.value = 1.0
    top5 = [t for t, _ in widget.kept[:5]]
    widget.top_k.value = 5
    assert [t for t, _ in widget.kept] == top5 and widget.last["n_kept"] == 5
    assert math.isclose(sum(p for _, p in widget.kept), 1.0, rel_tol=1e-5)
    assert "... and 1 more" in widget.readout_text
    widget.top_k.value = 0
    widget.top_p.value = 0.3
    kept = widget.last["n_kept"]
    assert 1 <= kept < 97 and len(widget.kept) == kept
    widget.temperature.value = 0.1  # a sharp distribution: top-p keeps fewer tokens
    assert widget.last["n_kept"] < kept and widget.last["top_probability"] > 0.3


def test_bad_arguments(tiny_llama):
    decode = str
    with pytest.raises(ValueError, match="logits must be 1-D"):
        DecodingWidget(torch.zeros(2, 3), decode)
    with pytest.raises(TypeError, match="logits must be a floating-point tensor"):
        DecodingWidget(torch.zeros(3, dtype=torch.long), decode)
    with pytest.raises(TypeError, match="decode_token must be a callable"):
        DecodingWidget(torch.zeros(3), "not callable")
    with pytest.raises(ValueError, match="n_show must be an int >= 1"):
        DecodingWidget(torch.zeros(3), decode, n_show=0)
    with pytest.raises(TypeError, match="prompt must be a str"):
        DecodingWidget(torch.zeros(3), decode, prompt=3)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        decoding_widget("a model", CharTokenizer(), "hi")
    with pytest.raises(ValueError, match="prompt must be a non-empty str"):
        decoding_widget(tiny_llama, CharTokenizer(), "")
