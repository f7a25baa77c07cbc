"""llmlab.accumulation against plain PyTorch autograd on tiny models (CPU, a few seconds)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from llmlab.accumulation import (
    KINDS,
    accumulated_grads,
    accumulation_pass,
    batchnorm_running_stats,
    divisors,
    full_batch_grads,
    loss_fn_for,
    make_batch,
    make_model,
    make_token_batch,
    make_token_model,
    micro_batch_token_counts,
    relative_difference,
    token_loss_grads,
    train_with_accumulation,
)


def _problem(kind, dtype=torch.float32, batch_size=32, seed=0):
    return make_model(kind, seed=seed, dtype=dtype), loss_fn_for(kind), *make_batch(kind, batch_size, seed=seed, dtype=dtype)


def _torch_grads(model, loss):
    """Reference: one torch.autograd.grad call on a fresh copy's loss."""
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    return dict(zip(names, torch.autograd.grad(loss, params)))


def _snapshot(model):
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "modes": [m.training for m in model.modules()],
    }


def _assert_unchanged(model, before):
    after = _snapshot(model)
    assert after["modes"] == before["modes"]
    assert before["state"].keys() == after["state"].keys()
    for k in before["state"]:
        assert torch.equal(before["state"][k], after["state"][k]), k
    for n, g in before["grads"].items():
        if g is None:
            assert after["grads"][n] is None, n
        else:
            assert torch.equal(g, after["grads"][n]), n


# --- the identity and its peer -----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_full_batch_grads_match_torch_autograd(kind):
    model, loss_fn, x, y = _problem(kind)
    ours = full_batch_grads(model, loss_fn, x, y)
    model_copy = copy.deepcopy(model)
    reference = _torch_grads(model_copy, loss_fn(model_copy(x), y))
    assert ours.keys() == reference.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], reference[name], rtol=0, atol=0)


@pytest.mark.parametrize("steps", [2, 4, 8, 32])
def test_linear_mse_accumulation_equals_full_batch(steps):
    model, loss_fn, x, y = _problem("linear")
    full = full_batch_grads(model, loss_fn, x, y)
    assert 0 < relative_difference(accumulated_grads(model, loss_fn, x, y, steps), full) <= 1e-6
    model64, _, x64, y64 = _problem("linear", torch.float64)
    full64 = full_batch_grads(model64, loss_fn, x64, y64)
    assert relative_difference(accumulated_grads(model64, loss_fn, x64, y64, steps), full64) <= 1e-13


@pytest.mark.parametrize("steps", [2, 4, 8, 16])
def test_without_scaling_the_gradient_is_steps_times_too_large(steps):
    model, loss_fn, x, y = _problem("linear", torch.float64)
    full = full_batch_grads(model, loss_fn, x, y)
    unscaled = accumulated_grads(model, loss_fn, x, y, steps, scale_loss=False)
    assert relative_difference(unscaled, full) == pytest.approx(steps - 1, rel=1e-12)
    for name in full:
        torch.testing.assert_close(unscaled[name], steps * full[name], rtol=1e-12, atol=1e-14)
    # float32 too: K - 1 up to rounding
    model32, _, x32, y32 = _problem("linear")
    diff32 = relative_difference(accumulated_grads(model32, loss_fn, x32, y32, steps, scale_loss=False),
                                 full_batch_grads(model32, loss_fn, x32, y32))
    assert diff32 == pytest.approx(steps - 1, rel=1e-5)


def test_steps_one_is_the_full_batch_and_scaling_is_moot():
    model, loss_fn, x, y = _problem("cnn_bn")
    full = full_batch_grads(model, loss_fn, x, y)
    for scale in (True, False):
        one = accumulated_grads(model, loss_fn, x, y, 1, scale_loss=scale)
        assert relative_difference(one, full) == 0.0


# --- BatchNorm breaks it, GroupNorm / eval-mode BN do not ---------------------------------------


@pytest.mark.parametrize("steps", [2, 4, 8])
def test_batchnorm_in_train_mode_differs_clearly(steps):
    model, loss_fn, x, y = _problem("cnn_bn")
    diff = relative_difference(accumulated_grads(model, loss_fn, x, y, steps), full_batch_grads(model, loss_fn, x, y))
    assert diff > 1e-2  # orders of magnitude above rounding (~1e-7)


