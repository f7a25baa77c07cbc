"""llmlab.distributed.pipeline / pipeline_run: GPipe and 1F1B on paper and on gloo ranks with send/recv,
against one process and against PyTorch's own ``torch.distributed.pipelining``.

Cases ported from pytorch/pytorch test/distributed/pipelining/test_schedule_multiproc.py (re-derived, not
copied): ``ScheduleTest.test_grad_with_manual`` / ``test_kwargs_with_tracer`` for ``ScheduleGPipe`` and
``Schedule1F1B`` (a stack of MLP blocks split into stages, each stage's gradients compared with the unsplit
reference model's on the full batch, ``scale_grads`` on: micro-batch losses weighted 1/m), with more
micro-batches than stages; and, from our side, the edge cases a schedule gets wrong first: fewer micro-batches
than stages, one stage, and layers that do not divide evenly over the stages.
"""

from __future__ import annotations

import pytest
import torch

from llmlab.distributed import (SCHEDULES, PipelineSpec, bubble_fraction, make_pipeline_model, peak_held_formula,
                                pipeline_data, pipeline_schedule, run_pipeline, run_pipelines, simulate_schedule,
                                single_process_step)
from llmlab.distributed.pipeline_run import _stage_layers
from llmlab.memory import saved_activation_bytes


@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("p, m", [(1, 1), (1, 5), (2, 1), (2, 3), (3, 2), (4, 4), (4, 8), (5, 3), (8, 32)])
def test_schedules_on_paper_match_the_formulas(kind, p, m):
    plan = pipeline_schedule(kind, p, m)
    assert len(plan) == p
    for actions in plan:
        # Every micro-batch is run forward once and backward once, its backward after its forward.
        assert sorted(actions) == sorted([("F", i) for i in range(m)] + [("B", i) for i in range(m)])
        assert all(actions.index(("F", i)) < actions.index(("B", i)) for i in range(m))
    for tf, tb in [(1.0, 1.0), (1.0, 2.0), (0.5, 3.5)]:
        timeline = simulate_schedule(kind, p, m, t_forward=tf, t_backward=tb)
        assert timeline.makespan == pytest.approx((m + p - 1) * (tf + tb))
        assert timeline.bubble == pytest.approx(bubble_fraction(kind, p, m)) == pytest.approx((p - 1) / (m + p - 1))
        assert list(timeline.peak_held) == peak_held_formula(kind, p, m)
    expected = [m] * p if kind == "gpipe" else [min(p - s, m) for s in range(p)]
    assert peak_held_formula(kind, p, m) == expected


def test_1f1b_order_by_hand():
    # Stage 0 of 3 with 4 micro-batches: 2 warm-up forwards, 2 one-forward-one-backward pairs, 2 cool-down backwards.
    assert pipeline_schedule("1f1b", 3, 4)[0] == [("F", 0), ("F", 1), ("F", 2), ("B", 0), ("F", 3), ("B", 1),
                                                  ("B", 2), ("B", 3)]
    assert pipeline_schedule("1f1b", 3, 4)[2] == [("F", 0), ("B", 0), ("F", 1), ("B", 1), ("F", 2), ("B", 2),
                                                  ("F", 3), ("B", 3)]
    assert pipeline_schedule("gpipe", 2, 2) == [[("F", 0), ("F", 1), ("B", 0), ("B", 1)]] * 2


def test_stage_layers_split_contiguously():
    assert [list(_stage_layers(5, 2, s)) for s in range(2)] == [[0, 1, 2], [3, 4]]
    assert [list(_stage_layers(8, 4, s)) for s in range(4)] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert sum(len(_stage_layers(7, 3, s)) for s in range(3)) == 7


def _assert_equal_to_one_process(run_, spec, *, torch_too: bool):
    loss, grads = single_process_step(spec)
    assert run_.loss == pytest.approx(loss, rel=1e-12)
    assert run_.grads.keys() == grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(run_.grads[name], g, rtol=0, atol=1e-12)
        if torch_too:
            torch.testing.assert_close(run_.torch_grads[name], g, rtol=0, atol=1e-12)
    if torch_too:
        assert run_.torch_loss == pytest.approx(loss, rel=1e-12)


