"""The one shape every llmlab widget has.

A widget object holds its controls (sliders, menus) as attributes, a ``readout`` (``W.HTML``)
with the numbers it shows, an optional ``plot`` (``W.Image`` holding a PNG drawn off-screen by
:func:`llmlab.display.figure_png`), ``last`` (the numbers of the last refresh, as a dict, for
code and tests) and ``widget``, the box a notebook displays. Moving any control calls
:meth:`LabWidget.refresh`, the one method that recomputes and redraws; a notebook drives a
widget from code by setting a control's ``.value`` and reading ``readout_text`` or ``last``.
"""

from __future__ import annotations

import ipywidgets as W
from IPython.display import display
from matplotlib.figure import Figure

from ..display import figure_png

__all__ = ["LabWidget"]


class LabWidget:
    """Base class: subclasses build controls, call :meth:`_watch` on them and implement :meth:`refresh`."""

    #: CSS class prefix of the widget's parts (the browser test finds them by it).
    css = "llmlab"

    def __init__(self) -> None:
        self.readout = W.HTML()
        self.plot = W.Image(format="png")
        self.last: dict = {}
        self.widget: W.Widget | None = None

    def _watch(self, *controls: W.Widget) -> None:
        """Call :meth:`refresh` whenever one of ``controls`` changes value."""
        for control in controls:
            control.observe(lambda change: self.refresh(), names="value")

    def _show(self, fig: Figure) -> None:
        """Put ``fig`` (see :func:`llmlab.display.new_figure`) into ``self.plot`` as a PNG."""
        self.plot.value = figure_png(fig)

    def refresh(self) -> None:
        """Recompute from the controls' values and redraw readout and plot."""
        raise NotImplementedError

    @property
    def readout_text(self) -> str:
        """The readout's current HTML text."""
        return self.readout.value

    def _ipython_display_(self) -> None:
        display(self.widget)
