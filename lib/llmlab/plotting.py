"""One figure style for every notebook: same sizes, fonts, colours and helpers."""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyBboxPatch

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


def draw_flow(ax, boxes: dict, arrows=(), *, colors: dict | None = None, size: tuple[float, float] = (0.2, 0.13),
              fontsize: float = 8) -> dict:
    """Draw a box-and-arrow diagram (a data flow, an algorithm's step) on ``ax``; axes hidden.

    ``boxes``: name -> ``(x, y, text)``, the centre of a rounded box in [0, 1] x [0, 1] and its
    (multi-line) label. ``arrows``: ``(src, dst)`` or ``(src, dst, label)`` tuples of box names;
    each arrow is clipped at the two boxes' edges and its label sits at its middle.
    ``colors``: name -> face colour (default: the first palette colour, light). Returns
    name -> the box's patch.
    """
    if not isinstance(boxes, dict) or not boxes:
        raise TypeError("boxes must be a non-empty dict name -> (x, y, text)")
    colors = colors or {}
    width, height = size
    patches = {}
    for name, spec in boxes.items():
        if not isinstance(spec, tuple) or len(spec) != 3:
            raise ValueError(f"boxes[{name!r}] must be a tuple (x, y, text), got {spec!r}")
        x, y, text = spec
        patch = FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.01",
                               facecolor=colors.get(name, PALETTE[5]), edgecolor="0.3", alpha=0.9, lw=1)
        ax.add_patch(patch)
        ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)
        patches[name] = patch
    for arrow in arrows:
        if not isinstance(arrow, tuple) or len(arrow) not in (2, 3) or any(a not in boxes for a in arrow[:2]):
            raise ValueError(f"arrows must be (src, dst) or (src, dst, label) with names from boxes, got {arrow!r}")
        src, dst = arrow[:2]
        (x0, y0, _), (x1, y1, _) = boxes[src], boxes[dst]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=dict(
            arrowstyle="-|>", color="0.25", lw=1.2, patchA=patches[src], patchB=patches[dst], shrinkA=2, shrinkB=2))
        if len(arrow) == 3 and arrow[2]:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, arrow[2], ha="center", va="center", fontsize=fontsize - 1,
                    color="0.15", bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.9))
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.set_axis_off()
    return patches
