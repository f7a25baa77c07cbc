"""Notebook 10: slide the number of BPE merges and watch a text re-segment, tokens per byte falling."""

from __future__ import annotations

import ipywidgets as W
import numpy as np

from .._checks import check_int, check_str
from ..display import tokens_html
from ..plotting import PALETTE
from ..tokenization import BPETokenizer
from .base import LabWidget, _int_slider

__all__ = ["BPEMergesWidget", "bpe_merges_widget"]


class BPEMergesWidget(LabWidget):
    """Replay a trained BPE tokenizer merge by merge on a text (topic 10).

    Control: ``.merges`` (IntSlider, 0..``tokenizer.n_merges``): the tokenizer is cut to its first
    ``merges`` merges (:meth:`BPETokenizer.truncated`, what training would have stopped at). Shown:
    ``.readout`` (text ``"merges = 100 · vocabulary = 356 tokens · 301 tokens for 536 bytes ·
    tokens per byte = 0.562 · latest merge: 'Ġfro' + 'm' → 'Ġfrom'"``; the numbers in ``.last``),
    ``.segmented`` (HTML: the text, one background colour per token) and ``.plot`` (tokens per byte
    against merges, the slider's position marked). The curve is computed once, at ``curve_points``
    evenly spaced merge counts and 21 more among the first 200. A slider step encodes the text once
    (milliseconds) and redraws the figure (a few tenths of a second on a laptop CPU: the slider
    updates when released, so dragging does not queue up redraws).
    """

    css_prefix, css_box = "llmlab-bpe", "llmlab-bpe-merges"
    READOUT = ("merges = {n_merges} · vocabulary = {vocab_size} tokens · {n_tokens} tokens for {n_bytes} bytes · "
               "tokens per byte = {tokens_per_byte:.3f} · latest merge: {latest}")

    def __init__(self, tokenizer: BPETokenizer, text: str, *, n_merges: int | None = None, curve_points: int = 41):
        super().__init__()
        if not isinstance(tokenizer, BPETokenizer):
            raise TypeError(f"tokenizer must be a BPETokenizer (llmlab.tokenization), got {type(tokenizer).__name__}")
        self.tokenizer = tokenizer
        self.text = check_str("text", text)
        self.n_bytes = len(text.encode("utf-8"))
        top = tokenizer.n_merges
        curve_points = check_int("curve_points", curve_points, low=2)
        # Dense where the curve falls fast (the first merges), evenly spaced after.
        spots = np.r_[np.linspace(0, min(top, 200), 21), np.linspace(0, top, curve_points)]
        self.curve_merges = np.unique(spots.round().astype(int)).tolist()
        self.curve = [len(tokenizer.truncated(k).encode(text)) / self.n_bytes for k in self.curve_merges]
        self.merges = _int_slider("n_merges", min(100, top) if n_merges is None else n_merges, low=0, high=top,
                                  description="merges", continuous_update=False,
                                  layout=W.Layout(width="520px"))
        self.segmented = W.HTML()
        self._add_plot(width=520)
        self._assemble(W.VBox([self.merges, self.readout, self.segmented, self.plot]), merges=self.merges,
                       segmented=self.segmented)
        self._watch(self.merges)
        self.refresh()

    def numbers(self, n_merges: int) -> dict:
        """What the readout shows after ``n_merges`` merges, as numbers (and the latest merge as text)."""
        return self._state(n_merges)[0]

    def _state(self, n_merges: int) -> tuple[dict, list[str]]:
        tok = self.tokenizer.truncated(n_merges)  # which checks n_merges
        ids = tok.encode(self.text)
        if n_merges:
            a, b = tok.merges[-1]
            latest = f"{a!r} + {b!r} → {a + b!r}"
        else:
            latest = "none (256 byte tokens)"
        numbers = {"n_merges": n_merges, "vocab_size": len(tok), "n_tokens": len(ids), "n_bytes": self.n_bytes,
                   "tokens_per_byte": len(ids) / self.n_bytes, "latest": latest}
        return numbers, [tok.token_bytes(i).decode("utf-8", errors="replace") for i in ids]

    def refresh(self) -> None:
        """Cut the tokenizer at the slider's merge count, re-segment the text, redraw."""
        k = self.merges.value
        self.last, pieces = self._state(k)
        self.readout.value = self.READOUT.format(**self.last)
        self.segmented.value = tokens_html(pieces)
        with self._figure(6.4, 2.4) as fig:
            ax = fig.subplots()
            ax.plot(self.curve_merges, self.curve, color=PALETTE[0], label="this text")
            ax.axhline(1.0, color="0.6", linestyle="--", linewidth=1, label="one token per byte")
            ax.plot([k], [self.last["tokens_per_byte"]], "o", color=PALETTE[1], label=f"{k} merges")
            ax.set(xlabel="merges", ylabel="tokens per byte", ylim=(0, 1.05))
            ax.legend(loc="upper right", fontsize=8)


def bpe_merges_widget(tokenizer: BPETokenizer, text: str, **kwargs) -> BPEMergesWidget:
    """Build the :class:`BPEMergesWidget` (see there) for ``tokenizer`` on ``text``; display its ``.widget``."""
    return BPEMergesWidget(tokenizer, text, **kwargs)
