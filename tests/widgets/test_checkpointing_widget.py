"""llmlab.widgets.checkpointing: the notebook-05 sliders for depth n and the number of segments."""

from __future__ import annotations

import pytest

from llmlab.checkpointing import make_chain, measure
from llmlab.widgets import CheckpointingWidget, checkpointing_widget


def test_refresh_follows_the_sliders():
    w = checkpointing_widget(n_max=16, width=8, batch=2, n=9)
    a = w.act_bytes
    assert isinstance(w, CheckpointingWidget) and a == 2 * 8 * 4
    assert w.segments.value == 3 and w.last["sqrt"].peak_saved_bytes == 6 * a  # 3 segments of 3
    before, picture = w.readout.value, w.plot.value
    assert picture[:4] == b"\x89PNG" and "<b>n = 9 layers, 3 segments</b>" in before
    w.segments.value = 1
    assert w.readout.value != before and "1 segments" in w.readout.value and w.plot.value != picture
    assert w.last["sqrt"].peak_saved_bytes == w.last["store_all"].peak_saved_bytes == 10 * a
    w.n.value = 16  # the segments slider follows: max n, value ceil(sqrt n)
    assert (w.segments.max, w.segments.value) == (16, 4)
    assert w.last["sqrt"].forward_calls == 28 and w.last["recompute_all"].forward_calls == 136
    assert "<td>recompute_all</td><td>3</td>" in w.readout.value  # 3 saved activations
    w.n.value = 1
    assert (w.segments.max, w.segments.value) == (1, 1)
    assert w.last["store_all"].peak_saved_bytes == 2 * a


def test_one_refresh_per_depth_change(monkeypatch):
    w = checkpointing_widget(n_max=16, width=4, batch=1, n=4)
    calls = []
    real = CheckpointingWidget.refresh
    monkeypatch.setattr(CheckpointingWidget, "refresh",
                        lambda self: (calls.append((self.n.value, self.segments.value)), real(self)))
    w.n.value = 16  # segments' max and value change on the way: still one measurement, at the end
    assert calls == [(16, 4)]


def test_the_numbers_are_measured_on_the_chain():
    w = checkpointing_widget(n_max=8, width=4, batch=3, n=5, seed=2)
    chain = make_chain(8, 4, seed=2)[:5]
    stats = measure(chain, w._x, "sqrt", segments=3)
    assert (w.last["sqrt"].peak_saved_bytes, w.last["sqrt"].forward_calls) == (stats.peak_saved_bytes,
                                                                                stats.forward_calls)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"n_max": 4, "n": 5}, ValueError, r"n must be an int in \[1, 4\]"),
    ({"n": 0}, ValueError, "n must be an int"),
    ({"n_max": 0}, ValueError, "n_max must be an int >= 1"),
    ({"width": 0}, ValueError, "width must be an int"),
    ({"batch": 2.0}, TypeError, "batch must be an int"),
    ({"seed": -1}, ValueError, "seed must be an int >= 0"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        checkpointing_widget(**kwargs)
