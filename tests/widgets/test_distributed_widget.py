"""llmlab.widgets.distributed: the notebook-12 sliders for memory per rank and the all-reduce estimate."""

from __future__ import annotations

import math

import pytest

from llmlab.distributed import crossover_tokens, sharded_ledger, step_estimate
from llmlab.widgets import DataParallelWidget, data_parallel_widget


def test_builds_with_the_librarys_answers():
    w = data_parallel_widget()
    assert isinstance(w, DataParallelWidget) and w.plot.value  # a PNG was drawn
    P = 7_000_000_000
    assert w.last["ranks"] == 8 and w.last["params"] == P
    assert {s: led for s, led in w.last["ledgers"].items()} == {
        s: sharded_ledger(P, 8, s, precision="mixed") for s in ("ddp", "zero1", "zero2", "zero3")}
    assert w.last["ledgers"]["ddp"].total == 16 * P and w.last["ledgers"]["zero3"].total == 2 * P
    # 7B with AdamW does not fit an 80 GB device replicated (112 GB) nor with ZeRO-1 (28 + 84/8 GB = 38.5: fits)
    assert w.last["fits"] == {"ddp": False, "zero1": True, "zero2": True, "zero3": True}
    assert w.last["step"] == step_estimate(P, 8, link_gbit_s=400.0, tokens_per_rank=8 * 4096, bytes_per_grad=2)
    assert w.last["crossover_tokens"] == pytest.approx(crossover_tokens(8))
    assert "<td>DDP</td>" in w.readout_text and "24.5 GB" in w.readout_text  # 2 * 7/8 * 14 GB


def test_refresh_follows_every_control():
    w = data_parallel_widget()
    text, png = w.readout_text, w.plot.value
    w.ranks.value = 64
    assert w.readout_text != text and w.plot.value != png
    assert w.last["ledgers"]["zero3"].weights == math.ceil(2 * 7e9 / 64)
    assert w.last["step"].bytes_sent == pytest.approx(2 * 63 / 64 * 14e9)
    assert "ZeRO paper" in w.readout_text and "bf16 gradient all-reduce" in w.readout_text
    w.precision.value = "fp32"
    assert w.last["ledgers"]["ddp"].weights == 4 * 7_000_000_000 and w.last["step"].grad_bytes == 28e9
    assert "torch.autocast" in w.readout_text and "fp32 gradient all-reduce" in w.readout_text
    w.params_b.value = 70.0
    assert w.last["params"] == 70_000_000_000 and not w.last["fits"]["zero1"]
    before = w.last["step"].comm_seconds
    w.link_gbit_s.value = 100.0
    assert w.last["step"].comm_seconds == pytest.approx(4 * before, rel=1e-6)
    w.ranks.value = 1
    assert "no all-reduce with a single rank" in w.readout_text
    assert all(led == w.last["ledgers"]["ddp"] for led in w.last["ledgers"].values())


@pytest.mark.parametrize("kwargs, error, match", [
    ({"ranks": 3}, ValueError, "ranks must be one of"),
    ({"ranks": 2.0}, TypeError, "ranks must be an int"),
    ({"params_b": 0.0}, ValueError, "params_b must be a number"),
    ({"precision": "fp8"}, ValueError, "precision must be one of"),
    ({"link_gbit_s": 0.5}, ValueError, "link_gbit_s"),
    ({"device_gb": 0}, ValueError, "device_gb"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        data_parallel_widget(**kwargs)
