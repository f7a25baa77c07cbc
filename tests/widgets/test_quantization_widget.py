"""llmlab.widgets.quantization: the notebook-13 sliders for bits, group size and an outlier."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch

from llmlab.quantization import quantize_rtn
from llmlab.widgets import QuantErrorWidget, quant_error_widget


def weights():
    return torch.randn(16, 256, generator=torch.Generator().manual_seed(0)) * 0.05


def test_builds_with_the_librarys_answers():
    w = weights()
    x = quant_error_widget(w, bits=4, group=32)
    assert isinstance(x, QuantErrorWidget) and x.plot.value
    q = quantize_rtn(w, bits=4, granularity=32)
    assert x.last["bits_per_weight"] == q.bits_per_weight == 4.5
    assert x.last["rel_error"] == pytest.approx(((q.dequantize() - w).norm() / w.norm()).item())
    assert set(x.last["curve"]) == {8, 16, 32, 64, 128, 256, "channel", "tensor"}
    assert "4.500 bits per weight" in x.readout_text


def test_refresh_follows_every_control():
    x = quant_error_widget(weights(), bits=4, group=32)
    text, png, err = x.readout_text, x.plot.value, x.last["group_rms"]
    x.outlier.value = 10.0
    assert x.readout_text != text and x.plot.value != png and x.last["group_rms"] > 5 * err
    assert x.last["levels_used"] <= 4
    x.group.value = "tensor"
    assert x.last["rel_error"] > 0.5 and "whole matrix" in x.readout_text
    x.group.value, x.outlier.value = 8, 1.0
    e8 = x.last["rel_error"]
    x.group.value = 128
    assert x.last["rel_error"] > e8
    x.bits.value = 2
    assert x.last["bits_per_weight"] == pytest.approx(2 + 16 / 128)
    x.scheme.value = "asymmetric"
    assert x.last["bits_per_weight"] == pytest.approx(2 + 32 / 128) and not x.last["symmetric"]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"bits": 5}, ValueError, "bits must be one of"),
    ({"group": 100}, ValueError, "group must be one of"),
    ({"symmetric": "yes"}, TypeError, "symmetric"),
    ({"outlier": 0.5}, ValueError, "outlier"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        quant_error_widget(weights(), **kwargs)


def test_bad_weights():
    with pytest.raises(ValueError, match="weights"):
        quant_error_widget(torch.randn(10))


def test_a_zero_error_stays_on_the_plot():
    """Weights already on the asymmetric 4-bit grid of groups of 32 (like the model's Q4_1 weights): error 0 there,
    drawn on a scale linear near 0 (a log axis would drop the point and the 'chosen' marker)."""
    w = quantize_rtn(weights(), bits=4, granularity=32, symmetric=False).dequantize()
    x = quant_error_widget(w, bits=4, group=32, symmetric=False)
    assert x.last["rel_error"] == 0.0 and x.last["curve"][16] > 0 and x.plot.value
    with pytest.MonkeyPatch.context() as mp:
        scales = []
        orig = plt.Axes.set_yscale
        mp.setattr(plt.Axes, "set_yscale", lambda self, v, **kw: (scales.append(v), orig(self, v, **kw))[1])
        x.refresh()
    assert scales == ["symlog"]
