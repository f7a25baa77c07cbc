"""Notebook 04: accumulation steps K, the model and "divide the loss by K": the gradient and BN gaps, live."""

from __future__ import annotations

import ipywidgets as W

from .._checks import check_choice, check_int
from ..accumulation import (KINDS, AccumulationResult, accumulation_pass, divisors, loss_fn_for, make_batch,
                            make_model, relative_difference)
from ..plotting import PALETTE
from .base import LabWidget

__all__ = ["AccumulationExplorer", "accumulation_explorer"]


class AccumulationExplorer(LabWidget):
    """Accumulation steps K, the model and "divide loss by K": the gradient and BN-statistics gap, live.

    ``.steps`` (SelectionSlider over the divisors of the batch), ``.model_kind`` (Dropdown:
    linear + MSE, CNN + BatchNorm, CNN + GroupNorm) and ``.scale_loss`` (Checkbox) are the
    controls; ``.readout`` (HTML) shows ‖g_acc − g_big‖ / ‖g_big‖ and, for BatchNorm, how far the
    running statistics moved; ``.plot`` (PNG) draws the gap against every K and the first BN
    layer's running means; ``.last`` holds the numbers shown. Every pass runs on a copy of a
    model built once, so the widget's models never change.
    """

    css_prefix, css_box = "llmlab-accumulation", "llmlab-accumulation-explorer"
    _LABELS = {"linear": "linear + MSE", "cnn_bn": "CNN + BatchNorm", "cnn_gn": "CNN + GroupNorm"}

    def __init__(self, *, batch_size: int = 32, steps: int = 4, kind: str = "cnn_bn", scale_loss: bool = True,
                 seed: int = 0):
        super().__init__()
        self.batch_size = check_int("batch_size", batch_size, low=1)
        options = divisors(batch_size)
        if check_int("steps", steps, low=1) not in options:
            raise ValueError(f"steps must divide batch_size={batch_size}: one of {options}, got {steps}")
        check_choice("kind", kind, KINDS)
        self._problems = {k: (make_model(k, seed=seed), loss_fn_for(k), *make_batch(k, batch_size, seed=seed)) for k in KINDS}
        self._cache: dict[tuple[str, int, bool], AccumulationResult] = {}
        self.steps = W.SelectionSlider(options=options, value=steps, description="steps K", continuous_update=False)
        self.model_kind = W.Dropdown(options=[(self._LABELS[k], k) for k in KINDS], value=kind, description="model")
        self.scale_loss = W.Checkbox(value=scale_loss, description="divide loss by steps")
        self._add_plot()
        self._assemble(W.VBox([W.HBox([self.model_kind, self.steps, self.scale_loss]), self.readout, self.plot]),
                       steps=self.steps, model_kind=self.model_kind, scale_loss=self.scale_loss)
        self._watch(self.steps, self.model_kind, self.scale_loss)
        self.refresh()

    def _pass(self, kind: str, steps: int, scale_loss: bool) -> AccumulationResult:
        """One accumulated step of model ``kind`` (cached: each setting runs once)."""
        key = (kind, steps, scale_loss)
        if key not in self._cache:
            model, loss_fn, x, y = self._problems[kind]
            self._cache[key] = accumulation_pass(model, loss_fn, x, y, steps, scale_loss=scale_loss)
        return self._cache[key]

    def refresh(self) -> None:
        """Compare K micro-batches with one big batch at the controls' settings; redraw."""
        kind, K, scale = self.model_kind.value, self.steps.value, self.scale_loss.value
        big, acc = self._pass(kind, 1, True), self._pass(kind, K, scale)
        grad_gap = relative_difference(acc.grads, big.grads)
        stats_gap = relative_difference(acc.running_stats, big.running_stats) if big.running_stats else None
        self.last = {"kind": kind, "steps": K, "scale_loss": scale, "grad_difference": grad_gap,
                     "running_stats_difference": stats_gap}
        if grad_gap < 1e-5:
            verdict = "equal to rounding"
        elif not scale and abs(grad_gap - (K - 1)) < 1e-3 * K:
            verdict = f"= K &minus; 1: the gradient is {K}&times; too large"
        else:
            verdict = "a different gradient"
        stats_line = ("this model has no BatchNorm, hence no running statistics" if stats_gap is None else
                      f"BN running stats after one step from the zero start, {K} update(s) vs 1: relative difference "
                      f"<b>{stats_gap:.3g}</b> (a start-up transient that fades over training, notebook 04 §3)")
        self.readout.value = (
            f"<b>{self._LABELS[kind]}</b>, batch {self.batch_size} = {K} &times; {self.batch_size // K}, "
            f"loss {'divided' if scale else '<i>not</i> divided'} by K<br>"
            f"&Vert;g<sub>acc</sub> &minus; g<sub>big</sub>&Vert; / &Vert;g<sub>big</sub>&Vert; = "
            f"<b>{grad_gap:.3g}</b> ({verdict})<br>{stats_line}"
        )
        self._draw(big, acc)

    def _draw(self, big: AccumulationResult, acc: AccumulationResult) -> None:
        """Left: the gradient gap for every K > 1 (current K marked); right: the first BN layer's running mean."""
        kind, K, scale = self.last["kind"], self.last["steps"], self.last["scale_loss"]
        ks = [k for k in self.steps.options if k > 1]
        gaps = [relative_difference(self._pass(kind, k, scale).grads, big.grads) for k in ks]
        with self._figure(7.0, 2.6) as fig:
            ax_g, ax_s = fig.subplots(1, 2)
            floor = 1e-9  # fixed axis so switching model or checkbox shows the jump; rounding sits below 1e-6
            ax_g.plot(ks, [max(g, floor) for g in gaps], "o-")
            ax_g.axhspan(floor, 1e-6, color="0.9", zorder=0, label="rounding (float32)")
            ax_g.set_xscale("log", base=2)
            ax_g.set_yscale("log")
            ax_g.set_ylim(floor / 2, 2.0 * self.batch_size)
            if K > 1:
                ax_g.plot([K], [max(self.last["grad_difference"], floor)], "o", color=PALETTE[1], markersize=9,
                          label=f"K = {K}")
            ax_g.legend(fontsize=8, loc="center right")
            ax_g.set(xlabel="accumulation steps K", ylabel="relative gradient gap", title="gradient")
            if self.last["running_stats_difference"] is None:
                ax_s.text(0.5, 0.5, "no BatchNorm,\nno running statistics", ha="center", va="center")
                ax_s.set_axis_off()
            else:
                name = next(iter(big.running_stats))  # first BN layer's running_mean
                channels = range(len(big.running_stats[name]))
                ax_s.plot(channels, big.running_stats[name].cpu(), "o-", label="1 big batch")
                ax_s.plot(channels, acc.running_stats[name].cpu(), "s--", label=f"{K} micro-batches")
                ax_s.set(xlabel="channel", ylabel="running mean", title="first BatchNorm: running mean\nafter one step from 0 (transient)")
                ax_s.legend(fontsize=8)


def accumulation_explorer(**kwargs) -> AccumulationExplorer:
    """The notebook 04 widget: see :class:`AccumulationExplorer` (keywords: batch_size, steps, kind, scale_loss,
    seed)."""
    return AccumulationExplorer(**kwargs)
