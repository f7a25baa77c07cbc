"""llmlab.widgets.prompting: the notebook-11 β explorer (the optimum of E[r̂] − β KL, item by item)."""

from __future__ import annotations

import pytest
import torch

from llmlab.alignment import optimal_policy
from llmlab.widgets import DPOBetaExplorer, dpo_beta_explorer

# three items, two alternatives each (e.g. stop / go on): reference and trained log-probabilities
REF = torch.log(torch.tensor([[0.35, 0.65], [0.10, 0.90], [0.60, 0.40]]))
POL = torch.log(torch.tensor([[0.50, 0.50], [0.30, 0.70], [0.40, 0.60]]))


def explorer(**kwargs):
    return dpo_beta_explorer(REF, POL, questions=["q0", "q1", "q2"], **kwargs)


def test_readout_and_plot_follow_both_controls():
    w = explorer()
    assert isinstance(w, DPOBetaExplorer) and w.plot.value and w.last == w.numbers(0.1, 0)
    text, png = w.readout.value, w.plot.value
    w.beta.value = 1.0
    assert w.readout.value != text and w.plot.value != png and "β = 1.000" in w.readout.value
    w.pair.value = 2
    assert w.last["question"] == "q2" and "<b>q2</b>" in w.readout.value and "P(stop)" in w.readout.value


def test_at_the_training_beta_the_optimum_is_the_trained_policy():
    w = explorer(beta_train=0.1)
    for item in range(3):
        x = w.numbers(0.1, item)
        assert x["p_star"] == pytest.approx(POL[item, 0].exp().item(), rel=1e-6) == pytest.approx(x["p_trained"])
        assert x["p_reference"] == pytest.approx(REF[item, 0].exp().item(), rel=1e-6)
        far = w.numbers(1e6, item)
        assert far["p_star"] == pytest.approx(x["p_reference"], abs=1e-6) and far["kl"] == pytest.approx(0, abs=1e-9)


def test_smaller_beta_buys_reward_with_kl():
    w = explorer()
    xs = [w.numbers(b, 1) for b in (0.02, 0.1, 0.5, 2.0)]
    assert all(a["kl"] > b["kl"] for a, b in zip(xs, xs[1:]))
    assert all(a["reward"] > b["reward"] for a, b in zip(xs, xs[1:]))
    assert w.numbers(0.001, 2)["p_star"] < 1e-3    # item 2: training lowered P(stop); β → 0 follows the reward down
    assert w.numbers(0.001, 0)["p_star"] > 1 - 1e-3


def test_optimal_policy_matches_its_definition_on_random_candidates():
    g = torch.Generator().manual_seed(0)
    ref, r = torch.randn(5, 4, generator=g, dtype=torch.float64) * 3, torch.randn(5, 4, generator=g, dtype=torch.float64)
    beta = 0.3
    star = optimal_policy(ref, r, beta=beta)
    weights = torch.softmax(ref, -1) * torch.exp(r / beta)
    torch.testing.assert_close(star.probs, weights / weights.sum(-1, keepdim=True))
    # the optimum of E[r] − β KL: no other distribution does better (200 random ones per row)
    objective = lambda p: (p * r).sum(-1) - beta * (p * (p.log() - torch.log_softmax(ref, -1))).sum(-1)
    best = objective(star.probs)
    for _ in range(200):
        other = torch.softmax(torch.randn(5, 4, generator=g, dtype=torch.float64) * 2, -1)
        assert (objective(other) <= best + 1e-12).all()
    torch.testing.assert_close(star.kl, (star.probs * (star.probs.log() - torch.log_softmax(ref, -1))).sum(-1))


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((torch.ones(3, 2), torch.ones(2, 2)), {}, ValueError, "same shape"),
    ((torch.ones(4), torch.ones(4)), {}, ValueError, "reference_logps must be 2-D"),
    (([[1.0, 0.0]], torch.ones(1, 2)), {}, TypeError, "reference_logps must be a torch.Tensor"),
    ((torch.ones(2, 2), torch.ones(2, 2)), {"beta": 0}, ValueError, "beta must be a number in"),
    ((torch.ones(2, 2), torch.ones(2, 2)), {"beta_train": -1.0}, ValueError, "beta_train"),
    ((torch.ones(2, 2), torch.ones(2, 2)), {"questions": ["one"]}, ValueError, "questions must be 2 strings"),
    ((torch.ones(2, 3), torch.ones(2, 3)), {}, ValueError, "candidates must be 3 strings"),
])
def test_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        dpo_beta_explorer(*args, **kwargs)
