"""Rendering for notebooks and widgets: HTML snippets, figures to PNG, images to bitmaps.

Nothing here computes a result; topic modules compute, this module draws. Every function
returns a value (an HTML string, PNG/BMP bytes) and displays nothing, so the same code serves a
notebook cell, a widget callback and the static gallery.

* :func:`surprisal_html`: text coloured by how surprised a model was by each token.
* :func:`tokens_html`: text cut into tokens, each token on its own background.
* :func:`bar_table_html`: rows of (label, value) with a bar each.
* :func:`html_table`: a plain table from a header and rows.
* :func:`figure_png`: a matplotlib figure drawn off-screen (Agg) to PNG bytes, without pyplot, so it
  works under any backend and leaks no figures.
* :func:`new_figure`: a pyplot-free figure in the llmlab style, for :func:`figure_png`.
* :func:`encode_image`: a float image tensor to BMP (fast) or PNG bytes for ``ipywidgets.Image``.
"""

from __future__ import annotations

import html
import io
import math

import matplotlib as mpl
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from ._checks import check_float, check_same_length
from .plotting import STYLE

__all__ = ["surprisal_html", "tokens_html", "bar_table_html", "html_table", "new_figure", "figure_png", "encode_image", "escape"]

def escape(s: str, *, quote: bool = True) -> str:
    """``html.escape`` for the text (a str) we put into HTML."""
    return html.escape(s, quote=quote)


def _check_pieces(pieces) -> list[str]:
    if isinstance(pieces, (str, bytes)) or not hasattr(pieces, "__iter__"):
        raise TypeError(f"pieces must be a list of str (one per token), got {type(pieces).__name__}")
    pieces = list(pieces)
    for i, p in enumerate(pieces):
        if not isinstance(p, str):
            raise TypeError(f"pieces[{i}] must be a str (decoded token text), got {type(p).__name__}")
    return pieces
_HALF = torch.tensor(0.5)  # a 0-d CPU tensor: works with images on any device


def surprisal_html(pieces: list[str], surprisal_bits, *, vmax: float = 12.0) -> str:
    """An HTML string showing each text piece on a background from white (0 bits) to red (``vmax``).

    ``pieces``: the decoded text of each token; ``surprisal_bits``: one number per piece
    (``-log2 p``), NaN for a piece that was not scored (shown uncoloured). Hovering shows the value.
    """
    pieces = _check_pieces(pieces)
    values = [float(v) for v in surprisal_bits]
    check_same_length(pieces=pieces, surprisal_bits=values)
    vmax = check_float("vmax", vmax, low=0, low_open=True)
    spans = []
    for piece, s in zip(pieces, values):
        text = html.escape(piece).replace("\n", "\u21b5\n")
        if math.isnan(s):
            spans.append(f'<span title="not scored">{text}</span>')
            continue
        if s < 0:
            raise ValueError(f"surprisal_bits must be >= 0 (or NaN for an unscored piece), got {s}")
        alpha = min(s / vmax, 1.0)
        spans.append(f'<span title="{s:.2f} bits" style="background: rgba(213, 94, 0, {alpha:.2f})">{text}</span>')
    return ('<div style="font-family: monospace; line-height: 1.7; white-space: pre-wrap">'
            + "".join(spans) + "</div>")


#: Backgrounds that alternate from one token to the next in :func:`tokens_html`.
TOKEN_COLORS = ("#cfe3f1", "#fbdcb8", "#d3ecd0", "#ecd3e6")


def tokens_html(pieces: list[str], *, titles: list[str] | None = None) -> str:
    """An HTML string showing each piece of text (one token) on a background colour of its own.

    Spaces and line breaks stay visible (a line break is drawn as "↵"); ``titles`` (one per piece,
    e.g. the token id) appear on hover.
    """
    pieces = _check_pieces(pieces)
    if titles is not None:
        check_same_length(pieces=pieces, titles=titles)
    spans = []
    for i, piece in enumerate(pieces):
        text = html.escape(piece).replace("\n", "\u21b5\n")
        title = f' title="{html.escape(str(titles[i]))}"' if titles is not None else ""
        spans.append(f'<span{title} style="background: {TOKEN_COLORS[i % len(TOKEN_COLORS)]}; '
                     f'border-radius: 3px">{text}</span>')
    return ('<div style="font-family: monospace; line-height: 1.9; white-space: pre-wrap">'
            + "".join(spans) + "</div>")


