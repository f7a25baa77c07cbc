"""llmlab.precision.mixed: the fp32 master copy, dynamic loss scaling, Adam vs AdamW, against torch."""

import copy

import pytest
import torch
from torch import nn

from conftest import one_step, small_mlp
from llmlab.memory import StateLedger
from llmlab.precision import (
    DynamicLossScaler,
    MasterWeightsOptimizer,
    adam_vs_adamw_step,
    measured_ledger,
    memory_ledger,
    mixed_precision_setup,
)

FP16, BF16, FP32 = torch.float16, torch.bfloat16, torch.float32


# --- the master copy ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [FP16, BF16])
def test_measured_mixed_adamw_matches_formula(dtype):
    model = small_mlp()
    reference = copy.deepcopy(model)
    opt = mixed_precision_setup(model, dtype, optimizer="adamw", lr=1e-3)
    assert all(p.dtype == dtype for p in model.parameters())
    assert all(m.dtype == FP32 for m in opt.master_params)
    # The master copy starts from the fp32 weights, not from their rounded half copy.
    torch.testing.assert_close(opt.master_params[0], reference[0].weight.detach(), rtol=0, atol=0)
    one_step(model, opt, dtype)
    measured, formula = measured_ledger(model, opt), memory_ledger(model, precision="mixed")
    assert isinstance(measured, StateLedger) and isinstance(formula, StateLedger)
    for key in ("weights", "grads", "master_weights", "optimizer_states"):
        assert getattr(measured, key) == getattr(formula, key), key
    assert abs(measured.total / formula.total - 1) < 0.02
    assert formula.total == memory_ledger(reference, precision="fp32").total


def test_master_weights_step_equals_fp32_adamw_on_the_master():
    """The master update is exactly torch AdamW run on fp32 params with the upcast half grads."""
    model = small_mlp()
    reference = copy.deepcopy(model)
    opt = mixed_precision_setup(model, FP16, optimizer="adamw", lr=1e-2)
    ref_opt = torch.optim.AdamW(reference.parameters(), lr=1e-2)
    for _ in range(3):
        one_step(model, opt, FP16)
        for p, q in zip(model.parameters(), reference.parameters()):
            q.grad = p.grad.float()
        ref_opt.step()
        opt.zero_grad()
    for m, q, p in zip(opt.master_params, reference.parameters(), model.parameters()):
        torch.testing.assert_close(m, q.detach(), rtol=0, atol=0)
        torch.testing.assert_close(p, q.detach().half(), rtol=0, atol=0)


@pytest.mark.parametrize("name, cls, momentum", [("sgd", torch.optim.SGD, 0), ("sgd_momentum", torch.optim.SGD, 0.9),
                                                 ("adam", torch.optim.Adam, None), ("adamw", torch.optim.AdamW, None)])
def test_master_weights_inner_optimizer(name, cls, momentum):
    opt = MasterWeightsOptimizer(small_mlp().to(BF16).parameters(), name, lr=0.5)
    assert type(opt.optimizer) is cls and opt.param_groups[0]["lr"] == 0.5
    if momentum is not None:
        assert opt.param_groups[0]["momentum"] == momentum
    assert not hasattr(opt, "optimizer_name")


def test_master_weights_skip_frozen_params_and_zero_grad():
    model = small_mlp().to(BF16)
    model[0].weight.requires_grad_(False)
    opt = MasterWeightsOptimizer(model.parameters(), "sgd", lr=0.1)
    assert len(opt.master_params) == 3
    one_step(model, opt, BF16)
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in opt.model_params)
    opt.zero_grad()
    assert all(p.grad is None for p in opt.model_params)
    assert all(m.grad is None for m in opt.master_params)  # master grads are freed after each step


# --- Adam vs AdamW ----------------------------------------------------------------------------


def test_adam_l2_vs_adamw_against_the_formulas():
    w, g = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.1, 0.01, -1e-3])
    lr, wd, b1, b2, eps = 1e-2, 0.1, 0.9, 0.999, 1e-8
    out = adam_vs_adamw_step(w, g, lr=lr, weight_decay=wd, betas=(b1, b2), eps=eps)

    def adam_direction(grad):  # one bias-corrected Adam step from zero moments
        m_hat = (1 - b1) * grad / (1 - b1)
        v_hat = (1 - b2) * grad**2 / (1 - b2)
        return m_hat / (v_hat.sqrt() + eps)

    torch.testing.assert_close(out["adam_l2"], w - lr * adam_direction(g + wd * w))
    torch.testing.assert_close(out["adamw"], w - lr * wd * w - lr * adam_direction(g))
    assert (out["adam_l2"] - out["adamw"]).abs().max() > 1e-3
    same = adam_vs_adamw_step(w, g, lr=lr, weight_decay=0.0)
    torch.testing.assert_close(same["adam_l2"], same["adamw"])
    # Bias correction in both: the first step moves each weight by lr, not lr * (1-b1)/sqrt(1-b2) = 3.16 lr.
    torch.testing.assert_close((same["adamw"] - w).abs(), torch.full((3,), lr), rtol=1e-4, atol=1e-7)
    assert torch.equal(w, torch.tensor([1.0, -2.0, 0.5]))  # the input is not modified


