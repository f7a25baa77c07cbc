"""One figure style for every notebook: same sizes, fonts, colours and helpers."""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

# Colour-blind-safe palette (Okabe & Ito), used in this order by every plot.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]

STYLE = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": mpl.cycler(color=PALETTE),
    "legend.frameon": False,
    "lines.linewidth": 1.8,
    "image.cmap": "gray",
}


def use_style() -> None:
    """Apply the llmlab style to matplotlib globally (call once in a notebook's setup cell)."""
    mpl.rcParams.update(STYLE)


def subplots(nrows: int = 1, ncols: int = 1, *, width: float | None = None, height: float | None = None, **kwargs):
    """``plt.subplots`` in the llmlab style, sized per panel (3.2 x 3.0 inches by default)."""
    use_style()
    w = width if width is not None else 3.2 * ncols
    h = height if height is not None else 3.0 * nrows
    kwargs.setdefault("constrained_layout", True)
    return plt.subplots(nrows, ncols, figsize=(w, h), **kwargs)


def show_image(ax, image, title: str | None = None) -> None:
    """Draw an (H, W) or (H, W, C) float image clipped to [0, 1], without axes."""
    arr = np.asarray(image, dtype=float)
    arr = np.clip(arr, 0.0, 1.0)
    if arr.ndim == 2:
        ax.imshow(arr, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(arr, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if title:
        ax.set_title(title)