def bar_table_html(rows: list[tuple[str, float]], *, n_show: int | None = None, scale: float = 300.0,
                   fmt: str = "{:.3f}", color: str = "#0072B2") -> str:
    """A table of ``(label, value)`` rows, each with a bar ``value * scale`` pixels long.

    Labels are shown as code (escaped); with ``n_show`` only the first rows are shown and a last
    line says how many more there are. The widgets call it with rows they computed.
    """
    rows = list(rows)
    shown = rows if n_show is None else rows[:n_show]
    body = "".join(
        f"<tr><td><code>{html.escape(label)}</code></td><td style='text-align:right'>{fmt.format(value)}</td>"
        f"<td><div style='background:{color};height:10px;width:{max(1, int(scale * value))}px'></div></td></tr>"
        for label, value in shown
    )
    more = f"<tr><td colspan=3>... and {len(rows) - len(shown)} more</td></tr>" if len(rows) > len(shown) else ""
    return f"<table>{body}{more}</table>"


def html_table(header: list[str], rows: list[list], *, caption: str = "") -> str:
    """A plain HTML table; cells are written with ``str`` and escaped."""
    if isinstance(header, (str, bytes)) or not hasattr(header, "__len__"):
        raise TypeError(f"header must be a list of column names, got {type(header).__name__}")
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"rows[{i}] has {len(row)} cells but header has {len(header)} columns")
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<tr>{head}</tr>{body}</table>"


def new_figure(width: float = 6.4, height: float = 3.6, *, dpi: int = 90) -> Figure:
    """A matplotlib ``Figure`` in the llmlab style with an Agg canvas, not managed by pyplot;
    ``width``, ``height`` in inches."""
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(width, height), dpi=dpi, constrained_layout=True)
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure) -> bytes:
    """Draw ``fig`` (a matplotlib ``Figure``) off-screen at its own dpi and return the PNG bytes (the llmlab
    style applied while drawing)."""
    buffer = io.BytesIO()
    with mpl.rc_context(STYLE):
        fig.savefig(buffer, format="png", dpi=fig.dpi)
    return buffer.getvalue()


def encode_image(image: torch.Tensor, *, fmt: str = "bmp") -> tuple[bytes, str]:
    """A float (H, W) or (H, W, C) image in [0, 1] (clipped) -> ``(bytes, format)`` for ``ipywidgets.Image``.

    BMP is uncompressed and about ten times faster to encode than PNG, which matters inside a
    slider callback; images with an alpha channel are written as PNG (BMP has no portable alpha).
    ``fmt``: "bmp" or "png"; C in 1..4. The widgets call it on every slider move: no checks, no host sync.
    """
    # Work on contiguous memory: a colour image is often a (H, W, C) view of a (C, H, W) tensor, and
    # elementwise ops on that strided view cost ten times more than on the (C, H, W) layout.
    channels_last = image.ndim == 3
    x = (image.permute(2, 0, 1) if channels_last else image).float().contiguous()
    # 255 x + 0.5 in one pass into a new tensor (the caller's image is left alone), clipped to
    # [0.5, 255.5] in place; the cast then rounds down: round-to-nearest of 255 clip(x, 0, 1).
    x = torch.add(_HALF, x, alpha=255.0).clamp_(0.5, 255.5).to(torch.uint8)
    if channels_last:
        x = x.permute(1, 2, 0).contiguous()  # uint8 copy: cheap
    pixels = x.cpu().numpy()
    if pixels.ndim == 3 and pixels.shape[2] in (1, 2):
        pixels = pixels[:, :, 0]  # grey (+ alpha): show the grey
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        fmt = "png"
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt.upper(), **({"compress_level": 1} if fmt == "png" else {}))
    return buffer.getvalue(), fmt
