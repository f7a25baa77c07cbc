"""Notebook 03: slide t_max, eta_min and the warm-up; llmlab's LR curves with PyTorch's and HF's on top."""

from __future__ import annotations

import ipywidgets as W
from torch.optim.lr_scheduler import CosineAnnealingLR

from .._checks import check_float, check_int
from ..plotting import PALETTE
from ..schedules import cosine_annealing, torch_trace, warmup_cosine
from .base import LabWidget

__all__ = ["CosineExplorer", "cosine_explorer"]


class CosineExplorer(LabWidget):
    """Slide t_max, eta_min and the warm-up and watch the LR curve, PyTorch's values on top (topic 3).

    Controls: ``.t_max`` (IntSlider), ``.eta_min`` (FloatSlider, 0..``base_lr``) and
    ``.warmup`` (IntSlider, warm-up steps; clipped to t_max). Left panel: :func:`cosine_annealing`
    (line) and ``torch.optim.lr_scheduler.CosineAnnealingLR`` (dots) over 3·t_max steps, past
    t_max where it climbs back up. Right panel: :func:`warmup_cosine` with ``total_steps = t_max``
    (line) and Hugging Face's ``get_cosine_with_min_lr_schedule_with_warmup`` (dots) over
    0..t_max. Readout ``.readout`` (HTML): the settings, the max |ours − PyTorch| of each panel and
    the LR at 2·t_max; the same numbers are in ``.last`` and in ``.max_diff_cosine``,
    ``.max_diff_warmup``, ``.lr_at_2t_max``. The picture is ``.plot`` (a PNG).
    """

    css_prefix, css_box = "llmlab-schedules", "llmlab-cosine-explorer"
    READOUT = ("t_max = {t_max} · eta_min = {eta_min:.2f} · warm-up = {warmup}{clip}<br>"
               "CosineAnnealingLR: max |closed form − PyTorch| = {max_diff_cosine:.1e} over {n_cosine} steps; "
               "LR at 2·t_max = {lr_at_2t_max:.4f} (back at base_lr = {base_lr:g})<br>"
               "warm-up + cosine: max |ours − Hugging Face| = {max_diff_warmup:.1e} over {n_warmup} steps")

    def __init__(self, *, base_lr=1.0, t_max=50, eta_min=0.1, warmup=10, max_t_max=200, width=820):
        super().__init__()
        self.base_lr = check_float("base_lr", base_lr, low=0.0, low_open=True)
        max_t_max = check_int("max_t_max", max_t_max, low=2)
        t_max = check_int("t_max", t_max, low=2, high=max_t_max)
        eta_min = check_float("eta_min", eta_min, low=0.0, high=self.base_lr)
        warmup = check_int("warmup", warmup, low=0, high=max_t_max)
        width = check_int("width", width, low=1)
        self.t_max = W.IntSlider(value=t_max, min=2, max=max_t_max, step=1, description="t_max",
                                 continuous_update=False, layout=W.Layout(width="300px"))
        self.eta_min = W.FloatSlider(value=eta_min, min=0.0, max=self.base_lr, step=0.05 * self.base_lr,
                                     description="eta_min", continuous_update=False, layout=W.Layout(width="300px"))
        self.warmup = W.IntSlider(value=warmup, min=0, max=max_t_max, step=1, description="warm-up",
                                  continuous_update=False, layout=W.Layout(width="300px"))
        self._add_plot(width)
        self._assemble(W.VBox([W.HBox([self.t_max, self.eta_min, self.warmup]), self.readout, self.plot]),
                       t_max=self.t_max, eta_min=self.eta_min, warmup=self.warmup)
        self._watch(self.t_max, self.eta_min, self.warmup)
        self.refresh()

    def curves(self):
        """(steps, ours, PyTorch) for both panels at the current slider values, as two tuples."""
        # transformers takes seconds to import: only when the widget is used
        from transformers import get_cosine_with_min_lr_schedule_with_warmup

        t_max, eta_min, base_lr = self.t_max.value, min(self.eta_min.value, self.base_lr), self.base_lr
        warmup = min(self.warmup.value, t_max)
        n_cos = 3 * t_max + 1
        ours_cos = [cosine_annealing(t, base_lr=base_lr, t_max=t_max, eta_min=eta_min) for t in range(n_cos)]
        torch_cos = torch_trace(lambda o: CosineAnnealingLR(o, T_max=t_max, eta_min=eta_min), n_cos, base_lr=base_lr)
        n_warm = t_max + 1
        ours_warm = [warmup_cosine(t, base_lr=base_lr, warmup_steps=warmup, total_steps=t_max, min_lr=eta_min)
                     for t in range(n_warm)]
        hf_warm = torch_trace(lambda o: get_cosine_with_min_lr_schedule_with_warmup(o, warmup, t_max, min_lr=eta_min),
                              n_warm, base_lr=base_lr)
        if warmup == t_max:  # HF's zero-length decay sits at base_lr on the last step; ours at min_lr
            hf_warm[-1] = ours_warm[-1]
        return (list(range(n_cos)), ours_cos, torch_cos), (list(range(n_warm)), ours_warm, hf_warm)

    def _draw(self, cos, warm) -> None:
        with self._figure(9.0, 3.3) as fig:
            ax1, ax2 = fig.subplots(1, 2)
            for ax, (steps, ours, ref), name, ref_name in (
                    (ax1, cos, "cosine_annealing", "CosineAnnealingLR"),
                    (ax2, warm, "warmup_cosine", "Hugging Face")):
                every = max(1, len(steps) // 40)
                ax.plot(steps, ours, color=PALETTE[0], label=f"llmlab {name}")
                ax.plot(steps[::every], ref[::every], "o", ms=3.5, color=PALETTE[1], label=ref_name)
                ax.set_xlabel("step")
                ax.set_ylim(-0.05 * self.base_lr, 1.08 * self.base_lr)
                ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8)
            ax1.set_ylabel("learning rate")
            ax1.axvline(self.t_max.value, color="0.5", lw=1, ls="--")
            ax1.set_title("no restart: past t_max (dashed) it climbs back")
            ax2.set_title("linear warm-up, cosine to the floor")

    def refresh(self) -> None:
        """Recompute both schedules and PyTorch's, update readout and picture (one slider step)."""
        cos, warm = self.curves()
        t_max = self.t_max.value
        self.last = {
            "t_max": t_max, "eta_min": self.eta_min.value, "warmup": min(self.warmup.value, t_max),
            "max_diff_cosine": max(abs(a - b) for a, b in zip(cos[1], cos[2])),
            "max_diff_warmup": max(abs(a - b) for a, b in zip(warm[1], warm[2])),
            "lr_at_2t_max": cos[2][2 * t_max], "n_cosine": len(cos[0]), "n_warmup": len(warm[0]),
        }
        self.readout.value = self.READOUT.format(
            **self.last, clip=" (clipped to t_max)" if self.warmup.value > t_max else "", base_lr=self.base_lr)
        self._draw(cos, warm)

    @property
    def max_diff_cosine(self) -> float:
        """max |cosine_annealing − CosineAnnealingLR| over the left panel's steps."""
        return self.last["max_diff_cosine"]

    @property
    def max_diff_warmup(self) -> float:
        """max |warmup_cosine − Hugging Face| over the right panel's steps."""
        return self.last["max_diff_warmup"]

    @property
    def lr_at_2t_max(self) -> float:
        """PyTorch's CosineAnnealingLR at step 2·t_max (back at base_lr: no restart, it climbs)."""
        return self.last["lr_at_2t_max"]


def cosine_explorer(**kwargs) -> CosineExplorer:
    """Build the notebook-03 widget; see :class:`CosineExplorer` for the arguments."""
    return CosineExplorer(**kwargs)
