"""Notebook 07: slide the LoRA rank r and read off what it costs and what it can express."""

from __future__ import annotations

import ipywidgets as W
import torch

from .._checks import check_int, check_tensor
from ..lora import break_even_rank, lora_param_count, truncation_error
from ..memory import OPTIMIZER_STATES
from .base import LabWidget, _int_slider

__all__ = ["LoRARankExplorer", "lora_rank_explorer"]


class LoRARankExplorer(LabWidget):
    """Slide the LoRA rank r and read off what it costs and what it can express (topic 7).

    ``delta_W``: a weight update (m, n) from real full fine-tuning; its singular values are
    computed once, so a slider step only sums a few numbers. ``layer_shapes``: the (m, n) of every
    layer LoRA adapts in a model (default: just ``delta_W``'s layer), used for the model-wide
    trainable count and AdamW's optimizer-state bytes (:data:`llmlab.memory.OPTIMIZER_STATES`
    tensors of ``bytes_per_float`` bytes per trainable parameter). Control: ``.r`` (IntSlider,
    1..``max_r``). Readout: ``.readout`` (HTML) with the text of :meth:`readout_for`; ``.last``
    the numbers of :meth:`numbers` at the slider's rank. Display ``.widget``.
    """

    css_prefix, css_box = "llmlab-lora", "llmlab-lora-explorer"
    OPTIMIZER = "adamw"

    def __init__(self, delta_W: torch.Tensor, layer_shapes=None, *, r: int = 8, max_r: int | None = None,
                 bytes_per_float: int = 4):
        super().__init__()
        check_tensor("delta_W", delta_W, dim=2, floating=True, min_numel=1)
        self.m, self.n = delta_W.shape
        self.layer_shapes = [(self.m, self.n)] if layer_shapes is None else _check_shapes(layer_shapes)
        full_rank = min(self.m, self.n)
        max_r = full_rank if max_r is None else check_int("max_r", max_r, low=1, high=full_rank)
        self.bytes_per_float = check_int("bytes_per_float", bytes_per_float, low=1)
        self.break_even = break_even_rank(self.m, self.n)
        self.errors = truncation_error(delta_W, list(range(max_r + 1))).tolist()  # the one SVD
        self.full_params = sum(m * n for m, n in self.layer_shapes)
        self.r = _int_slider("r", r, low=1, high=max_r, description="rank r",
                             continuous_update=True, layout=W.Layout(width="420px"))
        self._assemble(W.VBox([self.r, self.readout]), r=self.r)
        self._watch(self.r)
        self.refresh()

    def numbers(self, r: int) -> dict:
        """Everything the readout shows for rank ``r``, as numbers."""
        states = OPTIMIZER_STATES[self.OPTIMIZER] * self.bytes_per_float  # bytes per trainable parameter
        trainable = sum(lora_param_count(m, n, r) for m, n in self.layer_shapes)
        return {
            "r": r, "layer_params": lora_param_count(self.m, self.n, r), "layer_full": self.m * self.n,
            "trainable": trainable, "full": self.full_params,
            "adam_bytes": states * trainable, "adam_bytes_full": states * self.full_params,
            "error": self.errors[r], "saves": r < self.break_even,
        }

    def readout_for(self, r: int) -> str:
        """The readout's HTML for rank ``r``."""
        x = self.numbers(r)
        return (f"layer {self.m}×{self.n}: r(m+n) = {x['layer_params']:,} vs mn = {x['layer_full']:,} "
                f"({'fewer' if x['saves'] else 'NOT fewer'}: break-even r < {self.break_even:.1f})<br>"
                f"the adapted matrices only (not the whole model): {x['trainable']:,} trainable of {x['full']:,} weights "
                f"({100 * x['trainable'] / x['full']:.2f}%) · Adam states {x['adam_bytes'] / 2**20:.2f} MiB "
                f"vs {x['adam_bytes_full'] / 2**20:.1f} MiB for full fine-tuning of those matrices<br>"
                f"best rank-{r} approximation of the full fine-tuning ΔW: relative error {x['error']:.3f}")

    def refresh(self) -> None:
        """Show the numbers at the slider's rank."""
        self.last = self.numbers(self.r.value)
        self.readout.value = self.readout_for(self.r.value)


def _check_shapes(layer_shapes) -> list[tuple[int, int]]:
    """``layer_shapes``: a non-empty list of (m, n) pairs of ints >= 1."""
    try:
        shapes = [tuple(shape) for shape in layer_shapes]
    except TypeError:
        raise TypeError(f"layer_shapes must be a list of (m, n) pairs, got {layer_shapes!r}") from None
    if not shapes or any(len(shape) != 2 for shape in shapes):
        raise ValueError(f"layer_shapes must be a non-empty list of (m, n) pairs, got {layer_shapes!r}")
    return [(check_int("layer_shapes m", m, low=1), check_int("layer_shapes n", n, low=1)) for m, n in shapes]


def lora_rank_explorer(delta_W: torch.Tensor, layer_shapes=None, **kwargs) -> LoRARankExplorer:
    """Build the :class:`LoRARankExplorer` (see there); display its ``.widget``."""
    return LoRARankExplorer(delta_W, layer_shapes, **kwargs)
