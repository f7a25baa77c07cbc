"""Notebook 14: a block-size slider over FlashAttention's slow-memory traffic and on-chip memory."""

from __future__ import annotations

import ipywidgets as W
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .._checks import check_choice, check_int
from ..attention import L2_CACHE_BYTES, SHARED_MEMORY_PER_BLOCK, attention_traffic
from ..display import html_table
from ..plotting import PALETTE
from .base import LabWidget

__all__ = ["AttentionBlockWidget", "attention_block_widget"]

#: The block sizes the slider offers: multiples of 16, as tensor-core tiles come.
BLOCKS = list(range(16, 257, 16))


class AttentionBlockWidget(LabWidget):
    """Sliders for the block size B and the sequence length n (powers of two), a menu for the head
    size d: the modelled HBM traffic of one forward pass (one head, bf16) plain vs FlashAttention,
    and the on-chip memory one block needs against a GPU's shared memory per thread block.

    B and d move the traffic ratio (about 2B/d for n much larger than B and d) and the on-chip
    footprint; n hardly does (both methods' bytes grow about as n²): it moves the absolute megabytes
    and the size of one head's K and V against the GPU's L2 cache, which decides whether the
    modelled K/V re-reads can be served by L2 instead of HBM (n goes up to 2**19 so that this flips
    at d = 64 too: past 40 MiB from n = 2**18).

    ``.block`` (IntSlider), ``.log2_n`` (IntSlider), ``.head_dim`` (Dropdown); ``.last`` holds
    the :class:`llmlab.attention.AttentionTraffic` of the current setting (``"traffic"``) and
    which GPUs' shared memory holds the block (``"fits"``).
    """

    css_prefix, css_box = "llmlab-attention", "llmlab-attention-widget"

    def __init__(self, *, n: int = 4096, d: int = 64, block_size: int = 64):
        super().__init__()
        n = check_int("n", n, low=256, high=2**19)
        if n & (n - 1):
            raise ValueError(f"n must be a power of two in [256, 524288], got {n}")
        d = check_choice("d", d, (32, 64, 128))
        block_size = check_choice("block_size", check_int("block_size", block_size), BLOCKS)
        self.block = W.IntSlider(value=block_size, min=BLOCKS[0], max=BLOCKS[-1], step=16, description="block size B",
                                 continuous_update=False, style={"description_width": "initial"})
        self.log2_n = W.IntSlider(value=n.bit_length() - 1, min=8, max=19, description="log2 n",
                                  continuous_update=False)
        self.head_dim = W.Dropdown(options=[32, 64, 128], value=d, description="head dim d")
        self._add_plot()
        self._assemble(W.VBox([W.HBox([self.block, self.log2_n, self.head_dim]), self.readout, self.plot]),
                       block=self.block, log2_n=self.log2_n, head_dim=self.head_dim)
        self._watch(self.block, self.log2_n, self.head_dim)
        self.refresh()

    def refresh(self) -> None:
        """Recompute the model at the current B, n, d; redraw the table and the two panels."""
        b, n, d = self.block.value, 2 ** self.log2_n.value, self.head_dim.value
        t = attention_traffic(n, d, b)
        fits = {gpu: t.sram_bytes <= limit for gpu, limit in SHARED_MEMORY_PER_BLOCK.items()}
        self.last = {"traffic": t, "fits": fits}
        l2 = " / ".join(f"{gpu} {size / 2**20:.0f} MiB" for gpu, size in L2_CACHE_BYTES.items())
        in_l2 = t.kv_bytes <= min(L2_CACHE_BYTES.values())
        mb = 1e6
        rows = [["plain (S and P through HBM)", f"{t.plain_bytes / mb:,.1f}", "1.0"],
                ["FlashAttention", f"{t.flash_bytes / mb:,.1f}", f"{t.ratio:.1f}× less"],
                ["… of which K, V re-reads", f"{t.kv_read_bytes / mb:,.1f}", f"K, V read {-(-n // b)}×"]]
        fit_text = ", ".join(f"{gpu} {'yes' if ok else 'no'} ({SHARED_MEMORY_PER_BLOCK[gpu] / 1024:.0f} KiB)"
                             for gpu, ok in fits.items())
        self.readout.value = (
            f"<b>B = {b}, n = {n:,}, d = {d}</b> (one head, bf16, forward): HBM traffic"
            + html_table(["method", "MB moved", "vs plain"], rows)
            + f"on-chip memory per block: <b>{t.sram_bytes / 1024:.1f} KiB</b>; fits a thread block's shared memory "
              f"on: {fit_text}<br>"
              f"The ratio tends to 2B/d = {2 * b / d:.1f} once n is much larger than B and d, whatever n is: n "
              f"scales both columns by about n². One head's K and V: <b>{t.kv_bytes / 2**20:,.2f} MiB</b> against L2 "
              f"caches of {l2}: "
              + ("they fit, so re-reads by this head's thread blocks running at the same time can be served by L2"
                 if in_l2 else "larger than L2, so more of the K/V re-reads reach HBM")
              + ". The model counts every re-read as HBM traffic: the FlashAttention column is an upper bound.")
        with self._figure(7.6, 2.7) as fig:
            ax_t, ax_s = fig.subplots(1, 2)
            traffic = [attention_traffic(n, d, bb) for bb in BLOCKS]
            ax_t.plot(BLOCKS, [x.flash_bytes / mb for x in traffic], color=PALETTE[0], label="FlashAttention")
            ax_t.axhline(t.plain_bytes / mb, color=PALETTE[1], linestyle="--", label="plain")
            ax_t.plot([b], [t.flash_bytes / mb], "o", color=PALETTE[0])
            ax_t.set(xlabel="block size B", ylabel="MB moved (HBM)", title="slow-memory traffic", yscale="log")
            ax_t.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax_t.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
            ax_t.yaxis.set_minor_formatter(NullFormatter())
            ax_t.legend(fontsize=8)
            ax_s.plot(BLOCKS, [x.sram_bytes / 1024 for x in traffic], color=PALETTE[2], label="one block's working set")
            for (gpu, limit), style in zip(SHARED_MEMORY_PER_BLOCK.items(), (":", "-.")):
                ax_s.axhline(limit / 1024, color="0.4", linestyle=style, label=f"{gpu} shared memory / block")
            ax_s.plot([b], [t.sram_bytes / 1024], "o", color=PALETTE[2])
            ax_s.set(xlabel="block size B", ylabel="KiB on chip", title="on-chip memory needed")
            ax_s.legend(fontsize=7)


def attention_block_widget(**kwargs) -> AttentionBlockWidget:
    """The notebook 14 widget: see :class:`AttentionBlockWidget` (keywords: n, d, block_size)."""
    return AttentionBlockWidget(**kwargs)
