"""Notebook 15: batch size, policy and block size -> the schedule of a request trace, its latency and KV memory."""

from __future__ import annotations

import statistics

import ipywidgets as W

from .._checks import check_choice, check_int
from ..display import html_table
from ..plotting import PALETTE
from ..serving import POLICIES, StepCosts, Trace, simulate
from .base import LabWidget, _choice_slider

__all__ = ["ServingWidget", "serving_widget", "BATCH_OPTIONS", "BLOCK_OPTIONS"]

#: The batch sizes and block sizes the sliders offer.
BATCH_OPTIONS = (1, 2, 4, 8, 16, 32)
BLOCK_OPTIONS = (1, 4, 16, 64, 256)


class ServingWidget(LabWidget):
    """``.max_batch``, ``.policy`` (continuous / static) and ``.block_size`` over a request trace.

    Each refresh replays the trace with :func:`llmlab.serving.simulate`: the scheduler of
    :func:`~llmlab.serving.serve` with every forward timed by ``costs`` (a :class:`StepCosts` fitted to
    measured forwards), so a slider move takes milliseconds instead of a minute of model time.
    ``.readout`` shows throughput, time to first token, latency, the share of decode rows that were
    useful and the peak KV memory (the requests' tokens in context, the blocks paging holds — fewer when
    prompts share blocks — and what reserving the longest request's length for every request would hold); ``.plot`` draws each request's wait and
    generation on a timeline and the KV slots over time. ``.last`` holds the numbers and the
    :class:`~llmlab.serving.ServeResult` (``result``).
    """

    css_prefix, css_box = "llmlab-serving", "llmlab-serving-widget"

    def __init__(self, trace: Trace, costs: StepCosts, *, bytes_per_token: int, max_batch: int = 8,
                 policy: str = "continuous", block_size: int = 16):
        super().__init__()
        if not isinstance(trace, Trace):
            raise TypeError(f"trace must be a Trace from llmlab.serving.make_trace, got {type(trace).__name__}")
        if not isinstance(costs, StepCosts):
            raise TypeError(f"costs must be a StepCosts (StepCosts.fit(serve(...))), got {type(costs).__name__}")
        self.trace, self.costs = trace, costs
        # The tightest region a reserving server could give every request: the longest request of the trace.
        self.context = max(r.prompt.shape[1] + r.max_new_tokens for r in trace.requests)
        self.bytes_per_token = check_int("bytes_per_token", bytes_per_token, low=1)
        self.max_batch = _choice_slider("max_batch", max_batch, BATCH_OPTIONS, description="max batch",
                                        continuous_update=False)
        check_choice("policy", policy, POLICIES)
        self.policy = W.ToggleButtons(options=list(POLICIES), value=policy, description="batching")
        self.block_size = _choice_slider("block_size", block_size, BLOCK_OPTIONS, description="KV block",
                                         continuous_update=False)
        self._add_plot()
        self._assemble(W.VBox([W.HBox([self.max_batch, self.block_size]), self.policy, self.readout, self.plot]),
                       max_batch=self.max_batch, policy=self.policy, block_size=self.block_size)
        self._watch(self.max_batch, self.policy, self.block_size)
        self.refresh()

    def refresh(self) -> None:
        """Replay the trace at the controls' settings; redraw readout and plot."""
        res = simulate(self.trace.prompts, self.trace.max_new_tokens, costs=self.costs,
                       max_batch=self.max_batch.value, block_size=self.block_size.value,
                       arrival_times=self.trace.arrival_times, policy=self.policy.value)
        ttft = [r.ttft for r in res.requests]
        latency = [r.latency for r in res.requests]
        mb = self.bytes_per_token / 1e6
        self.last = {
            "result": res, "tokens_per_s": res.tokens_per_s, "mean_ttft": statistics.mean(ttft),
            "mean_latency": statistics.mean(latency), "useful_fraction": res.useful_fraction,
            "peak_context_mb": max((u.tokens for u in res.usage), default=0) * mb,
            "peak_paged_mb": max((u.slots for u in res.usage), default=0) * mb,
            "peak_reserved_mb": max(res.reserved_slots(self.context), default=0) * mb,
        }
        rows = [["throughput", f"{res.tokens_per_s:.1f} tok/s"],
                ["time to first token, mean / max", f"{statistics.mean(ttft):.2f} s / {max(ttft):.2f} s"],
                ["latency, mean / max", f"{statistics.mean(latency):.2f} s / {max(latency):.2f} s"],
                ["decode rows that were useful", f"{res.useful_fraction:.0%} of {res.slot_steps}"],
                ["peak KV: tokens in context / paged / reserved",
                 f"{self.last['peak_context_mb']:.1f} / {self.last['peak_paged_mb']:.1f} / "
                 f"{self.last['peak_reserved_mb']:.1f} MB"]]
        self.readout.value = (f"<b>{len(self.trace)} requests, {self.policy.value} batching, max batch "
                              f"{self.max_batch.value}, KV blocks of {self.block_size.value}</b> "
                              f"(times from the fitted cost model)" + html_table(["", ""], rows))
        self._draw(res)

    def _draw(self, res) -> None:
        with self._figure(8.5, 3.0) as fig:
            ax_t, ax_m = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
            for i, r in enumerate(res.requests):
                ax_t.barh(i, r.first_token - r.arrival, left=r.arrival, color="0.8", height=0.7)
                ax_t.barh(i, r.finish - r.first_token, left=r.first_token, color=PALETTE[0], height=0.7)
            ax_t.barh([], [], color="0.8", label="waiting + prefill")
            ax_t.barh([], [], color=PALETTE[0], label="generating")
            ax_t.invert_yaxis()
            ax_t.set(xlabel="time (s)", ylabel="request", title="schedule")
            ax_t.legend(fontsize=7, loc="lower right")
            steps = range(1, len(res.usage) + 1)
            mb = self.bytes_per_token / 1e6
            ax_m.plot(steps, [u.tokens * mb for u in res.usage], color=PALETTE[2], label="tokens in context")
            ax_m.plot(steps, [u.slots * mb for u in res.usage], color=PALETTE[0], label="paged (blocks held)")
            ax_m.plot(steps, [s * mb for s in res.reserved_slots(self.context)], color=PALETTE[1], linestyle="--",
                      label=f"reserved ({self.context} slots per request)")
            ax_m.set(xlabel="decode step", ylabel="KV cache (MB)", title="KV memory")
            ax_m.legend(fontsize=7)


def serving_widget(trace: Trace, costs: StepCosts, **kwargs) -> ServingWidget:
    """The notebook 15 widget: see :class:`ServingWidget` (keywords: bytes_per_token, max_batch, policy,
    block_size)."""
    return ServingWidget(trace, costs, **kwargs)
