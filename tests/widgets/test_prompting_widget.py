"""llmlab.widgets.prompting: the notebook-11 β slider over fixed DPO log-ratios."""

from __future__ import annotations

import pytest
import torch

from llmlab.alignment import dpo_loss
from llmlab.widgets import DPOBetaExplorer, dpo_beta_explorer

CHOSEN = torch.tensor([2.0, 0.5, -1.0, 3.0])
REJECTED = torch.tensor([-4.0, -0.5, 1.0, -2.0])


def test_readout_and_plot_follow_the_slider():
    explorer = dpo_beta_explorer(CHOSEN, REJECTED, beta=0.1)
    assert isinstance(explorer, DPOBetaExplorer) and explorer.plot.value
    first_text, first_png = explorer.readout.value, explorer.plot.value
    assert "β = 0.10" in first_text and explorer.last == explorer.numbers(0.1)
    explorer.beta.value = 1.0
    assert explorer.readout.value != first_text and explorer.plot.value != first_png
    assert "β = 1.00" in explorer.readout.value and explorer.last["beta"] == pytest.approx(1.0)


def test_numbers_are_the_dpo_loss_of_the_log_ratios():
    explorer = dpo_beta_explorer(CHOSEN, REJECTED)
    for beta in (0.05, 0.3, 2.0):
        x = explorer.numbers(beta)
        zero = torch.zeros(4)
        losses, c, r = dpo_loss(CHOSEN, REJECTED, zero, zero, beta=beta)
        assert x["loss"] == pytest.approx(losses.mean().item(), rel=1e-6)
        assert x["margin"] == pytest.approx((c - r).mean().item(), rel=1e-6)
        assert x["accuracy"] == 0.75  # three of four pairs ordered right, whatever β
        assert x["push"] == pytest.approx(torch.sigmoid(-(c - r)).mean().item(), rel=1e-6)
    # a larger β: a larger margin and, for pairs ordered right, less push
    assert explorer.numbers(2.0)["margin"] > explorer.numbers(0.05)["margin"]


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((torch.ones(3), torch.ones(2)), {}, ValueError, "same length"),
    ((torch.ones(2, 2), torch.ones(2, 2)), {}, ValueError, "chosen_logratios must be 1-D"),
    (([1.0], torch.ones(1)), {}, TypeError, "chosen_logratios must be a torch.Tensor"),
    ((torch.ones(2), torch.ones(2)), {"beta": 0}, ValueError, "beta must be a number in"),
])
def test_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        dpo_beta_explorer(*args, **kwargs)
