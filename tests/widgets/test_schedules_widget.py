"""llmlab.widgets.schedules: the notebook-03 explorer trains under the chosen schedule and shows its effect."""

from __future__ import annotations

import pytest
from torch.optim import lr_scheduler

from llmlab.schedules import compare_schedules, torch_trace
from llmlab.widgets import CosineExplorer, cosine_explorer

SMALL = dict(steps=60, seeds=2, eval_every=10)  # a few hundred milliseconds per refresh


def test_refresh_follows_every_control():
    w = cosine_explorer(peak=0.05, t_max=50, eta_min=0.0, warmup=10, **SMALL)
    assert isinstance(w, CosineExplorer) and w.plot.value[:4] == b"\x89PNG"
    assert "t_max = 50" in w.readout_text and "noise floor" in w.readout_text and w.last["n_seeds"] == 2
    for control, value in ((w.t_max, 21), (w.eta_min, 0.3), (w.warmup, 5), (w.peak, 0.01)):
        text, picture, last = w.readout_text, w.plot.value, dict(w.last)
        control.value = value
        assert w.readout_text != text and w.plot.value != picture and w.last["test_cosine"] != last["test_cosine"]
    assert w.last["t_max"] == 21 and w.last["eta_min"] == 0.3 and w.last["peak"] == 0.01
    assert 0 <= w.last["wins"] <= 2


def test_numbers_are_those_of_compare_schedules():
    """The readout's losses are compare_schedules' on the same seeds, and the constant run is the peak's."""
    w = cosine_explorer(peak=0.03, t_max=40, eta_min=0.1, warmup=5, **SMALL)
    lrs = w.schedules()
    ref = compare_schedules(lrs, seeds=[0, 1], eval_every=10)
    assert lrs["constant"] == [0.03 * t / 5 for t in range(5)] + [0.03] * 55  # the cosine's warm-up, then flat
    assert lrs["constant"][:5] == lrs["cosine"][:5]
    assert w.last["test_cosine"] == pytest.approx(float(ref.final("cosine").mean()), rel=1e-5)
    assert w.last["test_constant"] == pytest.approx(float(ref.final("constant").mean()), rel=1e-5)
    assert w.last["train_cosine"] == pytest.approx(float(ref.final("cosine", "train").mean()), rel=1e-5)
    assert w.last["floor"] == pytest.approx(float(ref.noise_floor.mean()))
    wins = int((ref.final("cosine") < ref.final("constant")).sum())
    assert w.last["wins"] == wins and f"{wins} of 2 seeds" in w.readout_text


def test_schedule_is_warmup_then_pytorchs_cosine_annealing():
    """After the warm-up the schedule is CosineAnnealingLR step for step, climb past t_max included."""
    w = cosine_explorer(peak=0.05, t_max=15, eta_min=0.2, warmup=10, **SMALL)
    cosine = w.schedules()["cosine"]
    assert cosine[:10] == [0.05 * t / 10 for t in range(10)]
    ref = torch_trace(lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=15, eta_min=0.01), 50, base_lr=0.05)
    assert max(abs(a - b) for a, b in zip(cosine[10:], ref)) <= 1e-15
    assert cosine[10 + 30] == pytest.approx(0.05)  # back at the peak at 2 t_max: no restart, a climb


def test_memorisation_is_flagged_below_the_noise_floor():
    w = cosine_explorer(peak=0.05, t_max=380, warmup=20, steps=400, seeds=4, eval_every=400)
    assert w.last["train_cosine"] < w.last["floor"] < w.last["test_cosine"]
    assert "memorised noise" in w.readout_text


@pytest.mark.parametrize("kwargs, error, match", [
    ({"peak": 0.0}, ValueError, "peak must be a number in"),
    ({"peak": "1"}, TypeError, "peak must be a number"),
    ({"t_max": 0}, ValueError, r"t_max must be an int in \[1, 800\]"),
    ({"t_max": 2.5}, TypeError, "t_max must be an int"),
    ({"eta_min": 1.5}, ValueError, r"eta_min must be a number in \[0, 1\]"),
    ({"warmup": -1}, ValueError, "warmup must be an int"),
    ({"steps": 5}, ValueError, "steps must be an int"),
    ({"seeds": 0}, ValueError, "seeds must be an int"),
    ({"width": 0}, ValueError, "width must be an int >= 1"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        cosine_explorer(**kwargs)
