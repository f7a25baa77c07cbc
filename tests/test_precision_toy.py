"""llmlab.precision.toy: the toy regression of notebook 08, one step function per mode."""

import dataclasses

import numpy as np
import pytest
import torch

from conftest import requires_cuda
from llmlab.precision import TOY_MODES, ToyRun, toy_problem, train_toy

FP16, BF16, FP32 = torch.float16, torch.bfloat16, torch.float32


def test_toy_problem_is_orthogonal_and_starts_in_one_to_two():
    X, y, w_star, w0 = toy_problem(256, 8, seed=3)
    assert X.shape == (256, 8) and y.shape == (256,) and w_star.shape == w0.shape == (8,)
    torch.testing.assert_close(X.T @ X, 256 * torch.eye(8), rtol=0, atol=0)
    torch.testing.assert_close(y, X @ w_star)
    assert bool(((w0 >= 1) & (w0 < 2)).all())
    assert 0.004 <= (w0 - w_star).abs().min() and (w0 - w_star).abs().max() <= 0.012 + 1e-6
    assert all(torch.equal(a, b) for a, b in zip(toy_problem(256, 8, seed=3), (X, y, w_star, w0)))


@pytest.fixture(scope="module")
def toy_runs():
    return {mode: train_toy(mode) for mode in TOY_MODES}


def test_toy_run_is_a_frozen_result(toy_runs):
    run = toy_runs["fp16_master_scaled"]
    assert isinstance(run, ToyRun) and run.mode == "fp16_master_scaled" and run.dtype == FP16
    assert toy_runs["fp32"].dtype == FP32
    assert len(run.losses) == 201 and len(run.underflow) == len(run.scales) == 200
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.skipped = 3


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
    assert set(toy_runs["fp16_master"].scales) == {1.0} and toy_runs["fp16_master"].skipped == 0


def test_toy_bf16_needs_master_but_not_scaling():
    weights, master = train_toy("fp16_weights", dtype=BF16, steps=60), train_toy("fp16_master", dtype="bf16", steps=60)
    assert weights.dtype == master.dtype == BF16
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


def test_toy_is_repeatable_and_seeded():
    a, b = train_toy("fp16_master", steps=20), train_toy("fp16_master", steps=20)
    assert a == b
    assert train_toy("fp16_master", steps=20, seed=1).losses != a.losses


@requires_cuda
def test_toy_on_cuda_with_autocast():
    runs = {mode: train_toy(mode, device="cuda") for mode in TOY_MODES}
    assert len(set(runs["fp16_weights"].losses[1:])) == 1
    assert runs["fp16_master"].underflow[-1] > 0.9 and max(runs["fp16_master_scaled"].underflow) == 0.0
    assert runs["fp16_master"].losses[-1] > 10 * runs["fp16_master_scaled"].losses[-1]


# --- bad inputs --------------------------------------------------------------------------------


@pytest.mark.parametrize("call, match", [
    (lambda: train_toy("fp8"), "mode"),
    (lambda: train_toy("fp32", dtype=FP32), "dtype"),
    (lambda: train_toy("fp32", steps=0), "steps"),
    (lambda: train_toy("fp32", global_batch=8), "global_batch"),
    (lambda: train_toy("fp32", n=1000), "power of two"),
    (lambda: train_toy("fp16_master_scaled", init_scale=0.0), "init_scale"),
    (lambda: train_toy("fp16_master_scaled", growth_interval=0), "growth_interval"),
    (lambda: train_toy("fp16_master_scaled", scaler="apex"), "scaler"),
    (lambda: train_toy("fp32", impl="jit"), "impl"),
    (lambda: toy_problem(n=24, d=4), "power of two"),
    (lambda: toy_problem(n=4, d=4), "n must"),
    (lambda: toy_problem(d=0), "d must"),
])
def test_bad_inputs_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call, match", [
    (lambda: train_toy("fp32", steps=2.0), "steps"),
    (lambda: train_toy("fp32", device=3.5), "device"),
    (lambda: toy_problem(n=True), "n must"),
])
def test_bad_types_raise_type_error(call, match):
    with pytest.raises(TypeError, match=match):
        call()
