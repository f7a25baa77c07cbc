"""llmlab.memory: parameter counts, the model-state ledger (formula and measured), saved activations."""

import copy
import dataclasses

import pytest
import torch
from torch import nn

from conftest import one_step, requires_cuda, small_mlp
from llmlab.memory import (
    OPTIMIZER_STATES,
    LiveActivationTracker,
    PRECISIONS,
    ParamCount,
    SavedTensorTracker,
    StateLedger,
    count_parameters,
    measured_ledger,
    memory_ledger,
    saved_activation_bytes,
    tensor_bytes,
)
from llmlab.precision import MasterWeightsOptimizer, mixed_precision_setup

FP32, BF16 = torch.float32, torch.bfloat16


# --- count_parameters ---------------------------------------------------------------------------


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)         # 40
        self.proj = nn.Linear(4, 4)              # 16 + 4
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight     # tied: the same 40 numbers


def test_count_parameters_counts_tied_weights_once_and_splits_frozen():
    model = _Tied()
    assert count_parameters(model) == ParamCount(trainable=60, total=60)
    model.proj.weight.requires_grad_(False)
    counts = count_parameters(model)
    assert isinstance(counts, ParamCount) and counts == (44, 60)
    assert (counts.trainable, counts.total) == (44, 60)


def test_count_parameters_on_a_tied_llama(tiny_llama):
    trainable, total = count_parameters(tiny_llama)
    assert trainable == total == sum(p.numel() for p in tiny_llama.parameters())
    assert total < sum(p.numel() for _, p in tiny_llama.named_parameters(remove_duplicate=False))


def test_count_parameters_needs_a_module():
    with pytest.raises(TypeError, match="model"):
        count_parameters([nn.Parameter(torch.ones(2))])


def test_tensor_bytes():
    assert tensor_bytes(torch.zeros(3, 5)) == 60
    assert tensor_bytes(torch.zeros(3, 5, dtype=BF16)) == 30
    assert tensor_bytes(torch.zeros(4, dtype=torch.int64)[::2]) == 16  # the view's elements


# --- memory_ledger: the formulas ------------------------------------------------------------------

BYTES_PER_PARAM = {  # (weights, grads, master, states) per parameter, written out from the table in notebook 08
    ("adamw", "fp32"): (4, 4, 0, 8), ("adamw", "mixed"): (2, 2, 4, 8),
    ("adam", "fp32"): (4, 4, 0, 8), ("adam", "mixed"): (2, 2, 4, 8),
    ("sgd_momentum", "fp32"): (4, 4, 0, 4), ("sgd_momentum", "mixed"): (2, 2, 4, 4),
    ("sgd", "fp32"): (4, 4, 0, 0), ("sgd", "mixed"): (2, 2, 4, 0),
}


def test_the_table_covers_every_optimizer_and_precision():
    assert set(BYTES_PER_PARAM) == {(o, p) for o in OPTIMIZER_STATES for p in PRECISIONS}


@pytest.mark.parametrize("optimizer, precision", sorted(BYTES_PER_PARAM))
def test_memory_ledger_formula(optimizer, precision):
    n = 1000
    w, g, m, s = BYTES_PER_PARAM[optimizer, precision]
    ledger = memory_ledger(n, optimizer=optimizer, precision=precision)
    assert ledger == StateLedger(weights=w * n, grads=g * n, master_weights=m * n, optimizer_states=s * n, other=0)
    assert ledger.total == (w + g + m + s) * n
    assert memory_ledger(small_mlp(), optimizer=optimizer, precision=precision).total == (w + g + m + s) * 16576


def test_ledger_formula_16_bytes_per_param_both_ways():
    model = small_mlp()
    n = sum(p.numel() for p in model.parameters())
    mixed, fp32 = memory_ledger(model), memory_ledger(model, precision="fp32")
    assert mixed.as_dict() == {"weights": 2 * n, "grads": 2 * n, "master_weights": 4 * n, "optimizer_states": 8 * n,
                               "other": 0, "total": 16 * n}
    assert fp32.as_dict() == {"weights": 4 * n, "grads": 4 * n, "master_weights": 0, "optimizer_states": 8 * n,
                              "other": 0, "total": 16 * n}
    assert memory_ledger(1000, optimizer="sgd", precision="fp32").total == 8000
    assert memory_ledger(1000, optimizer="sgd_momentum").total == 12000
    assert memory_ledger(1000, optimizer="adam").optimizer_states == 8000


def test_ledger_counts_tied_weights_once_and_frozen_weights_without_states(tiny_llama):
    model = copy.deepcopy(tiny_llama)
    n = sum(p.numel() for p in model.parameters())
    assert n < sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))  # tied
    assert memory_ledger(model).total == 16 * n
    frozen = model.model.embed_tokens.weight
    frozen.requires_grad_(False)
    ledger = memory_ledger(model, precision="fp32")
    assert ledger.weights == 4 * n and ledger.grads == 4 * (n - frozen.numel())
    assert ledger.optimizer_states == 8 * (n - frozen.numel())