def test_gpipe_and_1f1b_on_four_ranks_equal_one_process_and_torch_pipelining():
    spec = PipelineSpec(layers=8, hidden=16, batch=16, micro_batches=8)
    runs = run_pipelines(SCHEDULES, spec, stages=4, compare_torch=True, timeout=240)
    rows, h = spec.batch // spec.micro_batches, spec.hidden
    model = make_pipeline_model(spec)
    x, _ = pipeline_data(spec)
    one_micro_batch = saved_activation_bytes(model, x[:rows].clone())
    for kind, r in runs.items():
        _assert_equal_to_one_process(r, spec, torch_too=True)
        # The schedule as executed by real sends and receives has the formula's bubble and holds what it should.
        assert r.bubble == pytest.approx(bubble_fraction(kind, 4, 8))
        assert list(r.peak_held) == peak_held_formula(kind, 4, 8)
        assert r.actions == simulate_schedule(kind, 4, 8).actions
        # Each boundary carries every micro-batch's activation forward and its gradient back: 2·B·h·8 bytes.
        assert r.bytes_sent == (rows * h * 8 * 8, 2 * rows * h * 8 * 8, 2 * rows * h * 8 * 8, rows * h * 8 * 8)
        assert all(w >= 0 for w in r.recv_wait_s)
    gpipe, ofob = runs["gpipe"], runs["1f1b"]
    # GPipe: every stage holds all 8 micro-batches (the whole batch through 2 of the 8 layers); 1F1B's first stage
    # holds 4 micro-batches of 2 layers: exactly one micro-batch through all 8 layers, what one device doing gradient
    # accumulation holds. (Micro-batches are copies: views would make autograd save the whole batch's storage.)
    whole = saved_activation_bytes(model, x)
    assert ofob.peak_saved_bytes[0] == one_micro_batch
    assert gpipe.peak_saved_bytes[0] == whole // 4 == 2 * one_micro_batch
    assert list(ofob.peak_saved_bytes[:3]) == [(4 - s) * one_micro_batch // 4 for s in range(3)]


def test_edge_cases_fewer_micro_batches_than_stages_and_uneven_layers():
    spec = PipelineSpec(layers=5, hidden=8, batch=4, micro_batches=2, seed=3)
    for kind, r in run_pipelines(SCHEDULES, spec, stages=3, timeout=240).items():
        _assert_equal_to_one_process(r, spec, torch_too=False)
        assert r.bubble == pytest.approx((3 - 1) / (2 + 3 - 1))
        assert list(r.peak_held) == peak_held_formula(kind, 3, 2) == ([2, 2, 2] if kind == "gpipe" else [2, 2, 1])


def test_one_stage_is_gradient_accumulation():
    spec = PipelineSpec(layers=3, hidden=8, batch=6, micro_batches=3)
    r = run_pipeline("1f1b", spec, stages=1, timeout=120)
    _assert_equal_to_one_process(r, spec, torch_too=False)
    assert r.bubble == 0 and r.bytes_sent == (0,) and r.peak_held == (1,)


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        pipeline_schedule("zero-bubble", 2, 2)
    with pytest.raises(ValueError, match="stages"):
        pipeline_schedule("gpipe", 0, 2)
    with pytest.raises(ValueError, match="micro_batches"):
        bubble_fraction("1f1b", 2, 0)
    with pytest.raises(TypeError, match="micro_batches"):
        simulate_schedule("1f1b", 2, 2.5)
    with pytest.raises(ValueError, match="t_backward"):
        simulate_schedule("1f1b", 2, 2, t_backward=0)
    with pytest.raises(ValueError, match="multiple of spec.micro_batches"):
        run_pipeline("gpipe", PipelineSpec(batch=10, micro_batches=4))
    with pytest.raises(ValueError, match="stages"):
        run_pipeline("gpipe", PipelineSpec(layers=2), stages=3)
    with pytest.raises(TypeError, match="kinds"):
        run_pipelines("gpipe")
    with pytest.raises(TypeError, match="spec must be a PipelineSpec"):
        run_pipeline("gpipe", {"layers": 2})
