"""llmlab.widgets.accumulation: the notebook-04 explorer of accumulation steps K, N vs b, and BatchNorm."""

from __future__ import annotations

import pytest

from llmlab.accumulation import accumulated_grads, full_batch_grads, loss_fn_for, make_batch, make_model, relative_difference
from llmlab.widgets import AccumulationExplorer, accumulation_explorer


def test_refresh_follows_every_control():
    explorer = accumulation_explorer(batch_size=16, steps=4, kind="cnn_bn", micro_batch=4)
    assert isinstance(explorer, AccumulationExplorer)
    assert list(explorer.steps.options) == [1, 2, 4, 8, 16]
    assert explorer.last["grad_difference"] > 1e-2
    lo, hi = explorer.last["range"]
    assert lo <= explorer.last["grad_difference"] <= hi
    assert explorer.last["range"] == explorer.last["other_range"]      # K = 4: N = 16 = 4 x 4 either way
    shown, picture = explorer.readout.value, explorer.plot.value
    assert picture[:4] == b"\x89PNG" and "CNN + BatchNorm" in shown
    explorer.hold.value = "b"
    explorer.steps.value = 8
    assert explorer.last["batch_size"] == 32 and explorer.last["micro_batch"] == 4 and "N = 32 = 8 &times; 4" in explorer.readout.value
    explorer.batch.value = 3
    assert explorer.last["batch_seed"] == 3 and "batch seed 3" in explorer.readout.value
    explorer.model_kind.value = "linear"
    assert explorer.readout.value != shown and explorer.plot.value != picture
    assert explorer.last["kind"] == "linear" and explorer.last["grad_difference"] < 1e-6
    picture = explorer.plot.value
    explorer.scale_loss.value = False
    assert explorer.last["grad_difference"] == pytest.approx(7, rel=1e-5) and explorer.plot.value != picture
    assert "8&times; too large" in explorer.readout.value
    explorer.steps.value = 1
    assert explorer.last["grad_difference"] == 0.0 and "equal to rounding" in explorer.readout.value


def test_the_numbers_are_the_librarys():
    explorer = accumulation_explorer(batch_size=8, steps=2, kind="cnn_gn", seed=3)
    model, loss_fn = make_model("cnn_gn", seed=3), loss_fn_for("cnn_gn")
    x, y = make_batch("cnn_gn", 8, seed=3)
    assert explorer.last["grad_difference"] == relative_difference(accumulated_grads(model, loss_fn, x, y, 2),
                                                                   full_batch_grads(model, loss_fn, x, y))
    explorer = accumulation_explorer(batch_size=8, steps=2, kind="cnn_bn", seed=3, micro_batch=2, hold="b")
    explorer.batch.value = 5
    model, loss_fn = make_model("cnn_bn", seed=3), loss_fn_for("cnn_bn")
    x, y = make_batch("cnn_bn", 4, seed=5)                            # b = 2, K = 2: N = 4, batch seed 5
    assert explorer.last["grad_difference"] == relative_difference(accumulated_grads(model, loss_fn, x, y, 2),
                                                                   full_batch_grads(model, loss_fn, x, y))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"batch_size": 16, "steps": 3}, ValueError, "steps must divide"),
    ({"steps": 0}, ValueError, "steps must be an int >= 1"),
    ({"kind": "mlp"}, ValueError, "kind must be one of"),
    ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1"),
    ({"batch_size": 8.0}, TypeError, "batch_size must be an int"),
    ({"seed": -1}, ValueError, "seed must be an int"),
    ({"micro_batch": 0}, ValueError, "micro_batch must be an int >= 1"),
    ({"hold": "K"}, ValueError, "hold must be one of"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        accumulation_explorer(**kwargs)
