"""The one shape every llmlab widget has.

A widget object holds its controls (sliders, menus) as attributes, a ``readout`` (``W.HTML``)
with the numbers it shows, a ``plot`` (``W.Image`` holding a PNG drawn off-screen, for widgets
that draw a figure; ``None`` otherwise), ``last`` (the numbers of the last refresh, as a dict,
for code and tests) and ``widget``, the box a notebook displays. Moving any control calls
:meth:`LabWidget.refresh`, the one method that recomputes and redraws; a notebook drives a
widget from code by setting a control's ``.value`` and reading ``readout_text`` or ``last``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import math

import ipywidgets as W
import matplotlib as mpl
from IPython.display import display
from matplotlib.figure import Figure

from .._checks import check_choice, check_float, check_int
from ..display import figure_png, new_figure
from ..plotting import STYLE

__all__ = ["LabWidget"]


# A control's range is written once: each builder checks the widget's argument against the range it gives
# the slider (a bad argument gets the ValueError/TypeError naming it, not a trait error from ipywidgets).
def _int_slider(name: str, value, *, low: int, high: int, **kw) -> W.IntSlider:
    """An ``IntSlider`` over [low, high] starting at ``value`` (checked: an int in that range)."""
    return W.IntSlider(value=check_int(name, value, low=low, high=high), min=low, max=high, **kw)


def _float_slider(name: str, value, *, low: float, high: float, **kw) -> W.FloatSlider:
    """A ``FloatSlider`` over [low, high] starting at ``value`` (checked: a number in that range)."""
    return W.FloatSlider(value=check_float(name, value, low=low, high=high), min=low, max=high, **kw)


def _log_slider(name: str, value, *, low: float, high: float, **kw) -> W.FloatLogSlider:
    """A base-10 ``FloatLogSlider`` over [low, high] (powers of ten) starting at ``value`` (checked)."""
    value = check_float(name, value, low=low, high=high)
    return W.FloatLogSlider(value=value, base=10, min=math.log10(low), max=math.log10(high), **kw)


def _choice_slider(name: str, value, options, **kw) -> W.SelectionSlider:
    """A ``SelectionSlider`` over ``options`` (values, or (label, value) pairs) starting at ``value``, which
    must be one of the option values (an int, if they are ints)."""
    values = [o[1] if isinstance(o, tuple) else o for o in options]
    if all(isinstance(v, int) for v in values):
        value = check_int(name, value)
    return W.SelectionSlider(options=options, value=check_choice(name, value, values), **kw)


class LabWidget:
    """Base class: a subclass builds its controls, calls :meth:`_watch` on them, puts its parts in
    a box with :meth:`_assemble` and implements :meth:`refresh`."""

    #: CSS class prefix of the widget's parts: ``<css_prefix>-readout``, ``<css_prefix>-k`` ...
    css_prefix = "llmlab"
    #: CSS class of the displayed box, one per kind of widget (the browser test may look for it).
    css_box = "llmlab-widget"
    #: CSS class every LabWidget's box carries: ``make gallery`` shows such a box with a caption.
    CSS_CLASS = "llmlab-widget"

    def __init__(self) -> None:
        self.readout = W.HTML()
        self.plot: W.Image | None = None
        self.last: dict = {}
        self.widget: W.Box | None = None
        self._paused = False

    def _add_plot(self, width: int | None = None) -> W.Image:
        """Create ``self.plot``, the PNG picture that :meth:`_figure` draws into."""
        self.plot = W.Image(format="png", **({} if width is None else {"width": width}))
        return self.plot

    def _watch(self, *controls: W.Widget) -> None:
        """Call :meth:`refresh` whenever one of ``controls`` changes value (unless paused)."""
        for control in controls:
            control.observe(self._on_control, names="value")

    def _on_control(self, change) -> None:
        if not self._paused:
            self.refresh()

    @contextmanager
    def _refresh_paused(self) -> Iterator[None]:
        """Change several controls (a slider's range and value) without a refresh per change;
        call :meth:`refresh` once afterwards."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False

    @contextmanager
    def _figure(self, width: float, height: float) -> Iterator[Figure]:
        """``with self._figure(7, 2.6) as fig: ax = fig.subplots()...``: a figure in the llmlab style,
        drawn off-screen (no pyplot) into ``self.plot`` as a PNG when the block ends."""
        # Axes, lines and labels read the style when they are created: keep it on for the whole block.
        with mpl.rc_context(STYLE):
            fig = new_figure(width, height)
            yield fig
            self.plot.value = figure_png(fig)

    def _assemble(self, box: W.Box, **parts: W.Widget) -> None:
        """Make ``box`` the displayed ``widget``; tag it (:attr:`CSS_CLASS` and :attr:`css_box`), the
        readout, the plot and ``parts`` (name -> control) with CSS classes (``llmlab-svd-k`` for part
        ``k`` of the SVD widget)."""
        self.widget = box
        box.add_class(LabWidget.CSS_CLASS)
        box.add_class(self.css_box)
        named = {"readout": self.readout, **({"plot": self.plot} if self.plot is not None else {}), **parts}
        for name, part in named.items():
            part.add_class(f"{self.css_prefix}-{name.replace('_', '-')}")

    def refresh(self) -> None:
        """Recompute from the controls' values and redraw readout and plot."""
        raise NotImplementedError

    @property
    def readout_text(self) -> str:
        """The readout's current HTML text."""
        return self.readout.value

    def _ipython_display_(self) -> None:
        display(self.widget)
