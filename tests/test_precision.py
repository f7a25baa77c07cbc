"""Tests for llmlab.precision: lost updates, formats, the memory ledger, loss scaling, the toy run."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from conftest import requires_cuda
from llmlab.precision import (
    TOY_MODES,
    DynamicLossScaler,
    MasterWeightsOptimizer,
    adam_vs_adamw_step,
    block_step_seconds,
    float_format,
    measured_ledger,
    memory_ledger,
    mixed_precision_setup,
    saved_activation_bytes,
    smallest_surviving_update,
    train_toy,
    update_survives,
)

FP16, BF16, FP32 = torch.float16, torch.bfloat16, torch.float32


# --- lost updates -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, expected", [(FP16, False), (BF16, False), (FP32, True), ("fp16", False)])
def test_one_plus_1e4(dtype, expected):
    assert update_survives(1.0, 1e-4, dtype) is expected


def test_round_half_to_even_cases():
    # fp16: ulp(1) = 2^-10. Exactly half an ulp ties to the even neighbour, which is 1 itself.
    assert not update_survives(1.0, 2**-11, FP16)
    assert update_survives(1.0, 2**-11 * (1 + 2**-10), FP16)
    # 1 + 2^-10 has an odd significand: the same tie now rounds *up* (to 1 + 2^-9).
    assert update_survives(1 + 2**-10, 2**-11, FP16)
    assert not update_survives(1.0, 2**-8, BF16)
    assert update_survives(1.0, 2**-8 * (1 + 2**-7), BF16)
    assert update_survives(1.0, 1e-3, FP16) and not update_survives(1.0, 1e-3, BF16)
    # Below 1 the ulp halves: a downward update of 2^-12 ties, just above it survives.
    assert not update_survives(1.0, -(2**-12), FP16)
    assert update_survives(1.0, -(2**-12) * (1 + 2**-10), FP16)


def test_update_survives_matches_numpy_float16():
    rng = np.random.default_rng(0)
    weights = rng.uniform(-4, 4, 500)
    updates = weights * 10 ** rng.uniform(-5, -2, 500) * rng.choice([-1, 1], 500)
    ours = update_survives(torch.tensor(weights), torch.tensor(updates), FP16)
    w16, u16 = weights.astype(np.float16), updates.astype(np.float16)
    reference = (w16 + u16) != w16
    assert ours.dtype == torch.bool and ours.shape == (500,)
    assert ours.numpy().tolist() == reference.tolist()
    assert 0.1 < reference.mean() < 0.9  # both outcomes are exercised


@pytest.mark.parametrize("dtype, bits", [(FP16, 10), (BF16, 7), (FP32, 23)])
def test_smallest_surviving_update_at_one(dtype, bits):
    r = smallest_surviving_update(dtype)
    # The next float above half an ulp: 2^-(bits+1) (1 + 2^-bits), not 2^-(bits+1) itself.
    assert r == 2.0 ** -(bits + 1) * (1 + 2.0**-bits)
    assert update_survives(1.0, r, dtype) and not update_survives(1.0, 2.0 ** -(bits + 1), dtype)


def test_smallest_surviving_update_odd_significand_and_random_weights():
    w = 1 + 2**-10
    assert smallest_surviving_update(FP16, w) == pytest.approx(2**-11 / w, rel=1e-12)
    rng = np.random.default_rng(1)
    for w in rng.uniform(0.01, 100, 25):
        w16 = np.float16(w)
        u = np.float16(smallest_surviving_update(FP16, float(w)) * float(w16))
        below = np.nextafter(u, np.float16(0))
        assert w16 + u != w16 and w16 + below == w16
        assert 2**-12 <= float(u) / float(w16) <= 2**-10


def test_float_format_table():
    f16, b16, f32 = float_format(FP16), float_format("bf16"), float_format(FP32)
    assert (f16.exponent_bits, f16.mantissa_bits, f16.max, f16.min_normal, f16.min_subnormal, f16.eps) == (
        5, 10, 65504.0, 2.0**-14, 2.0**-24, 2.0**-10)
    assert (b16.exponent_bits, b16.mantissa_bits, b16.min_normal, b16.eps) == (8, 7, 2.0**-126, 2.0**-7)
    assert b16.max == pytest.approx(3.3895e38, rel=1e-4) and b16.min_subnormal == 2.0**-133
    assert (f32.exponent_bits, f32.mantissa_bits, f32.eps) == (8, 23, 2.0**-23)
    assert float(torch.tensor(f16.min_subnormal, dtype=FP16)) == f16.min_subnormal
    assert float(torch.tensor(f16.min_subnormal / 2, dtype=FP16)) == 0.0  # ties to even: flushed


# --- the memory ledger ------------------------------------------------------------------------


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64))


def _one_step(model, opt, dtype=FP32):
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(0)).to(dtype)
    model(x).float().pow(2).mean().backward()
    opt.step()


def test_ledger_formula_16_bytes_per_param_both_ways():
    model = _mlp()
    n = sum(p.numel() for p in model.parameters())
    mixed, fp32 = memory_ledger(model), memory_ledger(model, precision="fp32")
    assert mixed == {"weights": 2 * n, "grads": 2 * n, "master_weights": 4 * n, "optimizer_states": 8 * n, "total": 16 * n}
    assert fp32 == {"weights": 4 * n, "grads": 4 * n, "master_weights": 0, "optimizer_states": 8 * n, "total": 16 * n}
    assert memory_ledger(1000, optimizer="sgd", precision="fp32")["total"] == 8000
    assert memory_ledger(1000, optimizer="sgd_momentum")["total"] == 12000
    assert memory_ledger(1000, optimizer="adam")["optimizer_states"] == 8000


def test_ledger_counts_tied_weights_once_and_frozen_weights_without_states(tiny_llama):
    model = copy.deepcopy(tiny_llama)
    n = sum(p.numel() for p in model.parameters())
    assert n < sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))  # tied
    assert memory_ledger(model)["total"] == 16 * n
    frozen = model.model.embed_tokens.weight
    frozen.requires_grad_(False)
    ledger = memory_ledger(model, precision="fp32")
    assert ledger["weights"] == 4 * n and ledger["grads"] == 4 * (n - frozen.numel())


def test_measured_fp32_adamw_matches_formula():
    model = _mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _one_step(model, opt)
    measured, formula = measured_ledger(model, opt), memory_ledger(model, precision="fp32")
    for key in ("weights", "grads", "master_weights", "optimizer_states"):
        assert measured[key] == formula[key], key
    assert measured["other"] == 4 * len(list(model.parameters()))  # AdamW's `step` scalars
    assert abs(measured["total"] / formula["total"] - 1) < 0.02


@pytest.mark.parametrize("dtype", [FP16, BF16])
def test_measured_mixed_adamw_matches_formula(dtype):
    model = _mlp()
    reference = copy.deepcopy(model)
    opt = mixed_precision_setup(model, dtype, optimizer="adamw", lr=1e-3)
    assert all(p.dtype == dtype for p in model.parameters())
    assert all(m.dtype == FP32 for m in opt.master_params)
    # The master copy starts from the fp32 weights, not from their rounded half copy.
    torch.testing.assert_close(opt.master_params[0], reference[0].weight.detach(), rtol=0, atol=0)
    _one_step(model, opt, dtype)
    measured, formula = measured_ledger(model, opt), memory_ledger(model, precision="mixed")
    for key in ("weights", "grads", "master_weights", "optimizer_states"):
        assert measured[key] == formula[key], key
    assert abs(measured["total"] / formula["total"] - 1) < 0.02
    assert formula["total"] == memory_ledger(reference, precision="fp32")["total"]


def test_master_weights_step_equals_fp32_adamw_on_the_master():
    """The master update is exactly torch AdamW run on fp32 params with the upcast half grads."""
    model = _mlp()
    reference = copy.deepcopy(model)
    opt = mixed_precision_setup(model, FP16, optimizer="adamw", lr=1e-2)
    ref_opt = torch.optim.AdamW(reference.parameters(), lr=1e-2)
    for _ in range(3):
        _one_step(model, opt, FP16)
        for p, q in zip(model.parameters(), reference.parameters()):
            q.grad = p.grad.float()
        ref_opt.step()
        opt.zero_grad()
    for m, q, p in zip(opt.master_params, reference.parameters(), model.parameters()):
        torch.testing.assert_close(m, q.detach(), rtol=0, atol=0)
        torch.testing.assert_close(p, q.detach().half(), rtol=0, atol=0)


def test_measured_ledger_needs_a_step_and_right_types():
    model = _mlp()
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match="after one optimizer step"):
        measured_ledger(model, opt)
    with pytest.raises(TypeError, match="optimizer"):
        measured_ledger(model, "adamw")
    with pytest.raises(TypeError, match="model"):
        measured_ledger("model", opt)


# --- activations: where the saving is ----------------------------------------------------------


def test_saved_activation_bytes_halve_in_bf16():
    torch.manual_seed(0)
    chain = nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(32, 32), nn.Tanh())])
    x = torch.randn(16, 32)
    fp32 = saved_activation_bytes(chain, x)
    # Each Linear saves its input, each Tanh its output, which is the next Linear's input (counted
    # once): the input x plus 4 Tanh outputs, 5 distinct tensors of 16 x 32 floats.
    assert fp32 == 5 * 16 * 32 * 4
    assert saved_activation_bytes(copy.deepcopy(chain).to(BF16), x.to(BF16)) == fp32 // 2


def test_saved_activation_bytes_on_a_llama(tiny_llama):
    ids = torch.randint(0, 97, (2, 32), generator=torch.Generator().manual_seed(0))
    fp32 = saved_activation_bytes(tiny_llama, {"input_ids": ids})
    bf16 = saved_activation_bytes(copy.deepcopy(tiny_llama).to(BF16), {"input_ids": ids})
    assert 0.45 < bf16 / fp32 < 0.7  # RMSNorm and softmax keep a few fp32 tensors


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


# --- loss scaling and the toy run ---------------------------------------------------------------


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


@pytest.fixture(scope="module")
def toy_runs():
    return {mode: train_toy(mode) for mode in TOY_MODES}


def test_toy_fp16_weights_stall_master_learns(toy_runs):
    fp32, weights, master, scaled = (toy_runs[m] for m in TOY_MODES)
    assert len(fp32.losses) == 201 and len(fp32.underflow) == 200
    # X^T X = n I, so fp32 SGD contracts w - w* by exactly 1 - lr * 2 n / global_batch = 31/32.
    assert fp32.losses[100] / fp32.losses[0] == pytest.approx((31 / 32) ** 200, rel=1e-3)
    # No update survives the fp16 rounding: the weights never move.
    assert len(set(weights.losses[1:])) == 1 and weights.losses[-1] > 0.95 * weights.losses[0]
    assert master.losses[-1] < 0.3 * master.losses[0]
    assert scaled.losses[-1] < 0.01 * scaled.losses[0]
    assert master.losses[-1] > 10 * scaled.losses[-1]  # the unscaled run stalls on underflow


def test_toy_underflow_without_scaling_only(toy_runs):
    assert max(toy_runs["fp32"].underflow) == 0.0
    assert toy_runs["fp16_master"].underflow[0] > 0.2
    assert toy_runs["fp16_master"].underflow[-1] > 0.9
    assert max(toy_runs["fp16_master_scaled"].underflow) == 0.0
    assert toy_runs["fp16_master_scaled"].scales[0] == 2.0**16


def test_toy_bf16_needs_master_but_not_scaling():
    weights, master = train_toy("fp16_weights", dtype=BF16, steps=60), train_toy("fp16_master", dtype=BF16, steps=60)
    assert len(set(weights.losses[1:])) == 1
    assert master.losses[-1] < 0.5 * master.losses[0]
    assert max(master.underflow) == 0.0


def test_toy_scaler_llmlab_equals_torch_gradscaler():
    kw = dict(steps=120, init_scale=2.0**32, growth_interval=10)
    ours, theirs = train_toy("fp16_master_scaled", **kw), train_toy("fp16_master_scaled", scaler="torch", **kw)
    assert ours.skipped >= 3  # 2^32 overflows the fp16 gradient: steps skipped, scale backed off
    assert ours.scales == theirs.scales and ours.skipped == theirs.skipped
    assert ours.losses == theirs.losses


def test_toy_explicit_half_tensors_agree_with_torch_autocast():
    for mode in ("fp16_master", "fp16_master_scaled"):
        explicit, autocast = train_toy(mode, steps=80), train_toy(mode, steps=80, impl="autocast")
        ratio = np.array(autocast.losses) / np.array(explicit.losses)
        assert np.all(np.abs(np.log(ratio)) < 0.3), mode
        assert abs(np.mean(autocast.underflow) - np.mean(explicit.underflow)) < 0.05, mode


@requires_cuda
def test_toy_on_cuda_with_autocast():
    runs = {mode: train_toy(mode, device="cuda") for mode in TOY_MODES}
    assert len(set(runs["fp16_weights"].losses[1:])) == 1
    assert runs["fp16_master"].underflow[-1] > 0.9 and max(runs["fp16_master_scaled"].underflow) == 0.0
    assert runs["fp16_master"].losses[-1] > 10 * runs["fp16_master_scaled"].losses[-1]


# --- step time ------------------------------------------------------------------------------------


def test_block_step_seconds_on_cpu_restores_matmul_precision():
    before = torch.get_float32_matmul_precision()
    for mode in ("fp32", "bf16"):
        seconds = block_step_seconds(mode, d_model=32, n_heads=2, batch=2, seq=8, repeat=1, warmup=1)
        assert 0 < seconds < 60
    assert torch.get_float32_matmul_precision() == before
    with pytest.raises(ValueError, match="tf32"):
        block_step_seconds("tf32")


@requires_cuda
def test_block_step_seconds_on_cuda():
    for mode in ("fp32", "tf32", "bf16"):
        assert block_step_seconds(mode, device="cuda", repeat=2) > 0


# --- the default model -------------------------------------------------------------------------


@pytest.mark.slow
def test_default_lm_ledger_measured_vs_formula(default_lm):
    model = default_lm[0]  # shared fixture: lr = 0 leaves its weights as they are
    n = sum(p.numel() for p in model.parameters())
    assert 130e6 < n < 140e6
    assert memory_ledger(model)["total"] == memory_ledger(model, precision="fp32")["total"] == 16 * n
    before = model.lm_head.weight.detach().clone()
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    ids = torch.arange(8)[None] + 100
    try:
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        measured, formula = measured_ledger(model, opt), memory_ledger(model, precision="fp32")
    finally:
        model.zero_grad(set_to_none=True)
    assert abs(measured["total"] / formula["total"] - 1) < 0.02
    assert measured["optimizer_states"] == 2 * measured["weights"]
    assert torch.equal(model.lm_head.weight, before)


# --- bad inputs --------------------------------------------------------------------------------


@pytest.mark.parametrize("call, match", [
    (lambda: update_survives(1.0, 1e-4, torch.int32), "dtype"),
    (lambda: update_survives(1.0, 1e-4, "fp8"), "dtype"),
    (lambda: update_survives(float("inf"), 1e-4, FP16), "weight"),
    (lambda: smallest_surviving_update(FP16, -1.0), "weight"),
    (lambda: smallest_surviving_update(FP16, 0.0), "weight"),
    (lambda: smallest_surviving_update(FP16, 1e6), "weight"),  # inf in fp16
    (lambda: memory_ledger(10, optimizer="lion"), "optimizer"),
    (lambda: memory_ledger(10, precision="fp16"), "precision"),
    (lambda: memory_ledger(-1), "model"),
    (lambda: train_toy("fp8"), "mode"),
    (lambda: train_toy("fp32", dtype=FP32), "dtype"),
    (lambda: train_toy("fp32", steps=0), "steps"),
    (lambda: train_toy("fp32", lr=-1.0), "lr"),
    (lambda: train_toy("fp32", global_batch=8), "global_batch"),
    (lambda: train_toy("fp16_master_scaled", scaler="apex"), "scaler"),
    (lambda: train_toy("fp32", impl="jit"), "impl"),
    (lambda: mixed_precision_setup(_mlp(), FP32), "dtype"),
    (lambda: MasterWeightsOptimizer([], "adamw"), "params"),
    (lambda: MasterWeightsOptimizer(_mlp().parameters(), "lion"), "optimizer"),
    (lambda: DynamicLossScaler(init_scale=0), "init_scale"),
    (lambda: DynamicLossScaler(backoff_factor=2.0), "backoff_factor"),
    (lambda: DynamicLossScaler(growth_interval=0), "growth_interval"),
    (lambda: block_step_seconds("fp16"), "mode"),
    (lambda: block_step_seconds("fp32", d_model=30, n_heads=4), "d_model"),
    (lambda: block_step_seconds("fp32", repeat=0), "repeat"),
])
def test_bad_inputs_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call, match", [
    (lambda: update_survives("1", 1e-4, FP16), "weight"),
    (lambda: memory_ledger("gpt2"), "model"),
    (lambda: smallest_surviving_update(FP16, "1"), "weight"),
])
def test_bad_types_raise_type_error(call, match):
    with pytest.raises(TypeError, match=match):
        call()
