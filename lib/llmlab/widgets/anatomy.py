"""Notebook 09: pick a mask kind, slide the prefix length and the query position, see what it sees —
and, given a trained masked LM, what it can then predict for the hidden word at that position."""

from __future__ import annotations

import ipywidgets as W
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch, Rectangle

from .._checks import check_choice, check_int, check_module, check_tensor
from .._torch import model_device
from ..anatomy import MASK, MASK_KINDS, WordVocab, attention_mask
from ..plotting import PALETTE
from .base import LabWidget, _int_slider

__all__ = ["draw_mask", "mask_legend_handles", "MaskExplorer", "mask_explorer"]

# hidden -> light grey, visible -> blue; a visible key in the highlighted row -> orange
_CMAP = ListedColormap(["#EEEEEE", PALETTE[0], PALETTE[1]])


def mask_legend_handles(*, row: bool = False, prefix: bool = False) -> list:
    """The colour key of :func:`draw_mask`: patches for "may attend" and "hidden", and for the
    highlighted query row (``row``) and the outlined bidirectional prefix (``prefix``)."""
    handles = [Patch(facecolor=PALETTE[0], label="query may attend to key"),
               Patch(facecolor="#EEEEEE", edgecolor="0.7", label="hidden from the query")]
    if row:
        handles.append(Patch(facecolor=PALETTE[1], label="the selected query's visible keys"))
    if prefix:
        handles.append(Patch(facecolor="none", edgecolor=PALETTE[2], linewidth=2.5, label="bidirectional prefix"))
    return handles


def draw_mask(ax, mask: torch.Tensor, *, queries=None, keys=None, title: str = "", row: int | None = None,
              n_prefix: int = 0, legend: bool = False) -> None:
    """Draw a bool mask (n_q, n_k) on ``ax``: rows are queries, columns keys, a filled cell means
    "query i may attend to key j". ``queries`` / ``keys``: tick labels (tokens); ``row``: a query
    to highlight; ``n_prefix`` > 0 outlines the bidirectional prefix block; ``legend`` adds the
    colour key (:func:`mask_legend_handles`) under the axes."""
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
    if legend:
        ax.legend(handles=mask_legend_handles(row=row is not None, prefix=n_prefix > 0), loc="upper center",
                  bbox_to_anchor=(0.5, -0.32), fontsize=7, ncol=2, frameon=False)


