"""Notebook 05: sliders for the depth n and the number of segments; the measured and theoretical cost, and the schedule."""

from __future__ import annotations

import ipywidgets as W
import torch

from .._checks import check_int
from ..checkpointing import default_segments, make_chain, measure, theory_forward_calls, theory_saved_activations
from ..display import html_table
from ..plotting import PALETTE
from .base import LabWidget, _int_slider

__all__ = ["CheckpointingWidget", "checkpointing_widget"]


class CheckpointingWidget(LabWidget):
    """Sliders for the depth ``n`` and the number of segments; a table and a plot of the cost.

    ``.n`` and ``.segments`` are the sliders (moving ``n`` resets ``segments`` to ceil(sqrt n)),
    ``.readout`` (HTML) the measured table for store_all / sqrt with ``segments`` /
    recompute_all, ``.plot`` (PNG) the theoretical memory and forward calls over all segment
    counts with the current one marked, and the measured saved activations of sqrt over time, ``.last`` the last measured
    :class:`llmlab.checkpointing.CheckpointStats` per strategy. ``.act_bytes`` is the size of
    one activation (batch × width floats), the unit of the table.
    """

    css_prefix, css_box = "llmlab-checkpointing", "llmlab-checkpointing-widget"

    def __init__(self, *, n_max: int = 64, width: int = 64, batch: int = 16, n: int = 36, seed: int = 0):
        super().__init__()
        n_max = check_int("n_max", n_max, low=1)
        batch = check_int("batch", batch, low=1)
        # One deep chain built once (make_chain checks width and seed); a refresh measures its first n blocks.
        self._chain = make_chain(n_max, width, seed=seed)
        self._x = torch.randn(batch, width, generator=torch.Generator().manual_seed(seed + 1))
        self.act_bytes = batch * width * self._x.element_size()
        self.n = _int_slider("n", n, low=1, high=n_max, description="layers n", continuous_update=False)
        self.segments = W.IntSlider(value=default_segments(n), min=1, max=n, description="segments",
                                    continuous_update=False)
        self._add_plot()
        self._assemble(W.VBox([W.HBox([self.n, self.segments]), self.readout, self.plot]),
                       n=self.n, segments=self.segments)
        self.n.observe(self._on_n, names="value")
        self._watch(self.segments)
        self.refresh()

    def _on_n(self, change) -> None:
        """A new depth: the segments slider goes to 1..n at ceil(sqrt n), then one refresh."""
        n = change["new"]
        with self._refresh_paused(), self.segments.hold_trait_notifications():
            self.segments.max = n
            self.segments.value = default_segments(n)
        self.refresh()

    def refresh(self) -> None:
        """Measure the three strategies on the first n blocks; redraw table and plot."""
        n, s = self.n.value, min(self.segments.value, self.n.value)
        model = self._chain[:n]
        self.last = {
            "store_all": measure(model, self._x, "store_all"),
            "sqrt": measure(model, self._x, "sqrt", segments=s),
            "recompute_all": measure(model, self._x, "recompute_all"),
        }
        a = self.act_bytes
        rows = [[label, f"{st.peak_saved_bytes / a:.0f}", f"{st.peak_saved_bytes / 1024:.1f}", st.forward_calls,
                 st.forward_calls - n]
                for label, st in [("store_all", self.last["store_all"]), (f"sqrt, {s} segments", self.last["sqrt"]),
                                  ("recompute_all", self.last["recompute_all"])]]
        self.readout.value = (
            f"<b>n = {n} layers, {s} segments</b> (sqrt n = {n ** 0.5:.1f}); measured:"
            + html_table(["strategy", "saved activations", "KiB", "layer forwards", "recomputed"], rows)
        )
        segments = list(range(1, n + 1))
        with self._figure(10.5, 2.6) as fig:
            ax_m, ax_f, ax_t = fig.subplots(1, 3)
            ax_m.plot(segments, [theory_saved_activations(n, "sqrt", k) for k in segments],
                      label="segments + last segment")
            ax_m.plot([s], [self.last["sqrt"].peak_saved_bytes / a], "o", color=PALETTE[1], label="measured")
            ax_m.set(xlabel="segments", ylabel="saved activations", title="memory")
            ax_m.legend(fontsize=8)
            ax_f.plot(segments, [theory_forward_calls(n, "sqrt", k) for k in segments])
            ax_f.plot([s], [self.last["sqrt"].forward_calls], "o", color=PALETTE[1])
            ax_f.set(xlabel="segments", ylabel="layer forwards", title="compute")
            # Your schedule over time: the peak's height and the replay sawtooth change with the segment count.
            sched = self.last["sqrt"].schedule
            ax_t.step(range(len(sched)), [c.live_saved_bytes / a for c in sched], where="post", color=PALETTE[2])
            ax_t.axvline(n - 0.5, color="0.5", ls=":", lw=1, label="end of the forward pass")
            ax_t.set(xlabel="time (block forwards so far)", ylabel="saved activations",
                     title=f"sqrt, {s} segments, over time")
            ax_t.legend(fontsize=8)


def checkpointing_widget(**kwargs) -> CheckpointingWidget:
    """The notebook 05 widget: see :class:`CheckpointingWidget` (keywords: n_max, width, batch, n, seed)."""
    return CheckpointingWidget(**kwargs)
