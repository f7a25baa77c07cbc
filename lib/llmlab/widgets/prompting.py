"""Notebook 11: slide β and see which policy the KL-regularised objective asks for, pair by pair."""

from __future__ import annotations

import ipywidgets as W
import torch

from .._checks import check_float, check_tensor
from ..alignment import optimal_policy
from ..plotting import PALETTE
from .base import LabWidget, _log_slider

__all__ = ["DPOBetaExplorer", "dpo_beta_explorer", "BETA_RANGE"]

#: The β the slider offers (log scale).
BETA_RANGE = (0.01, 10.0)


class DPOBetaExplorer(LabWidget):
    """What β means: the policy π*_β ∝ π_ref · exp(r̂ / β) that maximises E[r̂] − β KL(π ‖ π_ref) for the
    implicit reward r̂ a DPO run learned, one decision at a time (topic 12).

    ``reference_logps`` and ``policy_logps``, shape ``(items, K)``: log-probabilities of ``K``
    alternatives (``candidates``, e.g. ending the answer vs going on) under the reference and under the
    trained policy, for each item (``questions``); ``beta_train``: the β of the DPO run, so that
    r̂ = β_train (log π − log π_ref). Over the K alternatives (renormalised), π*_β at β = β_train *is*
    the trained policy; a smaller β buys more reward with more KL, a larger β stays with the
    reference: no β is "better", it sets the exchange rate.

    Controls: ``.beta`` (FloatLogSlider over :data:`BETA_RANGE`) and ``.pair`` (Dropdown over the
    items). ``.readout`` and ``.last`` (:meth:`numbers`) give, for the item and on average over all
    items, the probability of the first alternative under π_ref, the trained policy and π*_β, the
    KL(π*_β ‖ π_ref) and the expected reward; ``.plot`` shows the item's three bars and, against β,
    P*_β(first alternative) and the KL.
    """

    css_prefix, css_box = "llmlab-dpo", "llmlab-dpo-beta-explorer"

    def __init__(self, reference_logps: torch.Tensor, policy_logps: torch.Tensor, *, beta_train: float = 0.1,
                 beta: float | None = None, questions=None, candidates=("stop", "go on"), width: int = 760):
        super().__init__()
        check_tensor("reference_logps", reference_logps, dim=2, floating=True, min_numel=2)
        check_tensor("policy_logps", policy_logps, dim=2, floating=True, min_numel=2)
        if reference_logps.shape != policy_logps.shape:
            raise ValueError(f"reference_logps {tuple(reference_logps.shape)} and policy_logps "
                             f"{tuple(policy_logps.shape)} must have the same shape (items, alternatives)")
        n, k = reference_logps.shape
        candidates = list(candidates)
        if len(candidates) != k or not all(isinstance(c, str) for c in candidates):
            raise ValueError(f"candidates must be {k} strings, one per alternative (column), got {candidates!r}")
        self.beta_train = check_float("beta_train", beta_train, low=0, low_open=True)
        questions = [f"item {i}" for i in range(n)] if questions is None else list(questions)
        if len(questions) != n or not all(isinstance(q, str) for q in questions):
            raise ValueError(f"questions must be {n} strings, one per item, got {len(questions)}")
        self.questions, self.candidates = questions, candidates
        self.reference = torch.log_softmax(reference_logps.detach().double().cpu(), dim=1)
        self.policy = torch.log_softmax(policy_logps.detach().double().cpu(), dim=1)
        self.rewards = self.beta_train * (self.policy - self.reference)
        self.beta = _log_slider("beta", self.beta_train if beta is None else beta, low=BETA_RANGE[0], high=BETA_RANGE[1],
                                step=0.05, description="β",
                                     readout_format=".3f", continuous_update=False, layout=W.Layout(width="420px"))
        self.pair = W.Dropdown(options=[(q, i) for i, q in enumerate(questions)], value=0, description="item")
        self._add_plot(width)
        self._assemble(W.VBox([W.HBox([self.beta, self.pair]), self.readout, self.plot]), beta=self.beta, pair=self.pair)
        self._watch(self.beta, self.pair)
        self.refresh()

    def numbers(self, beta: float, pair: int = 0) -> dict:
        """P(first alternative) under π_ref, the trained policy and π*_β; KL(π*_β ‖ π_ref) and E[r̂]
        under π*_β; for item ``pair`` and averaged over all items."""
        star = optimal_policy(self.reference, self.rewards, beta=beta)  # which checks beta
        trained = self.policy.exp()[:, 0]
        return {"beta": beta, "pair": pair, "question": self.questions[pair],
                "p_reference": float(star.reference_probs[pair, 0]), "p_trained": float(trained[pair]),
                "p_star": float(star.probs[pair, 0]), "kl": float(star.kl[pair]),
                "reward": float(star.expected_reward[pair]),
                "mean_p_reference": float(star.reference_probs[:, 0].mean()), "mean_p_trained": float(trained.mean()),
                "mean_p_star": float(star.probs[:, 0].mean()), "mean_kl": float(star.kl.mean()),
                "mean_reward": float(star.expected_reward.mean())}

    def refresh(self) -> None:
        """Recompute at the slider's β for the selected item; redraw."""
        x = self.numbers(self.beta.value, self.pair.value)
        self.last = x
        first = self.candidates[0]
        self.readout.value = (
            f"β = {x['beta']:.3f} (the DPO run used β = {self.beta_train:g}). <b>{x['question']}</b>: "
            f"P({first}) is {x['p_reference']:.2f} under the reference, {x['p_trained']:.2f} under the trained policy, "
            f"and <b>{x['p_star']:.2f}</b> under the policy that maximises E[r̂] − β·KL (expected reward "
            f"{x['reward']:+.4f}, KL to the reference {x['kl']:.4f} nats).<br>Over all {len(self.questions)} items: "
            f"P({first}) {x['mean_p_reference']:.2f} (reference) → {x['mean_p_star']:.2f}, KL {x['mean_kl']:.4f} nats. "
            f"Smaller β: more reward for more KL (it trusts r̂ more); larger β: closer to the reference.")
        betas = torch.logspace(-2, 1, 61, dtype=torch.float64)
        curve = [optimal_policy(self.reference[x["pair"]], self.rewards[x["pair"]], beta=float(b)) for b in betas]
        with self._figure(8.2, 2.8) as fig:
            ax_bar, ax_curve = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
            ax_bar.bar(["reference", f"trained\n(β = {self.beta_train:g})", f"π*, β = {x['beta']:.2g}"],
                       [x["p_reference"], x["p_trained"], x["p_star"]], color=[PALETTE[2], PALETTE[0], PALETTE[1]])
            ax_bar.set(ylim=(0, 1), ylabel=f"P({first})", title="the selected item")
            ax_curve.plot(betas, [float(c.probs[0]) for c in curve], color=PALETTE[1], label=f"P*({first})")
            ax_curve.set(xscale="log", xlabel="β", ylabel=f"P*({first})", ylim=(0, 1), title="the optimum against β")
            ax_kl = ax_curve.twinx()
            ax_kl.plot(betas, [float(c.kl) for c in curve], color=PALETTE[3], linestyle="--", label="KL(π* ‖ π_ref)")
            ax_kl.set_ylabel("KL(π* ‖ π_ref), nats")
            ax_curve.axvline(x["beta"], color="0.4", lw=1)
            ax_curve.axvline(self.beta_train, color=PALETTE[0], lw=1, linestyle=":")
            lines = ax_curve.get_lines()[:1] + ax_kl.get_lines()
            ax_curve.legend(lines, [line.get_label() for line in lines], loc="center right", fontsize=7)


def dpo_beta_explorer(reference_logps: torch.Tensor, policy_logps: torch.Tensor, **kwargs) -> DPOBetaExplorer:
    """Build the :class:`DPOBetaExplorer` (see there; keywords beta_train, beta, questions, candidates);
    display its ``.widget``."""
    return DPOBetaExplorer(reference_logps, policy_logps, **kwargs)
