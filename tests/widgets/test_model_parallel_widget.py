"""The notebook 16 widgets: the pipeline timeline (p, m, schedule) and the TP × PP × DP planner."""

import pytest

from llmlab.distributed import MODEL_PRESETS, ClusterConfig, bubble_fraction, peak_held_formula, plan_parallelism
from llmlab.widgets import pipeline_timeline_widget, planner_widget
from llmlab.widgets.model_parallel import GPU_OPTIONS


def test_timeline_follows_its_controls():
    w = pipeline_timeline_widget(stages=4, micro_batches=8, kind="gpipe")
    first_text, first_png = w.readout.value, w.plot.value
    assert w.last["bubble"] == bubble_fraction("gpipe", 4, 8)
    assert list(w.last["peak_held"]) == [8, 8, 8, 8]
    w.kind.value = "1f1b"
    assert list(w.last["peak_held"]) == peak_held_formula("1f1b", 4, 8) == [4, 3, 2, 1]
    assert w.last["bubble"] == bubble_fraction("1f1b", 4, 8)           # same bubble, fewer held micro-batches
    w.micro_batches.value = 32
    assert w.last["bubble"] == pytest.approx(3 / 35)
    assert w.readout.value != first_text and w.plot.value != first_png
    w.stages.value = 1
    assert w.last["bubble"] == 0


def test_planner_follows_its_controls():
    w = planner_widget(model="Llama 2 70B", gpus=512)
    best = w.last["best"]
    expected = next(e for e in plan_parallelism(MODEL_PRESETS["Llama 2 70B"], ClusterConfig("h100", gpus=512),
                                                micro_batches=(1, 2)) if e.fits)
    assert (best.tp, best.pp, best.dp, best.step_s) == (expected.tp, expected.pp, expected.dp, expected.step_s)
    assert set(w.last["mfu"]) <= set(GPU_OPTIONS) and w.last["mfu"][512] == best.mfu
    assert min(w.last["fastest"]) == 16 and w.last["fastest"][16].recompute      # 16 GPUs fit only with recomputation
    assert w.last["mfu"][8192] < w.last["mfu"][64]                              # the trap: per-GPU throughput falls
    text, png = w.readout.value, w.plot.value
    w.gpus.value = 8
    assert w.last["best"] is None and "no configuration fits" in w.readout.value
    w.gpus.value = 4096
    assert w.last["best"].fits and w.readout.value != text and w.plot.value != png
    slow = w.last["best"].step_s
    w.inter_node_gb_s.value = 5.0
    assert w.last["best"].step_s > slow                                 # a slower network never helps


def test_widgets_reject_bad_arguments():
    with pytest.raises(ValueError, match="gpus"):
        planner_widget(gpus=100)
    with pytest.raises(ValueError, match="model"):
        planner_widget(model="GPT-5")
    with pytest.raises(ValueError, match="stages"):
        pipeline_timeline_widget(stages=0)
    with pytest.raises(ValueError, match="kind"):
        pipeline_timeline_widget(kind="interleaved")