def test_state_ledger_is_frozen_and_tabulates_in_order():
    ledger = StateLedger(weights=1, grads=2, master_weights=3, optimizer_states=4, other=5)
    assert ledger.total == 15
    assert list(ledger.as_dict()) == ["weights", "grads", "master_weights", "optimizer_states", "other", "total"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ledger.weights = 0
    assert ledger["total"] == 15 and ledger["other"] == 5  # the mapping access of the dict it replaced
    with pytest.raises(KeyError):
        ledger["params"]


# --- measured_ledger: the real tensors --------------------------------------------------------------


def test_measured_fp32_adamw_matches_formula():
    model = small_mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    one_step(model, opt)
    measured, formula = measured_ledger(model, opt), memory_ledger(model, precision="fp32")
    for key in ("weights", "grads", "master_weights", "optimizer_states"):
        assert getattr(measured, key) == getattr(formula, key), key
    assert measured.other == 4 * len(list(model.parameters()))  # AdamW's `step` scalars
    assert abs(measured.total / formula.total - 1) < 0.02


def test_measured_bf16_master_weights_is_16_bytes_per_param():
    model = small_mlp()
    n = sum(p.numel() for p in model.parameters())
    opt = mixed_precision_setup(model, BF16, optimizer="adamw", lr=1e-3)
    assert isinstance(opt, MasterWeightsOptimizer)
    one_step(model, opt, BF16)
    measured, formula = measured_ledger(model, opt), memory_ledger(model, precision="mixed")
    assert (measured.weights, measured.grads, measured.master_weights, measured.optimizer_states) == (
        2 * n, 2 * n, 4 * n, 8 * n)
    assert (formula.weights, formula.grads, formula.master_weights, formula.optimizer_states) == (
        2 * n, 2 * n, 4 * n, 8 * n)
    assert measured.total - measured.other == formula.total == 16 * n
    assert abs(measured.total / n - 16) < 0.02 * 16


def test_measured_sgd_momentum_and_no_optimizer():
    model = small_mlp()
    n = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    one_step(model, opt)
    assert measured_ledger(model, opt) == StateLedger(weights=4 * n, grads=4 * n, master_weights=0,
                                                      optimizer_states=4 * n, other=0)
    assert measured_ledger(model) == StateLedger(weights=4 * n, grads=4 * n, master_weights=0, optimizer_states=0)
    model.zero_grad(set_to_none=True)
    assert measured_ledger(model).total == 4 * n


def test_measured_ledger_needs_a_step_and_right_types():
    model = small_mlp()
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match="after one optimizer step"):
        measured_ledger(model, opt)
    with pytest.raises(ValueError, match="after one optimizer step"):
        measured_ledger(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    with pytest.raises(ValueError, match="after one optimizer step"):
        measured_ledger(model, MasterWeightsOptimizer(model.parameters(), "adamw"))
    with pytest.raises(TypeError, match="optimizer"):
        measured_ledger(model, "adamw")
    with pytest.raises(TypeError, match="model"):
        measured_ledger("model", opt)


@pytest.mark.slow
def test_default_lm_ledger_measured_vs_formula(default_lm):
    model = default_lm[0]  # shared fixture: lr = 0 leaves its weights as they are
    n = sum(p.numel() for p in model.parameters())
    assert 130e6 < n < 140e6
    assert memory_ledger(model).total == memory_ledger(model, precision="fp32").total == 16 * n
    before = model.lm_head.weight.detach().clone()
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    ids = torch.arange(8)[None] + 100
    try:
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        measured, formula = measured_ledger(model, opt), memory_ledger(model, precision="fp32")
    finally:
        model.zero_grad(set_to_none=True)
    assert abs(measured.total / formula.total - 1) < 0.02
    assert measured.optimizer_states == 2 * measured.weights
    assert torch.equal(model.lm_head.weight, before)


# --- saved activations ------------------------------------------------------------------------------


def test_saved_tensor_tracker_counts_each_storage_once_and_releases_after_backward():
    a = torch.randn(100, requires_grad=True)
    w = torch.randn(100, 10, requires_grad=True)
    with SavedTensorTracker([w]) as tracker:
        b = a.exp()  # saves its output b (400 bytes)
        c = b.sin()  # saves its input: b again, counted once
        assert (tracker.live_bytes, tracker.n_packed) == (400, 2)
        d = c[None] @ w  # saves c (400 bytes) and w (a parameter: counted apart)
    assert (tracker.live_bytes, tracker.peak_bytes, tracker.n_packed) == (800, 800, 4)
    assert tracker.live_param_bytes == tracker.peak_param_bytes == 4000
    d.sum().backward()  # backward frees what it saved
    assert (tracker.live_bytes, tracker.live_param_bytes) == (0, 0)
    assert (tracker.peak_bytes, tracker.peak_param_bytes) == (800, 4000)
    torch.testing.assert_close(a.grad, (b.cos() * b * w.sum(1)).detach())


def test_saved_tensor_tracker_releases_a_graph_dropped_without_backward():
    a = torch.randn(100, requires_grad=True)
    tracker = SavedTensorTracker()
    with tracker:
        out = a.exp().tanh()  # both save their *output*: no reference cycle may keep them alive
    assert tracker.live_bytes == 800
    del out
    assert tracker.live_bytes == 0 and tracker.peak_bytes == 800
    outside = a.exp()  # outside the block nothing is counted
    assert tracker.n_packed == 2 and tracker.live_bytes == 0
    del outside


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
    assert saved_activation_bytes(tiny_llama, {"input_ids": ids}) == fp32  # nothing leaks between calls


# --- live activations ---------------------------------------------------------------------------


def _tanh_chain(n, width=32, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(*[nn.Sequential(nn.Linear(width, width), nn.Tanh()) for _ in range(n)])


@pytest.mark.parametrize("n", [1, 4, 16, 64])
def test_live_activations_constant_in_depth_without_grad(n):
    # Under no_grad each block's Linear output z_i and Tanh output h_(i+1) appear while h_i is
    # still held by nn.Sequential's loop: 3 activations at most (2 for a single block), any depth.
    chain, x, act = _tanh_chain(n), torch.randn(16, 32), 16 * 32 * 4
    with LiveActivationTracker(chain) as tracker, torch.no_grad():
        out = chain(x)
    assert tracker.peak_bytes == min(3, 2 * n) * act
    assert tracker.live_bytes == act  # only the output is still held (by `out`)
    assert tracker.n_tensors == 2 * n
    del out
    assert tracker.live_bytes == 0


@pytest.mark.parametrize("n", [1, 4, 16, 64])
def test_live_activations_grow_with_depth_in_a_training_forward(n):
    # Autograd keeps every Tanh output h_1..h_n (Tanh saves its result, Linear its input); the
    # Linear outputs die at once: the peak is n kept + 1 transient, and backward frees them all.
    chain, x, act = _tanh_chain(n), torch.randn(16, 32), 16 * 32 * 4
    with LiveActivationTracker(chain) as tracker:
        out = chain(x)
        assert tracker.live_bytes == n * act
    assert tracker.peak_bytes == (n + 1) * act
    out.sum().backward()
    del out
    assert tracker.live_bytes == 0


def test_live_activations_count_a_storage_once_and_remove_their_hooks():
    class Views(nn.Module):
        def forward(self, x):
            y = x * 2
            return y, y.view(-1), y[:1]  # three tensors, one storage

    model = nn.Sequential(Views())
    with LiveActivationTracker(model) as tracker:
        outs = model(torch.ones(4, 8))
    assert tracker.n_tensors == 1 and tracker.peak_bytes == tracker.live_bytes == 4 * 8 * 4
    assert not model[0]._forward_hooks
    del outs
    assert tracker.live_bytes == 0
    model(torch.ones(4, 8))  # after the block nothing is counted
    assert tracker.n_tensors == 1


def test_live_activation_tracker_needs_a_module():
    with pytest.raises(TypeError, match="model"):
        LiveActivationTracker(lambda x: x)


@requires_cuda
def test_live_activations_agree_with_the_cuda_allocator():
    # An activation-dominated chain (one activation 8 MiB, weights 64 KiB each): the allocator's
    # peak above the resting state is what the tracker counts (plus small workspace).
    chain = _tanh_chain(16, width=128).cuda()
    x = torch.randn(16384, 128, device="cuda")
    for grad in (False, True):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with LiveActivationTracker(chain) as tracker, torch.set_grad_enabled(grad):
            out = chain(x)
        torch.cuda.synchronize()
        allocator = torch.cuda.max_memory_allocated() - base
        assert tracker.peak_bytes <= allocator < tracker.peak_bytes * 1.1, grad
        del out


def test_saved_activation_bytes_needs_a_module():
    with pytest.raises(TypeError, match="model"):
        saved_activation_bytes(lambda x: x, torch.ones(2))


# --- bad inputs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, match", [
    (lambda: memory_ledger(10, optimizer="lion"), "optimizer"),
    (lambda: memory_ledger(10, precision="fp16"), "precision"),
    (lambda: memory_ledger(-1), "model"),
])
def test_memory_ledger_bad_values_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call, match", [
    (lambda: memory_ledger("gpt2"), "model"),
    (lambda: memory_ledger(True), "model"),
    (lambda: memory_ledger(10.0), "model"),
])
def test_memory_ledger_bad_types_raise_type_error(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_peak_allocated_bytes_sees_torch_cpu_allocations():
    from llmlab.memory import peak_allocated_bytes

    def two_then_one():
        a = torch.ones(1000, 1000)          # 4 MB
        b = torch.ones(1000, 1000)          # 8 MB held: the peak
        del a
        c = torch.ones(500, 1000)           # 6 MB held
        return b, c

    assert peak_allocated_bytes(two_then_one, device="cpu") == 8_000_000
    x = torch.ones(2000, 1000)              # allocated before: the zero line
    assert peak_allocated_bytes(lambda: x.clone(), device="cpu") == 8_000_000
    assert peak_allocated_bytes(lambda: None, device="cpu") == 0
