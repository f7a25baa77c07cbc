"""Notebook 13: bits, group size and one outlier -> round-to-nearest error and bits per weight."""

from __future__ import annotations

import ipywidgets as W
import torch

from .._checks import check_tensor
from ..display import html_table
from ..plotting import PALETTE
from ..quantization.rtn import quantize_rtn
from .base import LabWidget, _choice_slider, _log_slider

__all__ = ["QuantErrorWidget", "quant_error_widget", "GROUP_OPTIONS", "BITS_OPTIONS"]

#: Group sizes the slider offers, then one scale per row ("channel") and one for the whole matrix.
GROUP_OPTIONS = (8, 16, 32, 64, 128, 256, "channel", "tensor")
BITS_OPTIONS = (2, 3, 4, 8)


def _rel_error(w: torch.Tensor, w_hat: torch.Tensor) -> float:
    return float((w_hat - w).norm() / w.norm())


class QuantErrorWidget(LabWidget):
    """Round-to-nearest on a weight matrix: ``.bits`` (2, 3, 4, 8), ``.group`` (a group size, one scale per
    row, or one per tensor), ``.scheme`` ("symmetric" absmax or "asymmetric" scale + minimum) and
    ``.outlier`` (the first weight of row 0 set to this many times the matrix's largest |w|; 1 = as given).

    ``.readout`` shows bits per weight and the relative error ``||w_hat - w|| / ||w||`` of the matrix, and
    the error of the outlier's group against the median group; ``.plot`` draws the error against the
    group size and the outlier's group on its grid. ``.last`` holds ``bits_per_weight``, ``rel_error``,
    ``group_rms`` (RMS error of the outlier's group, the outlier left out), ``median_group_rms``,
    ``levels_used`` (distinct codes in that group) and ``curve`` {group option: rel_error}.
    """

    css_prefix, css_box = "llmlab-quant", "llmlab-quant-widget"

    def __init__(self, weights: torch.Tensor, *, bits: int = 4, group="channel", symmetric: bool = True,
                 outlier: float = 1.0):
        super().__init__()
        check_tensor("weights", weights, dim=2, floating=True, min_numel=2)
        self.weights = weights.detach().float().cpu()
        self.bits = _choice_slider("bits", bits, BITS_OPTIONS, description="bits", continuous_update=False)
        self.group = _choice_slider("group", group, [(str(g), g) for g in GROUP_OPTIONS],
                                       description="group size", continuous_update=False)
        self.scheme = W.ToggleButtons(options=["symmetric", "asymmetric"],
                                      value="symmetric" if symmetric else "asymmetric", description="scale")
        self.outlier = _log_slider("outlier", outlier, low=1.0, high=100.0, step=0.1, description="outlier ×",
                                        readout_format=".3g", continuous_update=False)
        self._add_plot()
        self._assemble(W.VBox([W.HBox([self.bits, self.group]), W.HBox([self.scheme, self.outlier]), self.readout,
                               self.plot]), bits=self.bits, group=self.group, scheme=self.scheme, outlier=self.outlier)
        self._watch(self.bits, self.group, self.scheme, self.outlier)
        self.refresh()

    def _matrix(self) -> torch.Tensor:
        w = self.weights.clone()
        if self.outlier.value > 1.0:
            w[0, 0] = self.outlier.value * self.weights.abs().max()
        return w

    def refresh(self) -> None:
        """Quantize with every group option (the curve) and the chosen one (readout, grid picture)."""
        w, bits, sym = self._matrix(), self.bits.value, self.scheme.value == "symmetric"
        curve = {g: _rel_error(w, quantize_rtn(w, bits=bits, granularity=g, symmetric=sym).dequantize())
                 for g in GROUP_OPTIONS}
        q = quantize_rtn(w, bits=bits, granularity=self.group.value, symmetric=sym)
        w_hat = q.dequantize()
        n = q.group_size
        first, first_hat = w.reshape(-1)[:n], w_hat.reshape(-1)[:n]
        err_groups = (w_hat - w).reshape(-1)
        rows = w.shape[0] if self.group.value != "tensor" else 1
        per_group = _group_rms(err_groups, q.group_size, rows)
        group_rms = float((first_hat[1:] - first[1:]).pow(2).mean().sqrt()) if n > 1 else 0.0
        self.last = {"bits": bits, "group": self.group.value, "symmetric": sym, "outlier": self.outlier.value,
                     "bits_per_weight": q.bits_per_weight, "rel_error": curve[self.group.value], "curve": curve,
                     "group_rms": group_rms, "median_group_rms": float(per_group.median()),
                     "levels_used": int(q.codes[0, : min(n, q.codes.shape[1])].unique().numel()),
                     "group_weights": first, "group_levels": _levels(q, bits, sym)}
        label = {"channel": f"one scale per row ({w.shape[1]} weights)", "tensor": "one scale for the whole matrix"}
        group_text = label.get(self.group.value, f"groups of {self.group.value}")
        self.readout.value = (
            f"<b>{bits}-bit {self.scheme.value}, {group_text}</b>: "
            f"<b>{q.bits_per_weight:.3f} bits per weight</b> (codes + fp16 scales), "
            f"relative error ||ŵ − w|| / ||w|| = <b>{curve[self.group.value]:.4f}</b>"
            + html_table(["", "RMS error (outlier itself left out)", "codes used"],
                         [["the outlier's group" if self.outlier.value > 1 else "the first group",
                           f"{group_rms:.2e}", f"{self.last['levels_used']} of {2 ** bits}"],
                          ["median group", f"{self.last['median_group_rms']:.2e}", ""]]))
        self._draw()

    def _draw(self) -> None:
        last = self.last
        with self._figure(8.0, 2.8) as fig:
            ax_curve, ax_grid = fig.subplots(1, 2)
            xs = range(len(GROUP_OPTIONS))
            ax_curve.plot(xs, [last["curve"][g] for g in GROUP_OPTIONS], "o-", color=PALETTE[0])
            ax_curve.plot([GROUP_OPTIONS.index(last["group"])], [last["rel_error"]], "o", markersize=12,
                          mfc="none", color=PALETTE[1], label="chosen")
            ax_curve.set_xticks(list(xs), [str(g) for g in GROUP_OPTIONS], fontsize=7)
            # symlog: an error of exactly 0 (e.g. asymmetric 4-bit groups of 32 on Q4_1 weights) stays on the axis
            ax_curve.set_yscale("symlog", linthresh=1e-4)
            ax_curve.set_ylim(bottom=0)
            ax_curve.set(xlabel="weights per scale (group size)", ylabel="relative error ||ŵ − w|| / ||w||",
                         title=f"{last['bits']}-bit, {'symmetric' if last['symmetric'] else 'asymmetric'}")
            ax_curve.legend(fontsize=7)
            g = last["group_weights"][:64]
            ax_grid.plot(range(len(g)), g, "o", markersize=3, color=PALETTE[0], label="weights")
            for i, level in enumerate(last["group_levels"]):
                ax_grid.axhline(level, color="0.7", linewidth=0.6, label="grid levels" if i == 0 else None)
            ax_grid.set(xlabel="weight index (start of the first group)", ylabel="value",
                        title="the first group on its grid")
            ax_grid.legend(fontsize=7, loc="lower right")


def _group_rms(err: torch.Tensor, g: int, rows: int) -> torch.Tensor:
    """RMS error of every group of the matrix (short last groups included)."""
    per_row = err.reshape(rows, -1)
    cols = per_row.shape[1]
    pad = -cols % g
    padded = torch.cat([per_row, per_row.new_full((rows, pad), float("nan"))], dim=1) if pad else per_row
    groups = padded.reshape(-1, g)
    return groups.pow(2).nanmean(-1).sqrt()


def _levels(q, bits: int, symmetric: bool) -> list[float]:
    """The values the first group's codes can decode to (at most 16 drawn)."""
    s = float(q.scale[0, 0])
    codes = range(-(2 ** (bits - 1) - 1), 2 ** (bits - 1)) if symmetric else range(2 ** bits)
    m = 0.0 if q.minimum is None else float(q.minimum[0, 0])
    levels = [s * c + m for c in codes]
    return levels if len(levels) <= 16 else []


def quant_error_widget(weights: torch.Tensor, **kwargs) -> QuantErrorWidget:
    """The notebook 13 widget: see :class:`QuantErrorWidget` (keywords: bits, group, symmetric, outlier)."""
    return QuantErrorWidget(weights, **kwargs)
