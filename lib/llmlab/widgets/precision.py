"""Notebook 08: does ``w + u`` survive in fp16, bf16, fp32? And the model-state bytes in fp32 vs mixed precision."""

from __future__ import annotations

import ipywidgets as W
import torch

from .._checks import check_choice
from ..display import html_table
from ..memory import OPTIMIZER_STATES, memory_ledger
from ..precision import smallest_surviving_update, update_survives
from .base import LabWidget, _log_slider

__all__ = ["PrecisionWidget", "precision_widget"]

#: The formats the widget compares, by the name it shows.
FORMATS = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
#: The ledger's columns (bytes), in the order of the table.
LEDGER_KEYS = ("weights", "grads", "master_weights", "optimizer_states", "total")


class PrecisionWidget(LabWidget):
    """A slider for the relative update ``u / w`` and one for the weight ``w``: does ``w + u``
    survive in fp16, bf16 and fp32? Plus a parameter-count slider and an optimizer menu for the
    model-state ledger in fp32 vs mixed precision.

    ``.update`` (log slider, u / w), ``.weight``, ``.params_m`` (millions of parameters) and
    ``.optimizer`` are the controls; ``.readout`` (HTML) shows, per format, whether the update
    survives (:func:`llmlab.precision.update_survives`) and the smallest one that would
    (:func:`llmlab.precision.smallest_surviving_update`); ``.ledger`` (HTML) the bytes of
    :func:`llmlab.memory.memory_ledger`. ``.last`` holds ``survives`` {format: bool},
    ``smallest_surviving`` {format: u / w} and ``ledgers`` {precision: StateLedger}.
    """

    css_prefix, css_box = "llmlab-precision", "llmlab-precision-widget"

    def __init__(self, *, update: float = 1e-4, weight: float = 1.0, params_m: float = 135.0, optimizer: str = "adamw"):
        super().__init__()
        check_choice("optimizer", optimizer, OPTIMIZER_STATES)
        self.update = _log_slider("update", update, low=1e-8, high=1.0, step=0.05, description="u / w",
                                       readout_format=".2e", continuous_update=False)
        self.weight = _log_slider("weight", weight, low=0.01, high=1000.0, step=0.05, description="weight w",
                                       readout_format=".3g", continuous_update=False)
        self.params_m = _log_slider("params_m", params_m, low=1.0, high=1e5, step=0.05, description="params (M)",
                                         readout_format=".4g", continuous_update=False)
        self.optimizer = W.Dropdown(options=list(OPTIMIZER_STATES), value=optimizer, description="optimizer")
        self.ledger = W.HTML()
        self._assemble(W.VBox([W.HBox([self.update, self.weight]), self.readout,
                               W.HBox([self.params_m, self.optimizer]), self.ledger]),
                       update=self.update, weight=self.weight, params_m=self.params_m, optimizer=self.optimizer,
                       ledger=self.ledger)
        self._watch(self.update, self.weight, self.params_m, self.optimizer)
        self.refresh()

    def refresh(self) -> None:
        """Ask the library whether ``w + u`` survives in each format; recompute both ledgers."""
        w, r = self.weight.value, self.update.value
        survives = {name: update_survives(w, w * r, dtype) for name, dtype in FORMATS.items()}
        smallest = {name: smallest_surviving_update(dtype, w) for name, dtype in FORMATS.items()}
        n = int(round(self.params_m.value * 1e6))
        ledgers = {p: memory_ledger(n, optimizer=self.optimizer.value, precision=p) for p in ("fp32", "mixed")}
        self.last = {"survives": survives, "smallest_surviving": smallest, "ledgers": ledgers}
        self.readout.value = f"<b>w = {w:.4g}, update u = {w * r:.3e}</b> (u / w = {r:.2e})" + html_table(
            ["format", "w + u", "smallest surviving u / w"],
            [[name, "kept: w + u != w" if survives[name] else "LOST: w + u == w", f"{smallest[name]:.3e}"]
             for name in FORMATS])
        gib = [[p, *(f"{getattr(led, k) / 2**30:.2f}" for k in LEDGER_KEYS), f"{led.total / max(n, 1):.0f}"]
               for p, led in ledgers.items()]
        self.ledger.value = (f"<b>{n / 1e6:.4g} M parameters, {self.optimizer.value}</b>: model states in GiB"
                             + html_table(["", *LEDGER_KEYS, "B/param"], gib))


def precision_widget(**kwargs) -> PrecisionWidget:
    """The notebook 08 widget: see :class:`PrecisionWidget` (keywords: update, weight, params_m, optimizer)."""
    return PrecisionWidget(**kwargs)
