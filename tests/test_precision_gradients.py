"""llmlab.precision.gradients: gradient sizes of a causal LM, and SGD vs Adam on a badly scaled quadratic."""

import math

import pytest
import torch

from llmlab.precision import QUADRATIC_OPTIMIZERS, lm_gradient_sizes, train_scaled_quadratic

FP16, BF16 = torch.float16, torch.bfloat16


def _ids(batch=2, seq=12, vocab=97, seed=0):
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


# --- lm_gradient_sizes ------------------------------------------------------------------------------


def test_gradients_are_hugging_face_loss_gradients_rescaled(tiny_llama):
    # HF's loss is the *mean* cross-entropy over the predicted tokens; ours is their sum divided by
    # global_tokens, so every gradient is HF's times tokens / global_tokens.
    ids = _ids()
    sizes = lm_gradient_sizes(tiny_llama, ids, global_tokens=2**10)
    tiny_llama.zero_grad(set_to_none=True)
    tiny_llama(input_ids=ids, labels=ids).loss.backward()
    factor = sizes.tokens / 2**10
    assert sizes.tokens == 2 * 11
    for name, p in tiny_llama.named_parameters():
        expected = float(p.grad.pow(2).mean().sqrt()) * factor
        assert sizes.param_rms[name] == pytest.approx(expected, rel=1e-4), name
    tiny_llama.zero_grad(set_to_none=True)


def test_hidden_gradients_by_hand_and_their_underflow(tiny_llama):
    ids = _ids(seed=1)
    out = tiny_llama(input_ids=ids, output_hidden_states=True)
    for h in out.hidden_states:
        h.retain_grad()
    logits = out.logits[:, :-1]
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")
    (ce / 2**16).backward()
    sizes = lm_gradient_sizes(tiny_llama, ids, global_tokens=2**16)
    assert len(sizes.hidden_median) == len(out.hidden_states) == tiny_llama.config.num_hidden_layers + 1
    for l, h in enumerate(out.hidden_states):
        g = h.grad.flatten()
        assert sizes.hidden_median[l] == pytest.approx(float(g.abs().median()), rel=1e-5)
        nonzero = g != 0
        assert sizes.hidden_flushed[l] == pytest.approx(float((nonzero & (g.half() == 0)).sum() / nonzero.sum()))
    tiny_llama.zero_grad(set_to_none=True)


def test_gradients_scale_as_one_over_the_global_batch(tiny_llama):
    ids = _ids(seed=2)
    small, large = (lm_gradient_sizes(tiny_llama, ids, global_tokens=g) for g in (2**8, 2**12))
    for a, b in zip(small.hidden_median, large.hidden_median):
        assert b == pytest.approx(a / 16, rel=1e-5)  # a power of two: exact up to rounding of the median
    # the smaller gradients flush more often in fp16; bf16 (fp32's exponent range) flushes none here
    assert sum(large.hidden_flushed) >= sum(small.hidden_flushed)
    assert lm_gradient_sizes(tiny_llama, ids, global_tokens=2**12, dtype=BF16).weight_flushed == 0.0


def test_padding_is_ignored_and_grads_are_restored(tiny_llama):
    ids = _ids(batch=2, seq=10, seed=3)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # right padding in the second row
    sentinel = torch.full_like(tiny_llama.lm_head.weight, 3.0)
    tiny_llama.lm_head.weight.grad = sentinel
    sizes = lm_gradient_sizes(tiny_llama, ids, mask, global_tokens=1024)
    assert sizes.tokens == 9 + 5
    assert tiny_llama.lm_head.weight.grad is sentinel
    assert all(p.grad is None for n, p in tiny_llama.named_parameters() if p is not tiny_llama.lm_head.weight)
    tiny_llama.lm_head.weight.grad = None


def test_lm_gradient_sizes_bad_input(tiny_llama):
    ids = _ids()
    with pytest.raises(TypeError, match="model"):
        lm_gradient_sizes(lambda **kw: None, ids)
    with pytest.raises(TypeError, match="input_ids"):
        lm_gradient_sizes(tiny_llama, ids.float())
    with pytest.raises(ValueError, match="input_ids"):
        lm_gradient_sizes(tiny_llama, ids[:, :1])
    with pytest.raises(ValueError, match="attention_mask"):
        lm_gradient_sizes(tiny_llama, ids, torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="global_tokens"):
        lm_gradient_sizes(tiny_llama, ids, global_tokens=4)  # fewer than the 22 predicted tokens
    with pytest.raises(ValueError, match="dtype"):
        lm_gradient_sizes(tiny_llama, ids, dtype=torch.float32)


# --- train_scaled_quadratic ---------------------------------------------------------------------------


def test_sgd_shrinks_each_coordinate_by_one_minus_lr_times_curvature():
    curv = (1e-4, 1e-2, 1.0, 100.0)
    run = train_scaled_quadratic("sgd", lr=0.015, steps=50, curvatures=curv)
    t = torch.arange(51, dtype=torch.float64)[:, None]
    expected = (1 - 0.015 * torch.tensor(curv, dtype=torch.float64)).abs() ** t
    torch.testing.assert_close(run.errors, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(run.first_grad, torch.tensor(curv, dtype=torch.float64))
    torch.testing.assert_close(run.first_step, 0.015 * torch.tensor(curv, dtype=torch.float64))
    # past 2 / max c the steepest coordinate diverges
    assert train_scaled_quadratic("sgd", lr=0.025, steps=50, curvatures=curv).errors[-1, -1] > 1e3


def test_adam_steps_are_blind_to_the_gradient_scale():
    curv = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    run = train_scaled_quadratic("adam", lr=0.01, steps=200, curvatures=curv)
    # bias-corrected first step: lr * g / (|g| + eps) = lr on every coordinate
    torch.testing.assert_close(run.first_step, torch.full((7,), 0.01, dtype=torch.float64), rtol=1e-3, atol=0)
    assert run.first_grad.max() / run.first_grad.min() == pytest.approx(1e6)
    # the same trajectory for every coordinate (eps = 1e-8 is the only scale Adam sees)
    spread = (run.errors - run.errors[:, -1:]).abs().max()
    assert spread < 1e-3 and run.errors[-1].max() < 0.05
    sgd = train_scaled_quadratic("sgd", lr=0.019, steps=200, curvatures=curv)
    assert sgd.errors[-1, 0] > 0.99  # the flattest coordinate has hardly moved


def test_quadratic_runs_are_deterministic_and_sized():
    a = train_scaled_quadratic("adam", lr=0.05, steps=10)
    b = train_scaled_quadratic("adam", lr=0.05, steps=10)
    assert torch.equal(a.errors, b.errors) and a.errors.shape == (11, 7)
    assert torch.all(a.errors[0] == 1) and a.optimizer == "adam" and a.lr == 0.05
    assert QUADRATIC_OPTIMIZERS == ("sgd", "adam")


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        (dict(optimizer="rmsprop", lr=0.1), ValueError, "optimizer"),
        (dict(optimizer="sgd", lr=0.1, steps=0), ValueError, "steps"),
        (dict(optimizer="sgd", lr=0.1, curvatures=(1.0, -1.0)), ValueError, "curvatures"),
        (dict(optimizer="sgd", lr=0.1, curvatures=()), ValueError, "curvatures"),
    ],
)
def test_train_scaled_quadratic_bad_input(kwargs, err, match):
    optimizer = kwargs.pop("optimizer")
    with pytest.raises(err, match=match):
        train_scaled_quadratic(optimizer, **kwargs)
