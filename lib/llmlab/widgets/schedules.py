"""Notebook 03: choose a peak, t_max, eta_min and the warm-up; train under that schedule and see its effect."""

from __future__ import annotations

import ipywidgets as W

from .._checks import check_float, check_int
from ..plotting import PALETTE
from ..schedules import ScheduleComparison, compare_schedules, cosine_annealing
from .base import LabWidget, _float_slider, _int_slider

__all__ = ["CosineExplorer", "cosine_explorer"]


class CosineExplorer(LabWidget):
    """Train the notebook-03 regression under a warm-up + cosine schedule and under a constant rate, live.

    Controls: ``.peak`` (SelectionSlider of peak learning rates), ``.t_max`` (IntSlider, the
    cosine's T_max in updates; the run lasts ``steps`` updates, so t_max < steps − warm-up makes
    the rate climb back up before the end), ``.eta_min`` (FloatSlider, the floor as a fraction of
    the peak) and ``.warmup`` (IntSlider, warm-up updates). Each move trains both schedules on the
    same ``seeds`` (same data, initial models and mini-batches: :func:`compare_schedules`).
    Left panel: the two learning-rate schedules. Right panel: held-out MSE (solid) and
    training MSE (dotted), mean over the seeds, with the noise floor. Readout ``.readout``: the
    final held-out and training MSE of both, their ratio and on how many seeds the schedule was
    lower; the same numbers in ``.last``; the runs in ``.runs``. The constant rate gets the same linear
    warm-up as the cosine (so the two differ only after it); its run is cached per (peak, warm-up).
    """

    css_prefix, css_box = "llmlab-schedules", "llmlab-cosine-explorer"
    PEAKS = (0.003, 0.01, 0.03, 0.05, 0.1)
    READOUT = ("peak {peak:g} · t_max = {t_max} · eta_min = {eta_min:.2f} × peak · warm-up = {warmup} "
               "· {steps} updates, {n_seeds} seeds<br>"
               "final held-out MSE: cosine {test_cosine:.3f} vs constant {test_constant:.3f} "
               "(ratio {test_ratio:.2f}; cosine lower on {wins} of {n_seeds} seeds) · noise floor {floor:.3f}<br>"
               "final training MSE: cosine {train_cosine:.3f} vs constant {train_constant:.3f}"
               "{memorised}")

    def __init__(self, *, peak=0.05, t_max=380, eta_min=0.0, warmup=20, steps=400, seeds=4, eval_every=10,
                 width=820):
        super().__init__()
        peak = check_float("peak", peak, low=0.0, low_open=True, high=1.0)
        self.n_steps = check_int("steps", steps, low=10, high=5000)
        self.seeds = tuple(range(check_int("seeds", seeds, low=1, high=32)))
        self.eval_every = check_int("eval_every", eval_every, low=1)
        width = check_int("width", width, low=1)
        peaks = tuple(sorted(set(self.PEAKS) | {peak}))
        self.peak = W.SelectionSlider(options=peaks, value=peak, description="peak lr", continuous_update=False,
                                      layout=W.Layout(width="260px"))
        self.t_max = _int_slider("t_max", t_max, low=1, high=2 * self.n_steps, step=1, description="t_max",
                                 continuous_update=False, layout=W.Layout(width="260px"))
        self.eta_min = _float_slider("eta_min", eta_min, low=0.0, high=1.0, step=0.05, description="eta_min/peak",
                                     continuous_update=False, layout=W.Layout(width="260px"))
        self.warmup = _int_slider("warmup", warmup, low=0, high=self.n_steps // 2, step=5, description="warm-up",
                                  continuous_update=False, layout=W.Layout(width="260px"))
        self._constant: dict[tuple[float, int], ScheduleComparison] = {}
        self._add_plot(width)
        controls = W.VBox([W.HBox([self.peak, self.t_max]), W.HBox([self.eta_min, self.warmup])])
        self._assemble(W.VBox([controls, self.readout, self.plot]),
                       peak=self.peak, t_max=self.t_max, eta_min=self.eta_min, warmup=self.warmup)
        self._watch(self.peak, self.t_max, self.eta_min, self.warmup)
        self.refresh()

    def schedules(self) -> dict[str, list[float]]:
        """The two schedules at the current settings: ``{"cosine": [...], "constant": [...]}``, one rate per update."""
        peak, warmup, t_max = self.peak.value, self.warmup.value, self.t_max.value
        eta_min = self.eta_min.value * peak
        # Linear warm-up from 0, then PyTorch's CosineAnnealingLR (what LambdaLR(t / warmup) + CosineAnnealingLR
        # chained by SequentialLR do; LinearLR cannot start from 0): past t_max of its own steps the cosine
        # climbs back up; it never stops.
        cosine = [peak * t / warmup if t < warmup else
                  cosine_annealing(t - warmup, base_lr=peak, t_max=t_max, eta_min=eta_min) for t in range(self.n_steps)]
        constant = [peak * t / warmup if t < warmup else peak for t in range(self.n_steps)]
        return {"cosine": cosine, "constant": constant}

    def _draw(self, runs: dict[str, ScheduleComparison]) -> None:
        with self._figure(9.0, 3.3) as fig:
            ax1, ax2 = fig.subplots(1, 2)
            colors = {"cosine": PALETTE[0], "constant": PALETTE[1]}
            for name, run in runs.items():
                ax1.plot(run.lrs[name], color=colors[name], label=name)
                ax2.plot(run.eval_steps, run.test[0].mean(0), color=colors[name], label=f"{name}, held-out")
                ax2.plot(run.eval_steps, run.train[0].mean(0), ":", color=colors[name], label=f"{name}, training")
            ax2.axhline(self.last["floor"], color="k", ls="--", lw=1, label="noise floor")
            end_of_cosine = self.warmup.value + self.t_max.value
            if end_of_cosine < self.n_steps:
                ax1.axvline(end_of_cosine, color="0.5", lw=1, ls=":")
                ax1.text(end_of_cosine, 0.5 * self.peak.value, " warm-up + t_max:\n the rate climbs", fontsize=7)
            ax1.set(xlabel="update", ylabel="learning rate", title="schedules", ylim=(0, 1.1 * self.peak.value))
            ax2.set(xlabel="update", ylabel=f"MSE (mean of {len(self.seeds)} seeds)", yscale="log",
                    title="held-out (solid) and training (dotted) loss")
            ticks = [0.1, 0.2, 0.3, 0.5, 1, 2]  # labelled ticks: the 0.2-0.5 range is where the runs end
            ax2.set_yticks(ticks, [f"{t:g}" for t in ticks])
            ax2.set_ylim(0.05, 3)
            ax2.set_yticks([], minor=True)
            ax1.legend(fontsize=8)
            ax2.legend(fontsize=7, loc="upper right")

    def _train(self, name: str, lrs: list[float]) -> ScheduleComparison:
        return compare_schedules({name: lrs}, seeds=self.seeds, eval_every=self.eval_every)

    def refresh(self) -> None:
        """Train the schedule at the current settings on every seed (the constant run once per peak and warm-up); redraw."""
        lrs = self.schedules()
        key = (self.peak.value, self.warmup.value)  # the constant run depends on these only
        if key not in self._constant:
            self._constant[key] = self._train("constant", lrs["constant"])
        self.runs = {"cosine": self._train("cosine", lrs["cosine"]), "constant": self._constant[key]}
        test = {name: run.final(name, "test") for name, run in self.runs.items()}
        train = {name: run.final(name, "train") for name, run in self.runs.items()}
        floor = float(self.runs["cosine"].noise_floor.mean())
        self.last = {
            "peak": self.peak.value, "t_max": self.t_max.value, "eta_min": self.eta_min.value,
            "warmup": self.warmup.value, "steps": self.n_steps, "n_seeds": len(self.seeds), "floor": floor,
            "test_cosine": float(test["cosine"].mean()), "test_constant": float(test["constant"].mean()),
            "train_cosine": float(train["cosine"].mean()), "train_constant": float(train["constant"].mean()),
            "wins": int((test["cosine"] < test["constant"]).sum()),
        }
        self.last["test_ratio"] = self.last["test_cosine"] / self.last["test_constant"]
        below = [name for name in self.runs if self.last[f"train_{name}"] < floor]
        memorised = (f"<br>training MSE below the noise floor ({', '.join(below)}): memorised noise, "
                     "judge by the held-out loss" if below else "")
        self.readout.value = self.READOUT.format(**self.last, memorised=memorised)
        self._draw(self.runs)


def cosine_explorer(**kwargs) -> CosineExplorer:
    """Build the notebook-03 widget; see :class:`CosineExplorer` for the arguments."""
    return CosineExplorer(**kwargs)
