"""llmlab.widgets.svd: the k slider and image chooser of notebook 06, driven as a person would."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from PIL import Image

import llmlab.widgets.svd as svd_widget
from llmlab import svd
from llmlab.widgets import SVDExplorer, svd_explorer


@pytest.fixture()
def explorer():
    return svd_explorer(svd.demo_images(48), image="astronaut", k=5)


def test_slider_redraws_and_updates_readout(explorer):
    ex = explorer
    f = svd.factorize(ex.images["astronaut"])
    assert isinstance(ex, SVDExplorer) and ex.plot is None  # pictures, not a figure
    assert ex.k.min == 1 and ex.k.max == 48 and ex.k.value == 5
    assert ex.readout.value == (f"k = 5 · relative error = {svd.relative_error(f, 5):.4f} · energy kept = "
                                f"{svd.energy(f, 5):.4f} · compression ratio = {svd.compression_ratio(48, 48, 5):.4f}")
    assert ex.last == {"image": "astronaut", "k": 5, "relative_error": svd.relative_error(f, 5),
                       "energy": svd.energy(f, 5), "compression_ratio": svd.compression_ratio(48, 48, 5)}
    before_text, before_img, before_last = ex.readout.value, ex.reconstruction.value, ex.last
    ex.k.value = 30
    assert ex.readout.value.startswith("k = 30 · ") and ex.readout.value != before_text
    assert f"relative error = {svd.relative_error(f, 30):.4f}" in ex.readout_text
    assert ex.last != before_last and ex.last["k"] == 30 and ex.last["relative_error"] < before_last["relative_error"]
    assert ex.reconstruction.value != before_img and ex.reconstruction.value[:2] == b"BM"
    assert ex.reconstruction_label.value == "rank 30 of 48"
    # the picture shown is the clipped rank-k image
    shown = np.asarray(Image.open(BytesIO(ex.reconstruction.value))).astype(float) / 255
    expected = np.clip(svd.reconstruct(f, 30).numpy(), 0, 1)
    assert shown.shape == (48, 48, 3) and np.abs(shown - expected).max() <= 0.5 / 255 + 1e-6
    original = np.asarray(Image.open(BytesIO(ex.original.value))).astype(float) / 255
    assert np.abs(original - np.clip(ex.images["astronaut"], 0, 1)).max() <= 0.5 / 255 + 1e-5


def test_image_chooser_caches_and_resizes_the_slider(explorer, monkeypatch):
    ex = explorer
    assert set(ex.image.options) >= {"camera", "astronaut", "coffee", "checkerboard", "rotated checkerboard", "noise"}
    ex.k.value = 48
    original = ex.original.value
    ex.image.value = "coffee"  # (48, 72, 3): max rank still 48
    assert ex.k.max == 48 and ex.readout_text.startswith("k = 48 · ") and ex.last["image"] == "coffee"
    assert ex.original.value != original and ex.original_label.value == "original: coffee, 48×72×3"
    ex.image.value = "checkerboard"
    ex.k.value = 2
    assert "relative error = 0.0000" in ex.readout_text  # an aligned checkerboard is rank 2
    ex.image.value = "noise"
    noise_text = ex.readout_text
    assert "relative error = 0.0000" not in noise_text
    # coming back to an image does not factorize it again (the widget's own reference is patched)
    monkeypatch.setattr(svd_widget, "factorize", lambda *a, **k: pytest.fail("SVD recomputed"))
    ex.image.value = "astronaut"
    ex.image.value = "noise"
    assert ex.readout_text == noise_text


def test_one_refresh_per_image_switch(monkeypatch):
    ex = svd_explorer({"wide": np.random.default_rng(0).random((40, 60)), "small": np.ones((10, 12))}, k=35)
    calls = []
    real = SVDExplorer.refresh
    monkeypatch.setattr(SVDExplorer, "refresh",
                        lambda self: (calls.append((self.image.value, self.k.value)), real(self)))
    ex.image.value = "small"  # the slider's range and value change too: still one refresh, at the end
    assert calls == [("small", 10)]


def test_slider_shrinks_for_a_smaller_image_and_time_steps():
    ex = svd_explorer({"wide": np.random.default_rng(0).random((40, 60)), "small": np.ones((10, 12))}, k=35)
    assert ex.k.max == 40 and ex.k.value == 35
    ex.image.value = "small"
    assert ex.k.max == 10 and ex.k.value == 10 and ex.readout_text.startswith("k = 10 · ")
    ex.image.value = "wide"
    assert ex.k.max == 40
    times = ex.time_steps([3, 7, 7, 20])
    assert len(times) == 4 and all(t > 0 for t in times) and ex.k.value == 20
    assert len(ex.time_steps()) == len(np.unique(np.linspace(1, 40, 25).round()))
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 40\]"):
        ex.time_steps([41])


def test_png_format_and_a_k_above_the_rank():
    ex = svd_explorer({"a": np.random.default_rng(1).random((6, 8))}, k=100, image_format="png", display_width=50)
    assert ex.k.value == 6 and ex.reconstruction.value[:4] == b"\x89PNG" and ex.reconstruction.format == "png"


def test_bad_arguments():
    one = {"a": np.ones((4, 4))}
    with pytest.raises(ValueError, match="image must be one of"):
        svd_explorer(one, image="b")
    with pytest.raises(ValueError, match="image_format must be one of"):
        svd_explorer(one, image_format="gif")
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        svd_explorer(one, k=0)
    with pytest.raises(TypeError, match="k must be an int"):
        svd_explorer(one, k=2.5)
    with pytest.raises(ValueError, match="display_width must be"):
        svd_explorer(one, display_width=0)
    with pytest.raises(ValueError, match="images must hold at least one image"):
        svd_explorer({})
