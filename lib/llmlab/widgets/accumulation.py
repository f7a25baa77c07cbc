"""Notebook 04: accumulation steps K, the model, "divide the loss by K", and whether N or b is held fixed."""

from __future__ import annotations

import ipywidgets as W

from .._checks import check_choice, check_int
from ..accumulation import (KINDS, accumulated_grads, divisors, full_batch_grads, loss_fn_for, make_batch,
                            make_model, relative_difference)
from ..plotting import PALETTE
from .base import LabWidget

__all__ = ["AccumulationExplorer", "accumulation_explorer"]

_N_BATCHES = 8  # batch seeds offered (and spanned by the shaded band): seed ... seed + 7


class AccumulationExplorer(LabWidget):
    """Accumulation steps K, the model, "divide loss by K", and which size is held fixed: the gradient gap, live.

    Controls: ``.steps`` (SelectionSlider over the divisors of ``batch_size``), ``.model_kind`` (Dropdown:
    linear + MSE, CNN + BatchNorm, CNN + GroupNorm), ``.scale_loss`` (Checkbox), ``.hold`` (ToggleButtons:
    hold the big batch at N = ``batch_size`` so that b = N / K, or hold the micro-batch at b = ``micro_batch``
    so that N = b·K) and ``.batch`` (IntSlider: which of 8 random batches, seeds ``seed`` ... ``seed + 7``).
    ``.readout`` (HTML) shows ‖g_acc − g_big‖ / ‖g_big‖ for that batch and its range over the 8 batches under
    both choices; ``.plot`` (PNG) draws the gap against K under both choices, the chosen batch as a line and the
    range over the 8 batches as a band. ``.last`` holds the numbers shown. The model (seed ``seed``) is built
    once and every pass runs on a copy of it, so it never changes; results are cached.
    """

    css_prefix, css_box = "llmlab-accumulation", "llmlab-accumulation-explorer"
    _LABELS = {"linear": "linear + MSE", "cnn_bn": "CNN + BatchNorm", "cnn_gn": "CNN + GroupNorm"}

    def __init__(self, *, batch_size: int = 32, steps: int = 4, kind: str = "cnn_bn", scale_loss: bool = True,
                 seed: int = 0, micro_batch: int = 8, hold: str = "N"):
        super().__init__()
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.micro_batch = check_int("micro_batch", micro_batch, low=1)
        options = divisors(batch_size)
        if check_int("steps", steps, low=1) not in options:
            raise ValueError(f"steps must divide batch_size={batch_size}: one of {options}, got {steps}")
        check_choice("kind", kind, KINDS)
        check_choice("hold", hold, ("N", "b"))
        self.seed = check_int("seed", seed, low=0)
        self._models = {k: (make_model(k, seed=seed), loss_fn_for(k)) for k in KINDS}
        self._data: dict = {}
        self._full: dict = {}
        self._gaps: dict = {}
        self.steps = W.SelectionSlider(options=options, value=steps, description="steps K", continuous_update=False)
        self.model_kind = W.Dropdown(options=[(self._LABELS[k], k) for k in KINDS], value=kind, description="model")
        self.scale_loss = W.Checkbox(value=scale_loss, description="divide loss by steps")
        self.hold = W.ToggleButtons(options=[(f"N = {batch_size}, b = N/K", "N"), (f"b = {micro_batch}, N = b·K", "b")],
                                    value=hold, description="hold fixed")
        self.batch = W.IntSlider(min=seed, max=seed + _N_BATCHES - 1, value=seed, description="batch seed",
                                 continuous_update=False)
        self._add_plot()
        self._assemble(W.VBox([W.HBox([self.model_kind, self.steps, self.scale_loss]), W.HBox([self.hold, self.batch]),
                               self.readout, self.plot]),
                       steps=self.steps, model_kind=self.model_kind, scale_loss=self.scale_loss, hold=self.hold,
                       batch=self.batch)
        self._watch(self.steps, self.model_kind, self.scale_loss, self.hold, self.batch)
        self.refresh()

    def _n(self, hold: str, steps: int) -> int:
        """The big batch's size N under ``hold`` at K = ``steps``."""
        return self.batch_size if hold == "N" else self.micro_batch * steps

    def gap(self, kind: str, hold: str, steps: int, batch_seed: int, scale_loss: bool = True) -> float:
        """‖g_acc − g_big‖ / ‖g_big‖ for K = ``steps`` on batch ``batch_seed`` (cached)."""
        n = self._n(hold, steps)
        key = (kind, n, steps, batch_seed, scale_loss)
        if key not in self._gaps:
            model, loss_fn = self._models[kind]
            if (kind, n, batch_seed) not in self._data:
                x, y = make_batch(kind, n, seed=batch_seed)
                self._data[kind, n, batch_seed] = (x, y)
                self._full[kind, n, batch_seed] = full_batch_grads(model, loss_fn, x, y)
            x, y = self._data[kind, n, batch_seed]
            acc = accumulated_grads(model, loss_fn, x, y, steps, scale_loss=scale_loss)
            self._gaps[key] = relative_difference(acc, self._full[kind, n, batch_seed])
        return self._gaps[key]

    def _range(self, kind: str, hold: str, steps: int, scale: bool) -> tuple[float, float]:
        gaps = [self.gap(kind, hold, steps, s, scale) for s in range(self.seed, self.seed + _N_BATCHES)]
        return min(gaps), max(gaps)

    def refresh(self) -> None:
        """Compare K micro-batches with one big batch at the controls' settings; redraw."""
        kind, K, scale = self.model_kind.value, self.steps.value, self.scale_loss.value
        hold, batch_seed = self.hold.value, self.batch.value
        other = "b" if hold == "N" else "N"
        grad_gap = self.gap(kind, hold, K, batch_seed, scale)
        ranges = {h: self._range(kind, h, K, scale) for h in ("N", "b")}
        n = self._n(hold, K)
        self.last = {"kind": kind, "steps": K, "scale_loss": scale, "hold": hold, "batch_seed": batch_seed,
                     "batch_size": n, "micro_batch": n // K, "grad_difference": grad_gap, "range": ranges[hold],
                     "other_range": ranges[other]}
        if grad_gap < 1e-5:
            verdict = "equal to rounding"
        elif not scale and abs(grad_gap - (K - 1)) < 1e-3 * K:
            verdict = f"= K &minus; 1: the gradient is {K}&times; too large"
        else:
            verdict = "a different gradient"
        n_other = self._n(other, K)
        self.readout.value = (
            f"<b>{self._LABELS[kind]}</b>, batch seed {batch_seed}: N = {n} = {K} &times; {n // K} "
            f"({'N' if hold == 'N' else 'b'} held fixed), loss {'divided' if scale else '<i>not</i> divided'} by K<br>"
            f"&Vert;g<sub>acc</sub> &minus; g<sub>big</sub>&Vert; / &Vert;g<sub>big</sub>&Vert; = "
            f"<b>{grad_gap:.3g}</b> ({verdict})<br>"
            f"range over batch seeds {self.seed}&ndash;{self.seed + _N_BATCHES - 1} at K = {K}: "
            f"<b>{ranges[hold][0]:.3g}&ndash;{ranges[hold][1]:.3g}</b> (N = {n}, b = {n // K}); "
            f"with {'b' if other == 'b' else 'N'} held instead (N = {n_other}, b = {n_other // K}): "
            f"{ranges[other][0]:.3g}&ndash;{ranges[other][1]:.3g}"
        )
        self._draw()

    def _draw(self) -> None:
        """The gradient gap against K > 1 under both choices: the chosen batch as a line, the 8 batches as a band."""
        kind, K, scale, hold, batch_seed = (self.last[k] for k in ("kind", "steps", "scale_loss", "hold", "batch_seed"))
        ks = [k for k in self.steps.options if k > 1]
        floor = 1e-9  # rounding sits below 1e-6; the axis reaches down to it whenever a gap is at rounding level
        ranges = {h: [self._range(kind, h, k, scale) for k in ks] for h in ("N", "b")}
        at_rounding = min(lo for r in ranges.values() for lo, _ in r) < 1e-5
        with self._figure(8.0, 3.0) as fig:
            ax = fig.subplots()
            if at_rounding:
                ax.axhspan(floor, 1e-6, color="0.92", zorder=0, label="rounding (float32)")
            for h, color in (("N", PALETTE[0]), ("b", PALETTE[2])):
                label = f"N = {self.batch_size}, b = N/K" if h == "N" else f"b = {self.micro_batch}, N = b·K"
                ranges_h = ranges[h]
                ax.fill_between(ks, [max(lo, floor) for lo, _ in ranges_h], [max(hi, floor) for _, hi in ranges_h],
                                color=color, alpha=0.18, lw=0)
                ax.plot(ks, [max(self.gap(kind, h, k, batch_seed, scale), floor) for k in ks],
                        "o-" if h == hold else "s:", color=color, lw=2 if h == hold else 1,
                        label=f"{label}: batch seed {batch_seed} (band: seeds {self.seed}–{self.seed + _N_BATCHES - 1})")
            if K > 1:
                ax.plot([K], [max(self.last["grad_difference"], floor)], "o", color=PALETTE[1], markersize=9,
                        label=f"K = {K}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            top = max(hi for r in ranges.values() for _, hi in r)
            ax.set_ylim(floor / 2 if at_rounding else 0.03, 2.0 * max(top, 1.0))
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.minorticks_off()
            ax.set(xlabel="accumulation steps K", ylabel="‖g_acc − g_big‖ / ‖g_big‖", title="accumulated vs big-batch gradient")
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))


def accumulation_explorer(**kwargs) -> AccumulationExplorer:
    """The notebook 04 widget: see :class:`AccumulationExplorer` (keywords: batch_size, steps, kind, scale_loss,
    seed, micro_batch, hold)."""
    return AccumulationExplorer(**kwargs)