def test_batchnorm_accumulation_is_the_mean_of_micro_batch_gradients():
    """What BN accumulation really computes: the average of K independent small-batch gradients."""
    model, loss_fn, x, y = _problem("cnn_bn", torch.float64)
    steps = 4
    acc = accumulated_grads(model, loss_fn, x, y, steps)
    per_micro = [full_batch_grads(model, loss_fn, x_j, y_j) for x_j, y_j in zip(x.chunk(steps), y.chunk(steps))]
    mean = {n: sum(g[n] for g in per_micro) / steps for n in acc}
    assert relative_difference(acc, mean) < 1e-13


@pytest.mark.parametrize("steps", [2, 4, 8])
def test_groupnorm_and_eval_mode_batchnorm_are_exact_again(steps):
    model, loss_fn, x, y = _problem("cnn_gn")
    diff = relative_difference(accumulated_grads(model, loss_fn, x, y, steps), full_batch_grads(model, loss_fn, x, y))
    assert diff < 1e-5
    model64, _, x64, y64 = _problem("cnn_gn", torch.float64)
    assert relative_difference(accumulated_grads(model64, loss_fn, x64, y64, steps),
                               full_batch_grads(model64, loss_fn, x64, y64)) < 1e-13
    bn_eval = make_model("cnn_bn", seed=0, dtype=torch.float64).eval()
    assert relative_difference(accumulated_grads(bn_eval, loss_fn, x64, y64, steps),
                               full_batch_grads(bn_eval, loss_fn, x64, y64)) < 1e-13


def test_running_stats_after_accumulation_differ_from_one_big_batch():
    model, loss_fn, x, y = _problem("cnn_bn", torch.float64)
    big = accumulation_pass(model, loss_fn, x, y, 1)
    acc = accumulation_pass(model, loss_fn, x, y, 4)
    assert set(big.running_stats) == {"1.running_mean", "1.running_var", "4.running_mean", "4.running_var"}
    # one update with momentum 0.1 from zero: running_mean = 0.1 * batch mean
    bn = model[1]
    h = model[0](x)
    torch.testing.assert_close(big.running_stats["1.running_mean"], 0.1 * h.mean(dim=(0, 2, 3)).detach())
    # K updates: 0.1 * sum_j 0.9^(K-1-j) * mean of micro-batch j
    expected = sum(0.1 * 0.9 ** (3 - j) * h_j.mean(dim=(0, 2, 3)) for j, h_j in enumerate(h.chunk(4)))
    torch.testing.assert_close(acc.running_stats["1.running_mean"], expected.detach())
    assert relative_difference(acc.running_stats, big.running_stats) > 0.05
    assert bn.running_mean.abs().max() == 0  # the model given is still fresh
    # GroupNorm keeps no running statistics; eval-mode BN does not update them
    assert accumulation_pass(make_model("cnn_gn"), loss_fn, x.float(), y, 4).running_stats == {}
    frozen = make_model("cnn_bn", dtype=torch.float64).eval()
    frozen_pass = accumulation_pass(frozen, loss_fn, x, y, 4)
    assert relative_difference(frozen_pass.running_stats, batchnorm_running_stats(frozen)) == 0.0


def test_pass_reports_losses():
    model, loss_fn, x, y = _problem("linear", torch.float64)
    res = accumulation_pass(model, loss_fn, x, y, 4)
    assert len(res.micro_losses) == 4
    with torch.no_grad():
        assert res.loss == pytest.approx(float(loss_fn(model(x), y)), rel=1e-12)
    unscaled = accumulation_pass(model, loss_fn, x, y, 4, scale_loss=False)
    assert unscaled.loss == pytest.approx(4 * res.loss, rel=1e-12)


# --- the model given is never changed -----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("eval_mode", [False, True])
def test_models_unchanged_after_the_calls(kind, eval_mode):
    model, loss_fn, x, y = _problem(kind)
    if eval_mode:
        model.eval()
    # give it a non-trivial state: BN stats already moved, a stale .grad on one parameter
    with torch.no_grad():
        model.train()(x)
    if eval_mode:
        model.eval()
    first = next(model.parameters())
    first.grad = torch.full_like(first, 0.5)
    before = _snapshot(model)
    full_batch_grads(model, loss_fn, x, y)
    accumulated_grads(model, loss_fn, x, y, 4)
    accumulated_grads(model, loss_fn, x, y, 8, scale_loss=False)
    accumulation_pass(model, loss_fn, x, y, 2)
    train_with_accumulation(model, loss_fn, [(x, y)], 4, lr=0.1)
    _assert_unchanged(model, before)