# --- loss scaling -----------------------------------------------------------------------------


def test_dynamic_loss_scaler_matches_torch_gradscaler_rule():
    """Same sequence of finite / overflowing gradients -> same scales as torch.amp.GradScaler."""
    ours = DynamicLossScaler(init_scale=2.0**10, growth_interval=3)
    theirs = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3)
    p = nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([p], lr=0.1)
    pattern = [1, 1, 1, 1, float("inf"), 1, float("nan"), 1, 1, 1, 1, 1, 1]
    for value in pattern:
        theirs.scale(torch.ones(()))  # as scaler.scale(loss) would, each iteration
        grad = torch.full((4,), value) * theirs.get_scale()
        p.grad = grad.clone()
        theirs.step(opt)
        theirs.update()
        found_inf = ours.unscale_([grad])
        ours.update(found_inf)
        assert found_inf == (value != 1)
        assert ours.scale == theirs.get_scale()
        if not found_inf:
            torch.testing.assert_close(grad, torch.ones(4))


def test_scale_loss_multiplies_and_unscale_skips_missing_grads():
    scaler = DynamicLossScaler(init_scale=8.0)
    assert scaler.scale_loss(torch.tensor(0.5)).item() == 4.0
    g = torch.full((2,), 8.0)
    assert scaler.unscale_([None, g]) is False and g.tolist() == [1.0, 1.0]


# --- bad inputs --------------------------------------------------------------------------------


@pytest.mark.parametrize("call, match", [
    (lambda: mixed_precision_setup(small_mlp(), FP32), "dtype"),
    (lambda: mixed_precision_setup(small_mlp(), FP16, lr=-1.0), "lr"),
    (lambda: MasterWeightsOptimizer([], "adamw"), "params"),
    (lambda: MasterWeightsOptimizer(small_mlp().parameters(), "lion"), "optimizer"),
    (lambda: MasterWeightsOptimizer(small_mlp().parameters(), lr=-1), "lr"),
    (lambda: MasterWeightsOptimizer(small_mlp().parameters(), lr=float("nan")), "lr"),
    (lambda: MasterWeightsOptimizer(small_mlp().parameters(), weight_decay=-0.1), "weight_decay"),
    (lambda: MasterWeightsOptimizer(small_mlp().parameters(), "sgd_momentum", momentum=1.5), "momentum"),
    (lambda: MasterWeightsOptimizer(small_mlp().parameters(), master=[torch.zeros(1)]), "master"),
    (lambda: DynamicLossScaler(init_scale=0), "init_scale"),
    (lambda: DynamicLossScaler(init_scale=float("inf")), "init_scale"),
    (lambda: DynamicLossScaler(growth_factor=1.0), "growth_factor"),
    (lambda: DynamicLossScaler(backoff_factor=2.0), "backoff_factor"),
    (lambda: DynamicLossScaler(growth_interval=0), "growth_interval"),
    (lambda: adam_vs_adamw_step(torch.ones(3), torch.ones(3), betas=(1.0, 0.999)), r"betas\[0\]"),
    (lambda: adam_vs_adamw_step(torch.ones(3), torch.ones(3), betas=(0.9, -0.1)), r"betas\[1\]"),
    (lambda: adam_vs_adamw_step(torch.ones(3), torch.ones(3), lr=-1e-3), "lr"),
    (lambda: adam_vs_adamw_step(torch.ones(3), torch.ones(3), lr=float("inf")), "lr"),
    (lambda: adam_vs_adamw_step(torch.ones(3), torch.ones(3), eps=0.0), "eps"),
    (lambda: adam_vs_adamw_step(torch.ones(3), torch.ones(3), weight_decay=-0.1), "weight_decay"),
    (lambda: adam_vs_adamw_step(torch.ones(3), torch.ones(2)), "grad"),
])
def test_bad_values_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call, match", [
    (lambda: mixed_precision_setup("model", FP16), "model"),
    (lambda: MasterWeightsOptimizer(3), "params"),
    (lambda: DynamicLossScaler(growth_interval=2.5), "growth_interval"),
    (lambda: DynamicLossScaler(init_scale="big"), "init_scale"),
    (lambda: adam_vs_adamw_step([1.0], torch.ones(1)), "weight"),
    (lambda: adam_vs_adamw_step(torch.ones(3), torch.ones(3), betas=0.9), "betas"),
    (lambda: adam_vs_adamw_step(torch.ones(3), torch.ones(3), lr=True), "lr"),
])
def test_bad_types_raise_type_error(call, match):
    with pytest.raises(TypeError, match=match):
        call()
