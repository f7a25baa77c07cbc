"""llmlab.plotting: the style helpers and the box-and-arrow diagrams of the notebooks."""

import matplotlib

matplotlib.use("Agg")  # draw off-screen

import pytest

from llmlab.plotting import PALETTE, draw_flow, subplots


def test_draw_flow_draws_every_box_arrow_and_label():
    fig, ax = subplots()
    boxes = {"a": (0.2, 0.5, "fp32\\nmaster"), "b": (0.8, 0.5, "fp16 copy")}
    patches = draw_flow(ax, boxes, [("a", "b", "round"), ("b", "a")], colors={"a": PALETTE[1]})
    assert set(patches) == {"a", "b"} and len(ax.patches) == 2
    texts = [t.get_text() for t in ax.texts]
    assert {"fp32\\nmaster", "fp16 copy", "round"} <= set(texts)
    assert len([c for c in ax.get_children() if type(c).__name__ == "Annotation"]) == 2
    assert patches["a"].get_facecolor()[:3] == matplotlib.colors.to_rgb(PALETTE[1])
    assert not ax.axison
    matplotlib.pyplot.close(fig)


@pytest.mark.parametrize(
    "boxes,arrows,err",
    [
        ({}, (), TypeError),
        ([("a", 0, 0)], (), TypeError),
        ({"a": (0.1, 0.1)}, (), ValueError),
        ({"a": (0.1, 0.1, "a")}, [("a", "z")], ValueError),
        ({"a": (0.1, 0.1, "a")}, ["a"], ValueError),
    ],
)
def test_draw_flow_bad_input(boxes, arrows, err):
    fig, ax = subplots()
    with pytest.raises(err):
        draw_flow(ax, boxes, arrows)
    matplotlib.pyplot.close(fig)