def test_stale_grad_on_the_model_does_not_leak_into_the_result():
    model, loss_fn, x, y = _problem("linear", torch.float64)
    clean = full_batch_grads(model, loss_fn, x, y)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    assert relative_difference(full_batch_grads(model, loss_fn, x, y), clean) == 0.0


# --- the token-level trap -----------------------------------------------------------------------


def test_token_big_batch_matches_torch_cross_entropy_mean():
    model = make_token_model(seed=1)
    inputs, targets = make_token_batch(seed=1)
    ours = token_loss_grads(model, inputs, targets, 1)
    assert relative_difference(token_loss_grads(model, inputs, targets, 1, normalization="micro_batch_mean"), ours) == 0
    model_copy = copy.deepcopy(model)
    logits = model_copy(inputs)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))  # ignore_index=-100
    reference = _torch_grads(model_copy, loss)
    assert relative_difference(ours, reference) < 1e-6


@pytest.mark.parametrize("group_by_length", [False, True])
def test_token_trap_and_fix(group_by_length):
    model = make_token_model()
    inputs, targets = make_token_batch(group_by_length=group_by_length)
    counts = micro_batch_token_counts(targets, 4)
    assert len(set(counts)) > 1 and sum(counts) == int((targets != -100).sum())
    big = token_loss_grads(model, inputs, targets, 1)
    wrong = token_loss_grads(model, inputs, targets, 4, normalization="micro_batch_mean")
    fixed = token_loss_grads(model, inputs, targets, 4, normalization="total_tokens")
    assert relative_difference(wrong, big) > 5e-2
    assert relative_difference(fixed, big) < 1e-6
    if group_by_length:  # sorted lengths make the micro-batch counts, and the error, larger
        random_inputs, random_targets = make_token_batch(group_by_length=False)
        random_wrong = relative_difference(
            token_loss_grads(model, random_inputs, random_targets, 4, normalization="micro_batch_mean"),
            token_loss_grads(model, random_inputs, random_targets, 1))
        assert relative_difference(wrong, big) > random_wrong


def test_token_trap_vanishes_with_equal_lengths():
    model = make_token_model()
    inputs, targets = make_token_batch(min_len=20, max_len=20)
    assert len(set(micro_batch_token_counts(targets, 4))) == 1
    big = token_loss_grads(model, inputs, targets, 1)
    assert relative_difference(token_loss_grads(model, inputs, targets, 4, normalization="micro_batch_mean"), big) < 1e-6


def test_token_grads_leave_model_unchanged():
    model = make_token_model()
    inputs, targets = make_token_batch()
    before = _snapshot(model)
    token_loss_grads(model, inputs, targets, 4, normalization="micro_batch_mean")
    token_loss_grads(model, inputs, targets, 8)
    _assert_unchanged(model, before)


# --- training: accumulated trajectory vs big batch ----------------------------------------------


def test_training_trajectories_groupnorm_equal_batchnorm_diverges():
    batches = {k: [make_batch(k, 32, seed=s) for s in range(1, 16)] for k in ("cnn_bn", "cnn_gn")}
    gaps = {}
    for kind, bs in batches.items():
        big = train_with_accumulation(make_model(kind), loss_fn_for(kind), bs, 1)
        acc = train_with_accumulation(make_model(kind), loss_fn_for(kind), bs, 4)
        assert big.params.shape == acc.params.shape == (16, sum(p.numel() for p in make_model(kind).parameters()))
        assert torch.equal(big.params[0], acc.params[0])
        gaps[kind] = float(((big.params - acc.params).norm(dim=1) / big.params.norm(dim=1)).max())
    assert gaps["cnn_gn"] < 1e-5
    assert gaps["cnn_bn"] > 1e-3


def test_training_reduces_the_loss():
    kind = "cnn_gn"
    run = train_with_accumulation(make_model(kind), loss_fn_for(kind), [make_batch(kind, 32, seed=s) for s in range(1, 41)], 2, lr=0.05)
    assert sum(run.losses[-5:]) < 0.8 * sum(run.losses[:5])


# --- data and models ------------------------------------------------------------------------------


