"""llmlab.widgets.base.LabWidget: the one shape every widget has, and the package's re-exports."""

from __future__ import annotations

import io

import ipywidgets as W
import pytest
from PIL import Image

import llmlab.widgets as widgets
from llmlab.widgets import LabWidget


class Counter(LabWidget):
    """The smallest widget: a slider, a readout that shows its square, a one-line plot."""

    css_prefix, css_box = "llmlab-counter", "llmlab-counter-widget"

    def __init__(self):
        super().__init__()
        self.x = W.IntSlider(value=2, min=0, max=10, description="x")
        self.calls = 0
        self._add_plot(width=200)
        self._assemble(W.VBox([self.x, self.readout, self.plot]), x=self.x)
        self._watch(self.x)
        self.refresh()

    def refresh(self):
        self.calls += 1
        self.last = {"x": self.x.value, "square": self.x.value ** 2}
        self.readout.value = f"x² = {self.last['square']}"
        with self._figure(2.0, 1.5) as fig:
            fig.subplots().plot([0, 1], [0, self.x.value])


def test_controls_call_refresh_and_the_plot_is_a_png():
    c = Counter()
    assert c.readout_text == "x² = 4" and c.last == {"x": 2, "square": 4} and c.calls == 1
    picture = c.plot.value
    assert picture[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(io.BytesIO(picture)).size == (180, 135)  # 90 dpi
    c.x.value = 7
    assert c.calls == 2 and c.readout_text == "x² = 49" and c.last["square"] == 49 and c.plot.value != picture


def test_refresh_paused_changes_controls_without_a_refresh_each():
    c = Counter()
    with c._refresh_paused():
        c.x.value = 3
        c.x.value = 4
    assert c.calls == 1 and c.last["x"] == 2  # nothing ran while paused
    c.refresh()
    assert c.calls == 2 and c.last["x"] == 4
    c.x.value = 5
    assert c.calls == 3  # watching again after the block


def test_css_classes_and_display():
    c = Counter()
    assert "llmlab-counter-widget" in c.widget._dom_classes
    assert LabWidget.CSS_CLASS in c.widget._dom_classes  # every LabWidget: the gallery captions these
    assert "llmlab-counter-readout" in c.readout._dom_classes
    assert "llmlab-counter-plot" in c.plot._dom_classes and "llmlab-counter-x" in c.x._dom_classes
    assert LabWidget().plot is None  # no figure, no picture


def test_refresh_must_be_implemented():
    with pytest.raises(NotImplementedError):
        LabWidget().refresh()


def test_the_package_re_exports_every_builder_and_class():
    names = ["svd_explorer", "SVDExplorer", "decoding_widget", "DecodingWidget", "cosine_explorer", "CosineExplorer",
             "accumulation_explorer", "AccumulationExplorer", "checkpointing_widget", "CheckpointingWidget",
             "lora_rank_explorer", "LoRARankExplorer", "precision_widget", "PrecisionWidget"]
    assert set(names) <= set(widgets.__all__)
    for name in names:
        obj = getattr(widgets, name)
        if isinstance(obj, type):
            assert issubclass(obj, LabWidget), name
            assert "refresh" in vars(obj), f"{name} does not implement refresh()"
            for old in ("redraw", "update", "_update"):
                assert not callable(getattr(obj, old, None)), f"{name} still has a method {old}()"
