"""llmlab.widgets.accumulation: the notebook-04 explorer of accumulation steps K and BatchNorm."""

from __future__ import annotations

import pytest

from llmlab.accumulation import accumulation_pass, loss_fn_for, make_batch, make_model, relative_difference
from llmlab.widgets import AccumulationExplorer, accumulation_explorer


def test_refresh_follows_every_control():
    explorer = accumulation_explorer(batch_size=16, steps=4, kind="cnn_bn")
    assert isinstance(explorer, AccumulationExplorer)
    assert list(explorer.steps.options) == [1, 2, 4, 8, 16]
    assert explorer.last["grad_difference"] > 1e-2 and explorer.last["running_stats_difference"] > 1e-2
    shown, picture = explorer.readout.value, explorer.plot.value
    assert picture[:4] == b"\x89PNG" and "CNN + BatchNorm" in shown
    explorer.model_kind.value = "linear"
    assert explorer.readout.value != shown and explorer.plot.value != picture
    assert explorer.last["kind"] == "linear" and explorer.last["grad_difference"] < 1e-6
    assert explorer.last["running_stats_difference"] is None and "no BatchNorm" in explorer.readout.value
    picture = explorer.plot.value
    explorer.scale_loss.value = False
    assert explorer.last["grad_difference"] == pytest.approx(3, rel=1e-5) and explorer.plot.value != picture
    explorer.steps.value = 8
    assert explorer.last["grad_difference"] == pytest.approx(7, rel=1e-5)
    assert "8&times; too large" in explorer.readout.value
    explorer.steps.value = 1
    assert explorer.last["grad_difference"] == 0.0 and "equal to rounding" in explorer.readout.value


def test_the_numbers_are_the_librarys():
    explorer = accumulation_explorer(batch_size=8, steps=2, kind="cnn_gn", seed=3)
    model, loss_fn = make_model("cnn_gn", seed=3), loss_fn_for("cnn_gn")
    x, y = make_batch("cnn_gn", 8, seed=3)
    big = accumulation_pass(model, loss_fn, x, y, 1)
    acc = accumulation_pass(model, loss_fn, x, y, 2)
    assert explorer.last["grad_difference"] == relative_difference(acc.grads, big.grads)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"batch_size": 16, "steps": 3}, ValueError, "steps must divide"),
    ({"steps": 0}, ValueError, "steps must be an int >= 1"),
    ({"kind": "mlp"}, ValueError, "kind must be one of"),
    ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1"),
    ({"batch_size": 8.0}, TypeError, "batch_size must be an int"),
    ({"seed": -1}, ValueError, "seed must be an int >= 0"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        accumulation_explorer(**kwargs)