def test_builders_are_deterministic_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for kind in KINDS:
        a, b = make_model(kind, seed=5), make_model(kind, seed=5)
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
        xa, ya = make_batch(kind, 16, seed=3)
        xb, yb = make_batch(kind, 16, seed=3)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    make_token_model()
    assert torch.equal(torch.rand(3), expected)
    x, y = make_batch("cnn_bn", 64)
    assert x.shape == (64, 1, 8, 8) and y.dtype == torch.long and set(y.tolist()) == {0, 1, 2, 3}
    bn, gn = make_model("cnn_bn"), make_model("cnn_gn")
    torch.testing.assert_close(bn[0].weight, gn[0].weight)  # same init except the norm layers
    assert divisors(32) == [1, 2, 4, 8, 16, 32]


# --- bad inputs -----------------------------------------------------------------------------------


def test_bad_inputs():
    model, loss_fn, x, y = _problem("linear")
    for steps in (0, -1):
        with pytest.raises(ValueError, match="steps must be an int >= 1"):
            accumulated_grads(model, loss_fn, x, y, steps)
    for steps in (3, 5, 64):
        with pytest.raises(ValueError, match=r"steps must divide the batch size 32.*\[1, 2, 4, 8, 16, 32\]"):
            accumulated_grads(model, loss_fn, x, y, steps)
    with pytest.raises(TypeError, match="steps must be an int"):
        accumulated_grads(model, loss_fn, x, y, 2.0)
    with pytest.raises(ValueError, match="same leading batch size"):
        full_batch_grads(model, loss_fn, x, y[:16])
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        full_batch_grads(lambda t: t, loss_fn, x, y)
    with pytest.raises(ValueError, match="scalar"):
        full_batch_grads(model, lambda out, target: (out - target) ** 2, x, y)
    grads = full_batch_grads(model, loss_fn, x, y)
    with pytest.raises(ValueError, match="same names"):
        relative_difference({"weight": grads["weight"]}, grads)
    with pytest.raises(ValueError, match="shapes differ"):
        relative_difference({"weight": grads["weight"], "bias": grads["weight"]}, grads)
    with pytest.raises(ValueError, match="norm 0"):
        relative_difference(grads, {k: torch.zeros_like(v) for k, v in grads.items()})
    with pytest.raises(ValueError, match="kind must be one of"):
        make_model("transformer")
    with pytest.raises(ValueError, match="kind must be one of"):
        make_batch("mlp")
    token_model = make_token_model()
    inputs, targets = make_token_batch()
    with pytest.raises(ValueError, match="normalization must be one of"):
        token_loss_grads(token_model, inputs, targets, 4, normalization="mean")
    with pytest.raises(ValueError, match="steps must divide"):
        token_loss_grads(token_model, inputs, targets, 3)
    with pytest.raises(ValueError, match="no real tokens"):
        token_loss_grads(token_model, inputs, torch.full_like(targets, -100), 2)
    with pytest.raises(ValueError, match="min_len"):
        make_token_batch(min_len=1)
    with pytest.raises(ValueError, match="batch_size must be"):
        make_token_batch(batch_size=0)
    with pytest.raises(ValueError, match="batch_size must be"):
        make_batch("linear", batch_size=0)
    with pytest.raises(ValueError, match="lr must be a number > 0"):
        train_with_accumulation(model, loss_fn, [(x, y)], 1, lr=0.0)
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0, 1\)"):
        train_with_accumulation(model, loss_fn, [(x, y)], 1, momentum=1.0)
    with pytest.raises(ValueError, match="steps must divide"):
        train_with_accumulation(model, loss_fn, [(x, y)], 3)
    with pytest.raises(ValueError, match="dtype must be one of"):
        make_model("linear", dtype="int8")
    assert make_model("linear", dtype="float64").weight.dtype == torch.float64  # a dtype name, not a device



def test_recalibrate_batchnorm_is_the_plain_average_and_leaves_the_model():
    from llmlab.accumulation import recalibrate_batchnorm
    model = make_model("cnn_bn")
    batches = [make_batch("cnn_bn", 16, seed=s) for s in (1, 2, 3)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    net = recalibrate_batchnorm(model, batches)
    assert not net.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with torch.no_grad():  # the first BN's input on each batch; its running mean = mean of the per-batch means
        means = torch.stack([model[0](x).mean(dim=(0, 2, 3)) for x, _ in batches])
    torch.testing.assert_close(net[1].running_mean, means.mean(0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="batches"):
        recalibrate_batchnorm(model, [])
