"""Notebook 09: pick a mask kind, slide the prefix length and the query position, see what it sees."""

from __future__ import annotations

import ipywidgets as W
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.patches import Rectangle

from .._checks import check_choice, check_int, check_tensor
from ..anatomy import MASK_KINDS, attention_mask, visible_keys
from ..plotting import PALETTE
from .base import LabWidget

__all__ = ["draw_mask", "MaskExplorer", "mask_explorer"]

# hidden -> light grey, visible -> blue; a visible key in the highlighted row -> orange
_CMAP = ListedColormap(["#EEEEEE", PALETTE[0], PALETTE[1]])


def draw_mask(ax, mask: torch.Tensor, *, queries=None, keys=None, title: str = "", row: int | None = None,
              n_prefix: int = 0) -> None:
    """Draw a bool mask (n_q, n_k) on ``ax``: rows are queries, columns keys, a filled cell means
    "query i may attend to key j". ``queries`` / ``keys``: tick labels (tokens); ``row``: a query
    to highlight; ``n_prefix`` > 0 outlines the bidirectional prefix block."""
    check_tensor("mask", mask, dim=2)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got dtype {mask.dtype}")
    image = mask.cpu().numpy().astype(int)
    if row is not None:
        row = check_int("row", row, low=0, high=image.shape[0] - 1)
        image[row] *= 2
    ax.imshow(image, cmap=_CMAP, vmin=0, vmax=2, interpolation="nearest")
    n_q, n_k = image.shape
    ax.set_xticks(range(n_k), keys if keys is not None else range(n_k), rotation=90 if keys is not None else 0,
                  fontsize=8)
    ax.set_yticks(range(n_q), queries if queries is not None else range(n_q), fontsize=8)
    ax.set_xticks(np.arange(-0.5, n_k), minor=True)
    ax.set_yticks(np.arange(-0.5, n_q), minor=True)
    ax.grid(False)
    ax.grid(which="minor", color="white", linewidth=1)
    ax.tick_params(which="minor", length=0)
    if n_prefix > 0:
        ax.add_patch(Rectangle((-0.5, -0.5), n_prefix, n_prefix, fill=False, edgecolor=PALETTE[2], linewidth=2.5))
    ax.set_xlabel("key j (attended to)")
    ax.set_ylabel("query i")
    if title:
        ax.set_title(title)


class MaskExplorer(LabWidget):
    """Choose a mask kind, the prefix length and a query position; see the mask and the tokens that
    position may attend to (topic 9).

    Controls: ``.kind`` (Dropdown over :data:`~llmlab.anatomy.MASK_KINDS`), ``.n_prefix``
    (IntSlider 0..n, used by the ``"prefix"`` kind) and ``.query`` (IntSlider 0..n-1). Readout:
    ``.readout`` (HTML: "query 3 'barks' sees 4 of 8 keys: ..."); ``.last`` holds the numbers;
    ``.plot`` the mask drawn by :func:`draw_mask` with the query's row highlighted.
    """

    css_prefix, css_box = "llmlab-anatomy", "llmlab-mask-explorer"

    def __init__(self, tokens=None, *, kind: str = "prefix", n_prefix: int = 3, query: int | None = None):
        super().__init__()
        self.tokens = list("the big dog barks near the old barn .".split() if tokens is None else tokens)
        if not self.tokens or not all(isinstance(t, str) for t in self.tokens):
            raise ValueError("tokens must be a non-empty list of strings")
        n = len(self.tokens)
        kind = check_choice("kind", kind, MASK_KINDS)
        n_prefix = check_int("n_prefix", n_prefix, low=0, high=n)
        query = n // 2 if query is None else check_int("query", query, low=0, high=n - 1)
        self.kind = W.Dropdown(options=list(MASK_KINDS), value=kind, description="mask")
        self.n_prefix = W.IntSlider(value=n_prefix, min=0, max=n, description="n_prefix", continuous_update=True)
        self.query = W.IntSlider(value=query, min=0, max=n - 1, description="query i", continuous_update=True)
        self._add_plot(width=420)
        # the query slider first: it is the one a reader moves most (and the browser test moves the first)
        self._assemble(W.VBox([W.HBox([self.kind, self.query, self.n_prefix]), self.readout, self.plot]),
                       kind=self.kind, n_prefix=self.n_prefix, query=self.query)
        self._watch(self.kind, self.n_prefix, self.query)
        self.refresh()

    def numbers(self, kind: str, n_prefix: int, query: int) -> dict:
        """What the widget shows for these settings, as numbers and token lists."""
        mask = attention_mask(kind, len(self.tokens), n_prefix=n_prefix)
        seen = visible_keys(mask, query)
        return {"kind": kind, "n_prefix": n_prefix, "query": query, "token": self.tokens[query],
                "visible": seen, "visible_tokens": [self.tokens[j] for j in seen], "n_visible": len(seen),
                "n": len(self.tokens), "allowed_pairs": int(mask.sum()), "future_visible": any(j > query for j in seen)}

    def readout_for(self, x: dict) -> str:
        """The readout's HTML for the numbers ``x`` of :meth:`numbers`."""
        tokens = " ".join(f"<code>{t}</code>" for t in x["visible_tokens"])
        future = "including tokens to its right" if x["future_visible"] else "none of them to its right"
        setting = f"prefix mask, n_prefix = {x['n_prefix']}" if x["kind"] == "prefix" else f"{x['kind']} mask"
        return (f"{setting}: query {x['query']} (<code>{x['token']}</code>) sees {x['n_visible']} of {x['n']} "
                f"keys, {future}: {tokens}<br>{x['allowed_pairs']} of {x['n'] ** 2} query-key pairs allowed")

    def refresh(self) -> None:
        """Rebuild the mask for the controls' values; redraw the picture and the readout."""
        kind, n_prefix, query = self.kind.value, self.n_prefix.value, self.query.value
        self.n_prefix.disabled = kind != "prefix"
        self.last = self.numbers(kind, n_prefix, query)
        self.readout.value = self.readout_for(self.last)
        mask = attention_mask(kind, len(self.tokens), n_prefix=n_prefix)
        with self._figure(4.6, 4.2) as fig:
            draw_mask(fig.subplots(), mask, queries=self.tokens, keys=self.tokens, row=query,
                      n_prefix=n_prefix if kind == "prefix" else 0, title=f"{kind} attention mask")


def mask_explorer(tokens=None, **kwargs) -> MaskExplorer:
    """Build the topic-9 widget (see :class:`MaskExplorer`); display its ``.widget``."""
    return MaskExplorer(tokens, **kwargs)
