"""Notebook 11: slide DPO's β and see what the loss makes of the same preference pairs."""

from __future__ import annotations

import ipywidgets as W
import torch

from .._checks import check_float, check_tensor
from ..alignment import dpo_loss
from ..plotting import PALETTE
from .base import LabWidget

__all__ = ["DPOBetaExplorer", "dpo_beta_explorer"]


class DPOBetaExplorer(LabWidget):
    """Slide β of the DPO loss over fixed log-ratios and read off loss, rewards and push (topic 12).

    ``chosen_logratios``, ``rejected_logratios``: log π(y|x) − log π_ref(y|x) of the chosen and
    the rejected answer of each pair, shape ``(pairs,)`` (e.g. held-out pairs after DPO). For a
    β the widget evaluates :func:`llmlab.alignment.dpo_loss`: the implicit rewards β·log-ratio, their
    margin, the loss −log σ(β·Δ) and each pair's gradient weight σ(−β·Δ) — how hard DPO still
    pushes a pair (Δ = chosen − rejected log-ratio). β rescales the rewards but never reorders
    them, so the preference accuracy does not depend on it. Control ``.beta`` (FloatLogSlider,
    0.01..3); ``.readout``, ``.last`` (:meth:`numbers`) and ``.plot`` (the loss against Δ, the
    pairs marked).
    """

    css_prefix, css_box = "llmlab-dpo", "llmlab-dpo-beta-explorer"

    def __init__(self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, *, beta: float = 0.1,
                 width: int = 620):
        super().__init__()
        check_tensor("chosen_logratios", chosen_logratios, dim=1, floating=True, min_numel=1)
        check_tensor("rejected_logratios", rejected_logratios, dim=1, floating=True, min_numel=1)
        if chosen_logratios.shape != rejected_logratios.shape:
            raise ValueError(f"chosen_logratios {tuple(chosen_logratios.shape)} and rejected_logratios "
                             f"{tuple(rejected_logratios.shape)} must have the same length (one entry per pair)")
        beta = check_float("beta", beta, low=0.01, high=3.0)
        self.chosen = chosen_logratios.detach().double().cpu()
        self.rejected = rejected_logratios.detach().double().cpu()
        self.beta = W.FloatLogSlider(value=beta, base=10, min=-2, max=0.477, step=0.05, description="beta",
                                     readout_format=".2f", continuous_update=False, layout=W.Layout(width="420px"))
        self._add_plot(width)
        self._assemble(W.VBox([self.beta, self.readout, self.plot]), beta=self.beta)
        self._watch(self.beta)
        self.refresh()

    def numbers(self, beta: float) -> dict:
        """Mean loss, mean reward margin, preference accuracy and mean gradient weight at ``beta``."""
        beta = check_float("beta", beta, low=0, low_open=True)
        zero = torch.zeros_like(self.chosen)
        losses, chosen_rewards, rejected_rewards = dpo_loss(self.chosen, self.rejected, zero, zero, beta=beta)
        margin = chosen_rewards - rejected_rewards
        return {"beta": beta, "loss": losses.mean().item(), "margin": margin.mean().item(),
                "accuracy": (margin > 0).double().mean().item(),
                "push": torch.sigmoid(-margin).mean().item()}

    def refresh(self) -> None:
        """Recompute at the slider's β and redraw."""
        x = self.numbers(self.beta.value)
        self.last = x
        self.readout.value = (
            f"β = {x['beta']:.2f}: mean DPO loss {x['loss']:.3f} · mean reward margin {x['margin']:.3f} · "
            f"preference accuracy {100 * x['accuracy']:.0f}% (β rescales the rewards, never reorders them)<br>"
            f"mean gradient weight σ(−β·Δ) = {x['push']:.2f}: how hard DPO still pushes these pairs "
            f"(0.5 when the policy equals the reference)")
        delta = self.chosen - self.rejected
        span = max(float(delta.abs().max()) * 1.3, 1.0)
        grid = torch.linspace(-span, span, 200, dtype=torch.float64)
        with self._figure(6.6, 2.8) as fig:
            ax = fig.subplots()
            ax.plot(grid, torch.nn.functional.softplus(-x["beta"] * grid), color=PALETTE[0],
                    label=f"−log σ(β·Δ), β = {x['beta']:.2f}")
            ax.scatter(delta, torch.nn.functional.softplus(-x["beta"] * delta), color=PALETTE[1], zorder=3,
                       label="the pairs")
            ax.axvline(0, color="0.6", lw=0.8)
            ax.set(xlabel="Δ = log-ratio(chosen) − log-ratio(rejected)", ylabel="DPO loss")
            ax.legend(loc="upper right", fontsize=8)


def dpo_beta_explorer(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, **kwargs) -> DPOBetaExplorer:
    """Build the :class:`DPOBetaExplorer` (see there); display its ``.widget``."""
    return DPOBetaExplorer(chosen_logratios, rejected_logratios, **kwargs)
