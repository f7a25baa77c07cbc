"""llmlab.display: HTML snippets, off-screen figures and image encoding."""

import io

import numpy as np

import pytest
import torch
from PIL import Image

from llmlab.display import bar_table_html, encode_image, figure_png, html_table, new_figure, surprisal_html, tokens_html


def test_surprisal_html_escapes_and_colours():
    out = surprisal_html(["<a>", " b\n", "c"], [float("nan"), 6.0, 24.0], vmax=12.0)
    assert "&lt;a&gt;" in out and "<a>" not in out
    assert "rgba(213, 94, 0, 0.50)" in out and "rgba(213, 94, 0, 1.00)" in out
    assert 'title="not scored"' in out and "\u21b5" in out


def test_surprisal_html_refuses_bad_input():
    with pytest.raises(ValueError, match="same length"):
        surprisal_html(["a"], [1.0, 2.0])
    with pytest.raises(ValueError, match="vmax"):
        surprisal_html(["a"], [1.0], vmax=0)
    with pytest.raises(ValueError, match="surprisal_bits must be >= 0"):
        surprisal_html(["a"], [-1.0])


def test_bar_table_html():
    out = bar_table_html([("<x>", 0.5), ("y", 0.25), ("z", 0.125)], n_show=2, scale=100)
    assert "&lt;x&gt;" in out and "width:50px" in out and "width:25px" in out
    assert "... and 1 more" in out and "0.125" not in out


def test_html_table_escapes():
    out = html_table(["a", "<b>"], [[1, "<i>"]], caption="c")
    assert "<th>&lt;b&gt;</th>" in out and "<td>&lt;i&gt;</td>" in out and "<caption>c</caption>" in out


def test_figure_png_is_a_png_of_the_figure_size():
    fig = new_figure(4.0, 2.0, dpi=50)
    fig.subplots().plot([0, 1], [1, 0])
    data = figure_png(fig)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(io.BytesIO(data)).size == (200, 100)


@pytest.mark.parametrize("shape, mode", [((6, 5), "L"), ((6, 5, 3), "RGB"), ((6, 5, 1), "L")])
def test_encode_image_bmp_round_trip(shape, mode):
    image = torch.rand(shape)
    data, fmt = encode_image(image, fmt="bmp")
    assert fmt == "bmp"
    decoded = Image.open(io.BytesIO(data))
    assert decoded.mode == mode and decoded.size == (5, 6)
    expected = (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).squeeze(-1) if len(shape) == 3 and shape[2] == 1 \
        else (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    assert torch.equal(torch.from_numpy(np.array(decoded)), expected)


def test_encode_image_clips_without_touching_the_input():
    image = torch.tensor([[-1.0, 0.5], [2.0, 1.0]])
    before = image.clone()
    data, _ = encode_image(image)
    assert torch.equal(image, before)
    assert list(Image.open(io.BytesIO(data)).getdata()) == [0, 128, 255, 255]


def test_encode_image_with_alpha_is_png():
    data, fmt = encode_image(torch.rand(4, 4, 4), fmt="bmp")
    assert fmt == "png" and data[:4] == b"\x89PNG"


def test_tokens_html_marks_every_token():
    out = tokens_html(["a", " b<", "\n"], titles=[1, 2, 3])
    assert out.count("<span") == 3 and "&lt;" in out and "\u21b5" in out and 'title="2"' in out
    with pytest.raises(ValueError, match="same length"):
        tokens_html(["a"], titles=[1, 2])
