"""llmlab.widgets.serving: the notebook-15 controls replay a trace through the scheduler's simulation."""

from __future__ import annotations

import pytest
import torch

from conftest import CharTokenizer
from llmlab.serving import StepCosts, make_trace, simulate
from llmlab.widgets import ServingWidget, serving_widget

COSTS = StepCosts(0.05, 0.005, 0.02, 0.002)


@pytest.fixture(scope="module")
def trace():
    return make_trace(CharTokenizer(), 12, seed=0, max_new_tokens=40, rate=4.0, system_prompt="Be brief.")


def test_builds_with_the_simulations_numbers(trace):
    w = serving_widget(trace, COSTS, bytes_per_token=1000)
    assert isinstance(w, ServingWidget) and w.plot.value
    res = simulate(trace.prompts, trace.max_new_tokens, costs=COSTS, max_batch=8, arrival_times=trace.arrival_times)
    assert w.last["tokens_per_s"] == pytest.approx(res.tokens_per_s)
    assert w.last["useful_fraction"] == 1.0  # continuous batching computes no padding rows
    # Shared prompt blocks let the paged cache hold fewer slots than the requests have tokens in context.
    assert w.last["peak_paged_mb"] < w.last["peak_context_mb"] <= w.last["peak_reserved_mb"]
    assert "tok/s" in w.readout_text and "continuous" in w.readout_text


def test_refresh_follows_every_control(trace):
    w = serving_widget(trace, COSTS, bytes_per_token=1000)
    text, png = w.readout_text, w.plot.value
    w.policy.value = "static"
    assert w.readout_text != text and w.plot.value != png and w.last["useful_fraction"] < 1
    w.max_batch.value = 1  # one at a time: static and continuous are the same schedule
    one = w.last["result"]
    w.policy.value = "continuous"
    assert w.last["result"].decode_steps == one.decode_steps and w.last["useful_fraction"] == 1.0
    paged = w.last["peak_paged_mb"]
    w.block_size.value = 256  # a block longer than any request: paging reserves a whole block each
    assert w.last["peak_paged_mb"] > paged


@pytest.mark.parametrize("kwargs, error, match", [
    ({"max_batch": 3}, ValueError, "max_batch must be one of"),
    ({"block_size": 8}, ValueError, "block_size must be one of"),
    ({"policy": "fifo"}, ValueError, "policy must be one of"),
    ({"bytes_per_token": 0}, ValueError, "bytes_per_token"),
])
def test_bad_arguments(trace, kwargs, error, match):
    with pytest.raises(error, match=match):
        serving_widget(trace, COSTS, **{"bytes_per_token": 1000, **kwargs})


def test_bad_trace_and_costs(trace):
    with pytest.raises(TypeError, match="trace"):
        serving_widget([torch.tensor([[1, 2]])], COSTS, bytes_per_token=1)
    with pytest.raises(TypeError, match="costs"):
        serving_widget(trace, (0.1, 0.1, 0.1, 0.1), bytes_per_token=1)
