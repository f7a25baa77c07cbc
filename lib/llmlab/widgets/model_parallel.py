"""Notebook 16: a pipeline schedule's timeline for p stages and m micro-batches, and the 3D-parallelism planner."""

from __future__ import annotations

import ipywidgets as W

from .._checks import check_choice
from ..display import html_table
from ..distributed.pipeline import SCHEDULES, bubble_fraction, peak_held_formula, simulate_schedule
from ..distributed.planner import MODEL_PRESETS, ClusterConfig, ModelConfig, plan_parallelism
from ..plotting import PALETTE
from .base import LabWidget, _choice_slider, _int_slider, _log_slider

__all__ = ["PipelineTimelineWidget", "pipeline_timeline_widget", "PlannerWidget", "planner_widget", "GPU_OPTIONS",
           "draw_timeline", "plan_label"]

#: GPU counts the planner's slider offers (powers of two: every split is then a power of two).
GPU_OPTIONS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


def plan_label(e) -> str:
    """``"8×16×32 b1"``: TP×PP×DP and the micro-batch size, ``"r"`` appended with recomputation."""
    return f"{e.tp}×{e.pp}×{e.dp} b{e.micro_batch}{' r' if e.recompute else ''}"


def draw_timeline(ax, timeline, *, title: str | None = None) -> None:
    """Draw a :class:`~llmlab.distributed.Timeline` (or a measured :class:`~llmlab.distributed.PipelineRun`'s
    actions): one row per stage, forwards blue, backwards orange, each labelled with its micro-batch."""
    for s, actions in enumerate(timeline.actions):
        for op, i, start, end in actions:
            color = PALETTE[0] if op == "F" else PALETTE[1]
            ax.barh(s, end - start, left=start, color=color, edgecolor="white", height=0.8)
            if timeline.micro_batches <= 12:     # labels beyond that overlap into a band
                ax.text((start + end) / 2, s, str(i), ha="center", va="center", fontsize=7, color="white")
    ax.set_yticks(range(timeline.stages), [f"stage {s}" for s in range(timeline.stages)])
    ax.invert_yaxis()
    ax.set_xlim(0, timeline.makespan)
    ax.set_xlabel("time (forward = 1)")
    ax.bar(0, 0, color=PALETTE[0], label="forward F(i)")
    ax.bar(0, 0, color=PALETTE[1], label="backward B(i)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False)
    if title:
        ax.set_title(title, fontsize=9)


class PipelineTimelineWidget(LabWidget):
    """Stages p, micro-batches m and the schedule: the timeline of :func:`simulate_schedule` (forward 1,
    backward 2), the bubble (p − 1)/(m + p − 1) and the micro-batches each stage holds at its peak.
    ``.last``: ``timeline``, ``bubble``, ``peak_held``."""

    css_prefix, css_box = "llmlab-pipeline", "llmlab-pipeline-widget"

    def __init__(self, *, stages: int = 4, micro_batches: int = 8, kind: str = "1f1b"):
        super().__init__()
        self.stages = _int_slider("stages", stages, low=1, high=16, description="stages p", continuous_update=False)
        self.micro_batches = _int_slider("micro_batches", micro_batches, low=1, high=64, description="micro-batches m",
                                         continuous_update=False)
        self.kind = W.Dropdown(options=list(SCHEDULES), value=check_choice("kind", kind, SCHEDULES) or kind,
                               description="schedule")
        self._add_plot()
        self._assemble(W.VBox([W.HBox([self.stages, self.micro_batches, self.kind]), self.readout, self.plot]),
                       stages=self.stages, micro_batches=self.micro_batches, kind=self.kind)
        self._watch(self.stages, self.micro_batches, self.kind)
        self.refresh()

    def refresh(self) -> None:
        p, m, kind = self.stages.value, self.micro_batches.value, self.kind.value
        timeline = simulate_schedule(kind, p, m)
        held = peak_held_formula(kind, p, m)
        self.last = {"timeline": timeline, "bubble": timeline.bubble, "peak_held": tuple(timeline.peak_held)}
        self.readout.value = (
            f"<b>{kind}, p = {p}, m = {m}</b>: each stage idles {timeline.idle[0]:g} of {timeline.makespan:g} time units: "
            f"bubble <b>{timeline.bubble:.1%}</b> = (p − 1)/(m + p − 1) = {bubble_fraction(kind, p, m):.1%}; "
            f"micro-batches held at the peak per stage: <b>{list(timeline.peak_held)}</b> "
            f"({'m' if kind == 'gpipe' else 'min(p − s, m)'} = {held}).")
        with self._figure(8.0, 0.5 + 0.45 * p) as fig:
            draw_timeline(fig.subplots(), timeline)


def pipeline_timeline_widget(**kwargs) -> PipelineTimelineWidget:
    """The notebook 16 timeline widget (keywords: stages, micro_batches, kind)."""
    return PipelineTimelineWidget(**kwargs)


class PlannerWidget(LabWidget):
    """Model, GPUs and the link between nodes: the fastest TP × PP × DP plans that fit (ZeRO-1, micro-batches
    of 1 or 2 sequences, with or without recomputation), their memory per GPU and their step time by part,
    and the model FLOPs utilisation of the fastest plan at each GPU count (at a fixed global batch, N× the GPUs give
    N× the speed only while it holds). ``.last``: ``plans`` (fitting, fastest first), ``best`` (or None),
    ``fastest`` {gpus: fastest fitting plan}, ``mfu`` {gpus: its MFU}."""

    css_prefix, css_box = "llmlab-planner", "llmlab-planner-widget"

    def __init__(self, *, model: str = "Llama 2 70B", gpus: int = 512, inter_node_gb_s: float = 50.0,
                 memory_gb: float = 80.0, peak_flops: float = 989e12, efficiency: float = 0.7):
        super().__init__()
        check_choice("model", model, tuple(MODEL_PRESETS))
        # memory_gb, peak_flops, efficiency: plan_parallelism checks them (as cluster.*) in the first refresh() below
        self.memory_gb, self.peak_flops, self.efficiency = memory_gb, peak_flops, efficiency
        self.model = W.Dropdown(options=list(MODEL_PRESETS), value=model, description="model")
        self.gpus = _choice_slider("gpus", gpus, GPU_OPTIONS, description="GPUs", continuous_update=False)
        self.inter_node_gb_s = _log_slider("inter_node_gb_s", inter_node_gb_s, low=1, high=1000, step=0.05,
                                                description="node link GB/s", readout_format=".3g",
                                                continuous_update=False)
        self._add_plot()
        self._assemble(W.VBox([W.HBox([self.model, self.gpus, self.inter_node_gb_s]), self.readout, self.plot]),
                       model=self.model, gpus=self.gpus, inter_node_gb_s=self.inter_node_gb_s)
        self._watch(self.model, self.gpus, self.inter_node_gb_s)
        self.refresh()

    def _cluster(self, gpus: int) -> ClusterConfig:
        return ClusterConfig(f"{gpus} GPUs", gpus=gpus, memory_gb=self.memory_gb, peak_flops=self.peak_flops,
                             efficiency=self.efficiency, inter_node_gb_s=self.inter_node_gb_s.value)

    def _fitting(self, model: ModelConfig, gpus: int):
        return [e for e in plan_parallelism(model, self._cluster(gpus), micro_batches=(1, 2)) if e.fits]

    def refresh(self) -> None:
        model, n = MODEL_PRESETS[self.model.value], self.gpus.value
        plans = self._fitting(model, n)
        best = plans[0] if plans else None
        fastest = {}                                      # GPU count -> its fastest plan that fits
        for g in GPU_OPTIONS:
            fit = self._fitting(model, g) if g != n else plans
            if fit:
                fastest[g] = fit[0]
        mfu = {g: e.mfu for g, e in fastest.items()}
        self.last = {"plans": plans, "best": best, "fastest": fastest, "mfu": mfu, "model": model, "gpus": n}
        if best is None:
            self.readout.value = (f"<b>{model.name} on {n} GPUs</b>: no configuration fits {self.memory_gb:.0f} GB "
                                  "per GPU (with the global batch of the preset): add GPUs.")
        else:
            rows = [[f"{e.tp}×{e.pp}×{e.dp}", str(e.micro_batch), "yes" if e.recompute else "no",
                     f"{e.memory_gb:.1f}", f"{e.step_s:.2f}", f"{e.bubble_s / e.step_s:.0%}",
                     f"{(e.tp_comm_s + e.pp_comm_s + e.dp_comm_s) / e.step_s:.0%}", f"{e.mfu:.0%}"] for e in plans[:5]]
            peak_g = max(mfu, key=mfu.get)
            self.readout.value = (
                f"<b>{model.name}, {model.global_batch} × {model.seq_len} tokens per step, on {n} GPUs</b> "
                f"({self.memory_gb:.0f} GB, {self.efficiency:.0%} of {self.peak_flops / 1e12:.0f} TFLOP/s on matmuls, "
                f"nodes of 8 on {self.inter_node_gb_s.value:.3g} GB/s links): the fastest of {len(plans)} plans that fit"
                + html_table(["TP×PP×DP", "micro-batch", "recompute", "GB/GPU", "step s", "bubble", "comm", "MFU"], rows)
                + f"Model FLOPs utilisation (MFU) at {n} GPUs: <b>{mfu[n]:.0%}</b>; the highest, {mfu[peak_g]:.0%}, at "
                f"{peak_g} GPUs. N× the GPUs give N× the speed only while the MFU holds.")
        self._draw()

    def _draw(self) -> None:
        with self._figure(8.0, 2.8) as fig:
            ax_t, ax_s = fig.subplots(1, 2)
            plans, fastest = self.last["plans"][:5], self.last["fastest"]
            parts = (("compute", "compute_s"), ("bubble", "bubble_s"), ("TP comm", "tp_comm_s"),
                     ("PP comm", "pp_comm_s"), ("DP comm", "dp_comm_s"))
            bottom = [0.0] * len(plans)
            for i, (label, field) in enumerate(parts):
                values = [getattr(e, field) for e in plans]
                ax_t.bar(range(len(plans)), values, bottom=bottom, color=PALETTE[i], label=label)
                bottom = [b + v for b, v in zip(bottom, values)]
            ax_t.set_xticks(range(len(plans)), [plan_label(e) for e in plans], fontsize=6)
            if not plans:
                ax_t.text(0.5, 0.5, "no plan fits: add GPUs", ha="center", va="center", transform=ax_t.transAxes)
                ax_t.set_yticks([])
            ax_t.set(ylabel="seconds per step", title=f"fastest plans on {self.last['gpus']} GPUs (TP×PP×DP)")
            if plans:
                ax_t.set_ylim(0, 1.45 * max(e.step_s for e in plans))
            if plans:
                ax_t.legend(fontsize=6, ncol=3, loc="upper left")
            if fastest:
                gs = sorted(fastest)
                ax_s.plot(gs, [100 * fastest[g].mfu for g in gs], "-", color=PALETTE[0], zorder=1)
                for recompute, style in ((False, dict(color=PALETTE[0])), (True, dict(facecolor="white",
                                                                                      edgecolor=PALETTE[0]))):
                    pts = [g for g in gs if fastest[g].recompute == recompute]
                    ax_s.scatter(pts, [100 * fastest[g].mfu for g in pts], zorder=2, **style,
                                 label="with recomputation (+1/3 FLOPs)" if recompute else "fastest plan that fits")
                ax_s.axvline(self.last["gpus"], color="0.6", linewidth=1, label="the slider's GPUs")
                ax_s.set_xscale("log", base=2)
                ax_s.set_ylim(0, 100 * self.efficiency * 1.05)
                ax_s.legend(fontsize=6, loc="lower left")
            ax_s.set(xlabel="GPUs (same global batch)", ylabel="model FLOPs utilisation (%)",
                     title="per-GPU throughput as GPUs grow")


def planner_widget(**kwargs) -> PlannerWidget:
    """The notebook 16 planner widget (keywords: model, gpus, inter_node_gb_s, memory_gb, peak_flops, efficiency)."""
    return PlannerWidget(**kwargs)