class MaskExplorer(LabWidget):
    """Choose a mask kind, the prefix length and a query position; see the mask and the tokens that
    position may attend to (topic 9) — and, with a trained masked LM, what it predicts there.

    Controls: ``.kind`` (Dropdown over :data:`~llmlab.anatomy.MASK_KINDS`), ``.n_prefix``
    (IntSlider 0..n, used by the ``"prefix"`` kind) and ``.query`` (IntSlider 0..n-1). Readout:
    ``.readout`` (HTML: "query 3 'barks' sees 4 of 8 keys: ..."); ``.last`` holds the numbers;
    ``.plot`` the mask drawn by :func:`draw_mask` with the query's row highlighted.

    With ``model`` (a :class:`~llmlab.anatomy.TinyTransformer` trained as a masked LM) and ``vocab``
    (its :class:`~llmlab.anatomy.WordVocab`), ``tokens`` are words of that vocabulary: the widget
    hides the word at the query position behind ``[MASK]``, runs the model under the selected mask
    and shows its probabilities for the hidden word (over the vocabulary's words): ``.last`` adds
    ``guesses`` [(word, p), ...] best first, ``p_true`` and ``top``. A word can only be predicted
    from evidence the mask lets the query see.
    """

    css_prefix, css_box = "llmlab-anatomy", "llmlab-mask-explorer"

    def __init__(self, tokens=None, *, kind: str = "prefix", n_prefix: int = 3, query: int | None = None,
                 model=None, vocab: WordVocab | None = None):
        super().__init__()
        self.tokens = list("the big dog barks near the old barn .".split() if tokens is None else tokens)
        if not self.tokens or not all(isinstance(t, str) for t in self.tokens):
            raise ValueError("tokens must be a non-empty list of strings")
        self.model, self.vocab, self._ids = None, None, None
        if model is not None or vocab is not None:
            check_module("model", model)
            if not isinstance(vocab, WordVocab):
                raise TypeError(f"vocab must be the model's llmlab.anatomy.WordVocab, got {type(vocab).__name__}")
            unknown = [t for t in self.tokens if t not in vocab.index or t in ("[PAD]", "[MASK]")]
            if unknown:
                raise ValueError(f"tokens must be words of vocab (or [BOS]/[EOS]); not in it: {unknown}")
            self.model, self.vocab = model, vocab
            self._ids = torch.tensor([vocab.index[t] for t in self.tokens])
        n = len(self.tokens)
        kind = check_choice("kind", kind, MASK_KINDS)
        self.kind = W.Dropdown(options=list(MASK_KINDS), value=kind, description="mask")
        self.n_prefix = _int_slider("n_prefix", n_prefix, low=0, high=n, description="n_prefix", continuous_update=True)
        self.query = _int_slider("query", n // 2 if query is None else query, low=0, high=n - 1, description="query i",
                                 continuous_update=True)
        self._add_plot(width=720 if self.model is not None else 420)
        # the query slider first: it is the one a reader moves most (and the browser test moves the first)
        self._assemble(W.VBox([W.HBox([self.kind, self.query, self.n_prefix]), self.readout, self.plot]),
                       kind=self.kind, n_prefix=self.n_prefix, query=self.query)
        self._watch(self.kind, self.n_prefix, self.query)
        self.refresh()

    @torch.no_grad()
    def _predict(self, mask: torch.Tensor, query: int) -> dict:
        """The masked LM's distribution over the vocabulary's words for the word hidden at ``query``."""
        ids = self._ids.clone()
        truth = int(ids[query])
        ids[query] = MASK
        device = model_device(self.model)
        logits = self.model(ids[None].to(device), mask.to(device))[0, query].float().cpu()
        words = self.vocab.word_ids
        p = torch.softmax(logits[words], dim=-1)
        order = p.argsort(descending=True).tolist()
        guesses = [(self.vocab.tokens[words[i]], float(p[i])) for i in order]
        p_true = float(p[words.index(truth)]) if truth in words else float("nan")
        return {"guesses": guesses, "p_true": p_true, "top": guesses[0][0], "hidden": self.tokens[query]}

    def numbers(self, kind: str, n_prefix: int, query: int) -> dict:
        """What the widget shows for these settings, as numbers and token lists."""
        mask = attention_mask(kind, len(self.tokens), n_prefix=n_prefix)
        seen = torch.nonzero(mask[query]).flatten().tolist()  # the keys this query may attend to
        out = {"kind": kind, "n_prefix": n_prefix, "query": query, "token": self.tokens[query],
               "visible": seen, "visible_tokens": [self.tokens[j] for j in seen], "n_visible": len(seen),
               "n": len(self.tokens), "allowed_pairs": int(mask.sum()), "future_visible": any(j > query for j in seen)}
        if self.model is not None:
            out.update(self._predict(mask, query))
        return out

    def readout_for(self, x: dict) -> str:
        """The readout's HTML for the numbers ``x`` of :meth:`numbers`."""
        tokens = " ".join(f"<code>{t}</code>" for t in x["visible_tokens"])
        future = "including tokens to its right" if x["future_visible"] else "none of them to its right"
        setting = f"prefix mask, n_prefix = {x['n_prefix']}" if x["kind"] == "prefix" else f"{x['kind']} mask"
        text = (f"{setting}: query {x['query']} (<code>{x['token']}</code>) sees {x['n_visible']} of {x['n']} "
                f"keys, {future}: {tokens}<br>{x['allowed_pairs']} of {x['n'] ** 2} query-key pairs allowed")
        if "guesses" in x:
            best = " · ".join(f"<code>{w}</code> {p:.2f}" for w, p in x["guesses"][:3])
            text += (f"<br>masked LM, <code>{x['hidden']}</code> hidden behind [MASK] at position {x['query']}: "
                     f"its guesses {best}; p(<code>{x['hidden']}</code>) = <b>{x['p_true']:.2f}</b>")
        return text

    def refresh(self) -> None:
        """Rebuild the mask for the controls' values; redraw the picture and the readout."""
        kind, n_prefix, query = self.kind.value, self.n_prefix.value, self.query.value
        self.n_prefix.disabled = kind != "prefix"
        self.last = self.numbers(kind, n_prefix, query)
        self.readout.value = self.readout_for(self.last)
        mask = attention_mask(kind, len(self.tokens), n_prefix=n_prefix)
        prefix = n_prefix if kind == "prefix" else 0
        if self.model is None:
            with self._figure(4.6, 4.6) as fig:
                draw_mask(fig.subplots(), mask, queries=self.tokens, keys=self.tokens, row=query, n_prefix=prefix,
                          title=f"{kind} attention mask", legend=True)
            return
        with self._figure(8.6, 4.2) as fig:
            ax_mask, ax_p = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.1]})
            draw_mask(ax_mask, mask, queries=self.tokens, keys=self.tokens, row=query, n_prefix=prefix,
                      title=f"{kind} attention mask", legend=True)
            top = self.last["guesses"][:8][::-1]
            colours = [PALETTE[1] if w == self.last["hidden"] else PALETTE[0] for w, _ in top]
            ax_p.barh([w for w, _ in top], [p for _, p in top], color=colours)
            ax_p.set(xlim=(0, 1), xlabel="masked LM's probability for the hidden word",
                     title=f"[MASK] at position {query} (orange: the true word)")


def mask_explorer(tokens=None, **kwargs) -> MaskExplorer:
    """Build the topic-9 widget (see :class:`MaskExplorer`; keywords kind, n_prefix, query, model,
    vocab); display its ``.widget``."""
    return MaskExplorer(tokens, **kwargs)
