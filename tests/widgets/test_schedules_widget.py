"""llmlab.widgets.schedules: the notebook-03 cosine explorer against PyTorch and Hugging Face."""

from __future__ import annotations

import pytest

from llmlab.schedules import cosine_annealing
from llmlab.widgets import CosineExplorer, cosine_explorer


def test_refresh_follows_every_control():
    w = cosine_explorer(t_max=20, eta_min=0.1, warmup=5)
    assert isinstance(w, CosineExplorer) and w.plot.value[:4] == b"\x89PNG"
    assert "t_max = 20" in w.readout_text and w.max_diff_cosine <= 1e-12 and w.max_diff_warmup <= 1e-12
    assert w.lr_at_2t_max == pytest.approx(1.0, rel=1e-12)
    assert w.last["n_cosine"] == 61 and w.last["n_warmup"] == 21 and w.last["warmup"] == 5
    for control, value in ((w.t_max, 37), (w.eta_min, 0.3), (w.warmup, 12)):
        text, picture, last = w.readout_text, w.plot.value, dict(w.last)
        control.value = value
        assert w.readout_text != text and w.plot.value != picture and w.last != last
        assert w.max_diff_cosine <= 1e-12 and w.max_diff_warmup <= 1e-12
    assert w.last["t_max"] == 37 and w.last["eta_min"] == 0.3 and w.last["n_cosine"] == 3 * 37 + 1
    w.warmup.value = 100  # longer than t_max: clipped, not an error
    assert "clipped" in w.readout_text and w.max_diff_warmup <= 1e-12 and w.last["warmup"] == 37
    w.eta_min.value = 1.0  # floor at the peak: a flat line, still equal to PyTorch
    assert w.max_diff_cosine == 0.0


def test_curves_are_llmlabs_and_pytorchs():
    w = cosine_explorer(base_lr=2.0, t_max=10, eta_min=0.5, warmup=0)
    (steps, ours, ref), (w_steps, w_ours, w_ref) = w.curves()
    assert steps == list(range(31)) and w_steps == list(range(11))
    assert ours == [cosine_annealing(t, base_lr=2.0, t_max=10, eta_min=0.5) for t in steps]
    assert max(abs(a - b) for a, b in zip(ours, ref)) <= 1e-12 and w_ours[0] == 2.0 == w_ref[0]
    assert w.lr_at_2t_max == pytest.approx(2.0) and "base_lr = 2" in w.readout_text


@pytest.mark.parametrize("kwargs, error, match", [
    ({"base_lr": 0.0}, ValueError, "base_lr must be a number > 0"),
    ({"base_lr": "1"}, TypeError, "base_lr must be a number"),
    ({"t_max": 1}, ValueError, r"t_max must be an int in \[2, 200\]"),
    ({"t_max": 201}, ValueError, r"t_max must be an int in \[2, 200\]"),
    ({"t_max": 2.5}, TypeError, "t_max must be an int"),
    ({"eta_min": 1.5}, ValueError, r"eta_min must be a number in \[0, 1\]"),
    ({"warmup": -1}, ValueError, "warmup must be an int"),
    ({"max_t_max": 1}, ValueError, "max_t_max must be an int >= 2"),
    ({"width": 0}, ValueError, "width must be an int >= 1"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        cosine_explorer(**kwargs)
