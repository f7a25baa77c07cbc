"""Notebook 02: temperature, top-k and top-p sliders over one next-token distribution."""

from __future__ import annotations

from typing import Callable

import ipywidgets as W
import torch

from .._checks import check_int, check_str, check_tensor
from ..decoding import next_token_logits, warp_logits
from ..display import bar_table_html, escape
from .base import LabWidget

__all__ = ["DecodingWidget", "decoding_widget"]


class DecodingWidget(LabWidget):
    """Temperature / top-k / top-p sliders over one next-token distribution (notebook 02).

    ``logits`` (vocab,) are computed once when the widget is built; a slider move only re-runs
    :func:`llmlab.decoding.warp_logits` and redraws the table. Controls: ``.temperature``,
    ``.top_k`` (0 = off), ``.top_p``. ``.kept`` holds the current candidate set as
    ``[(token_text, probability), ...]`` (most likely first); ``.readout`` (HTML) shows its first
    ``n_show`` rows with bars, ``.summary`` (HTML) the size of the set, its entropy and the top
    probability, which ``.last`` holds as numbers (``n_kept``, ``vocab``, ``entropy``, ``top_probability``).
    """

    css_prefix, css_box = "llmlab-decoding", "llmlab-decoding-widget"

    def __init__(self, logits: torch.Tensor, decode_token: Callable[[int], str], *, prompt: str = "",
                 n_show: int = 15):
        super().__init__()
        check_tensor("logits", logits, dim=1, floating=True, min_numel=1)
        if not callable(decode_token):
            raise TypeError(f"decode_token must be a callable token id -> text, got {type(decode_token).__name__}")
        self.logits = logits.detach().float().cpu()
        self.decode_token = decode_token
        self.prompt = check_str("prompt", prompt, allow_empty=True)
        self.n_show = check_int("n_show", n_show, low=1)
        self.kept: list[tuple[str, float]] = []
        style = {"description_width": "90px"}
        self.temperature = W.FloatSlider(value=1.0, min=0.1, max=3.0, step=0.05, description="temperature", style=style)
        self.top_k = W.IntSlider(value=0, min=0, max=200, step=1, description="top-k (0=off)", style=style)
        self.top_p = W.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.01, description="top-p", style=style)
        self.summary = W.HTML()
        self._assemble(W.VBox([W.HTML(f"<b>Next token after:</b> <code>{escape(prompt)}</code>"),
                               self.temperature, self.top_k, self.top_p, self.summary, self.readout]),
                       temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, summary=self.summary)
        self._watch(self.temperature, self.top_k, self.top_p)
        self.refresh()

    def refresh(self) -> None:
        """Re-filter the cached logits at the sliders' settings; redraw summary and table."""
        scores = warp_logits(self.logits, temperature=float(self.temperature.value), top_k=int(self.top_k.value),
                             top_p=float(self.top_p.value))
        probs = torch.softmax(scores, dim=-1)
        kept_ids = torch.nonzero(torch.isfinite(scores)).flatten()
        order = kept_ids[torch.argsort(probs[kept_ids], descending=True)]
        self.kept = [(self.decode_token(int(i)), float(probs[i])) for i in order]
        p = probs[order]
        self.last = {"n_kept": len(order), "vocab": self.logits.numel(), "entropy": float(-(p * p.log()).sum()),
                     "top_probability": self.kept[0][1]}
        x = self.last
        self.summary.value = (f"kept <b>{x['n_kept']}</b> of {x['vocab']} tokens; "
                              f"entropy {x['entropy']:.2f} nats; top token p = {x['top_probability']:.3f}")
        self.readout.value = bar_table_html([(repr(text), p) for text, p in self.kept], n_show=self.n_show)


def decoding_widget(model, tokenizer, prompt: str, *, n_show: int = 15) -> DecodingWidget:
    """Build the decoding widget for ``prompt``: one forward pass now, only filtering on slider moves.

    ``tokenizer``: a Hugging Face tokenizer (or anything with ``tokenizer(text,
    return_tensors="pt").input_ids`` and ``tokenizer.decode([id])``).
    """
    check_str("prompt", prompt)
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids
    logits = next_token_logits(model, input_ids)
    return DecodingWidget(logits, lambda i: tokenizer.decode([i]), prompt=prompt, n_show=n_show)
