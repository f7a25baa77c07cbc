"""Notebook 12: the number of ranks N and the model size -> model-state memory per rank and the all-reduce cost."""

from __future__ import annotations

import ipywidgets as W

from .._checks import check_choice, check_float
from ..display import html_table
from ..distributed.comm import crossover_tokens, step_estimate
from ..distributed.ledger import STAGES, sharded_ledger
from ..memory import PRECISIONS
from ..plotting import PALETTE
from .base import LabWidget, _choice_slider, _log_slider

__all__ = ["DataParallelWidget", "data_parallel_widget", "RANK_OPTIONS"]

#: The numbers of ranks the slider offers.
RANK_OPTIONS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_GB = 1e9
_STAGE_NAMES = {"ddp": "DDP", "zero1": "ZeRO-1", "zero2": "ZeRO-2", "zero3": "ZeRO-3 / FSDP"}
#: What each precision means for the model states and for the gradients the all-reduce sends.
_LAYOUTS = {"mixed": "bf16 weights and gradients, fp32 master weights and Adam states, as in the ZeRO paper; "
                     "a bf16 gradient all-reduce",
            "fp32": "fp32 weights, gradients and Adam states, as in plain fp32 or torch.autocast training; "
                    "an fp32 gradient all-reduce"}


class DataParallelWidget(LabWidget):
    """Ranks N, model size, precision and link speed: the model states each rank holds under DDP and the
    three ZeRO stages, and what the gradient all-reduce costs.

    ``.ranks`` (SelectionSlider over :data:`RANK_OPTIONS`), ``.params_b`` (billions of parameters),
    ``.precision`` (``"mixed"``: bf16 weights and gradients with fp32 master weights, the ZeRO paper's layout;
    ``"fp32"``: fp32 weights and gradients, which is also what ``torch.autocast`` keeps; AdamW either way) and ``.link_gbit_s`` (each rank's link, Gbit/s)
    are the controls. ``.readout`` (HTML) shows the per-rank ledger of
    :func:`llmlab.distributed.sharding.sharded_ledger` against ``device_gb`` and the ring all-reduce of
    :func:`llmlab.distributed.step_estimate`; ``.plot`` draws the per-rank bytes per stage (bars) and
    against N (lines). ``.last`` holds ``ledgers`` {stage: StateLedger}, ``fits`` {stage: bool},
    ``step`` (the StepEstimate) and ``crossover_tokens``.
    """

    css_prefix, css_box = "llmlab-data-parallel", "llmlab-data-parallel-widget"

    def __init__(self, *, ranks: int = 8, params_b: float = 7.0, precision: str = "mixed", link_gbit_s: float = 400.0,
                 device_gb: float = 80.0, tokens_per_rank: int = 8 * 4096, flops_per_s: float = 400e12):
        super().__init__()
        check_choice("precision", precision, PRECISIONS)
        self.device_gb = check_float("device_gb", device_gb, low=0, low_open=True)
        # tokens_per_rank, flops_per_s: step_estimate checks them in the first refresh() below
        self.tokens_per_rank, self.flops_per_s = tokens_per_rank, flops_per_s
        self.ranks = _choice_slider("ranks", ranks, RANK_OPTIONS, description="ranks N", continuous_update=False)
        self.params_b = _log_slider("params_b", params_b, low=0.01, high=10000, step=0.05, description="params (B)",
                                         readout_format=".3g", continuous_update=False)
        self.precision = W.Dropdown(options=list(PRECISIONS), value=precision, description="precision")
        self.link_gbit_s = _log_slider("link_gbit_s", link_gbit_s, low=1, high=100000, step=0.05,
                                            description="link (Gb/s)", readout_format=".4g", continuous_update=False)
        self._add_plot()
        self._assemble(W.VBox([W.HBox([self.ranks, self.params_b]), W.HBox([self.precision, self.link_gbit_s]),
                               self.readout, self.plot]),
                       ranks=self.ranks, params_b=self.params_b, precision=self.precision, link_gbit_s=self.link_gbit_s)
        self._watch(self.ranks, self.params_b, self.precision, self.link_gbit_s)
        self.refresh()

    def refresh(self) -> None:
        """Recompute the per-rank ledgers and the all-reduce estimate; redraw."""
        n, params, prec = self.ranks.value, int(round(self.params_b.value * 1e9)), self.precision.value
        ledgers = {s: sharded_ledger(params, n, s, precision=prec) for s in STAGES}
        fits = {s: led.total <= self.device_gb * _GB for s, led in ledgers.items()}
        grad_bytes = 2 if prec == "mixed" else 4
        step = step_estimate(params, n, link_gbit_s=self.link_gbit_s.value, flops_per_s=self.flops_per_s,
                             tokens_per_rank=self.tokens_per_rank, bytes_per_grad=grad_bytes)
        t_star = crossover_tokens(n, link_gbit_s=self.link_gbit_s.value, flops_per_s=self.flops_per_s,
                                  bytes_per_grad=grad_bytes)
        self.last = {"ranks": n, "params": params, "precision": prec, "ledgers": ledgers, "fits": fits, "step": step,
                     "crossover_tokens": t_star}
        rows = [[_STAGE_NAMES[s], f"{led.weights / _GB:.1f}", f"{led.grads / _GB:.1f}",
                 f"{(led.master_weights + led.optimizer_states) / _GB:.1f}", f"{led.total / _GB:.1f}",
                 f"{led.total / params:.2f}", "yes" if fits[s] else "NO"] for s, led in ledgers.items()]
        comm = ("no all-reduce with a single rank" if n == 1 else
                f"ring all-reduce of {step.grad_bytes / _GB:.1f} GB of gradients: each rank sends "
                f"2&middot;{n - 1}/{n} &times; that = <b>{step.bytes_sent / _GB:.1f} GB</b>, "
                f"<b>{step.comm_seconds:.3g} s</b> at {self.link_gbit_s.value:.4g} Gb/s; compute of "
                f"{self.tokens_per_rank} tokens per rank: {step.compute_seconds:.3g} s at "
                f"{self.flops_per_s / 1e12:.0f} TFLOP/s. Communication exceeds compute below "
                f"<b>{t_star:,.0f} tokens per rank</b> per step.")
        layout = _LAYOUTS[prec]
        self.readout.value = (
            f"<b>{params / 1e9:.3g} B parameters, AdamW, {prec} precision, N = {n} ranks</b> ({layout}): model states "
            f"per rank (GB), device memory {self.device_gb:.0f} GB"
            + html_table(["", "weights", "grads", "optimizer (+ master)", "total", "B/param", "fits"], rows)
            + comm)
        self._draw()

    def _draw(self) -> None:
        n, params, prec = self.last["ranks"], self.last["params"], self.last["precision"]
        with self._figure(8.0, 2.8) as fig:
            ax_bar, ax_n = fig.subplots(1, 2)
            parts = (("weights", lambda l: l.weights), ("grads", lambda l: l.grads),
                     ("optimizer (+ master)", lambda l: l.master_weights + l.optimizer_states))
            bottom = [0.0] * len(STAGES)
            for i, (label, get) in enumerate(parts):
                values = [get(self.last["ledgers"][s]) / _GB for s in STAGES]
                ax_bar.bar(range(len(STAGES)), values, bottom=bottom, color=PALETTE[i], label=label)
                bottom = [b + v for b, v in zip(bottom, values)]
            ax_bar.axhline(self.device_gb, color="k", linestyle=":", label=f"{self.device_gb:.0f} GB device")
            ax_bar.set_xticks(range(len(STAGES)), [_STAGE_NAMES[s] for s in STAGES], fontsize=8)
            ax_bar.set(ylabel="GB per rank", title=f"N = {n}")
            ax_bar.legend(fontsize=7)
            for i, s in enumerate(STAGES):
                totals = [sharded_ledger(params, k, s, precision=prec).total / _GB for k in RANK_OPTIONS]
                ax_n.plot(RANK_OPTIONS, totals, "o-", markersize=3, color=PALETTE[i], label=_STAGE_NAMES[s])
            ax_n.axhline(self.device_gb, color="k", linestyle=":")
            ax_n.axvline(n, color="0.6", linewidth=1)
            ax_n.set_xscale("log", base=2)
            ax_n.set_yscale("log")
            ax_n.set(xlabel="ranks N", ylabel="GB per rank", title="model states per rank")
            ax_n.legend(fontsize=7)


def data_parallel_widget(**kwargs) -> DataParallelWidget:
    """The notebook 12 widget: see :class:`DataParallelWidget` (keywords: ranks, params_b, precision,
    link_gbit_s, device_gb, tokens_per_rank, flops_per_s)."""
    return DataParallelWidget(**kwargs)
