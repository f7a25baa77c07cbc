"""llmlab.checkpointing: forward counts, saved-activation bytes and gradients of each strategy."""

import math

import pytest
import torch
from torch import nn

from conftest import requires_cuda
from llmlab.checkpointing import (
    STRATEGIES,
    SavedTensorTracker,
    default_segments,
    make_chain,
    max_relative_grad_error,
    measure,
    run_strategy,
    segment_sizes,
    theory_forward_calls,
    theory_saved_activations,
)

BATCH, WIDTH = 4, 8
ACT = BATCH * WIDTH * 4  # bytes of one float32 activation (batch, width)


def _chain_and_input(n, width=WIDTH, seed=0):
    model = make_chain(n, width, seed=seed)
    x = torch.randn(BATCH, width, generator=torch.Generator().manual_seed(seed + 1))
    return model, x


@pytest.fixture(scope="module")
def sweep():
    """measure() for every strategy at n = 16, 64, 256 (recompute_all at 256 is 32896 layer calls)."""
    out = {}
    for n in (16, 64, 256):
        model, x = _chain_and_input(n)
        out[n] = {s: measure(model, x, s) for s in STRATEGIES}
    return out


_max_rel_err = max_relative_grad_error


# --- the chain ---------------------------------------------------------------------------------


def test_make_chain_shapes_and_seed():
    model = make_chain(5, 7, seed=3)
    assert isinstance(model, torch.nn.Sequential) and len(model) == 5
    h = torch.randn(2, 7)
    for block in model:
        assert block(h).shape == (2, 7)
        h = block(h)
    same = make_chain(5, 7, seed=3)
    other = make_chain(5, 7, seed=4)
    for (name, p), q, r in zip(model.named_parameters(), same.parameters(), other.parameters()):
        assert torch.equal(p, q), name
        assert not torch.equal(p, r), name


def test_make_chain_does_not_touch_global_rng():
    torch.manual_seed(123)
    a = torch.rand(3)
    torch.manual_seed(123)
    make_chain(4, 6, seed=0)
    assert torch.equal(torch.rand(3), a)


def test_make_chain_weights_are_orthogonal():
    w = make_chain(1, 16)[0][0].weight.detach()
    torch.testing.assert_close(w @ w.T, torch.eye(16), atol=1e-5, rtol=0)


# --- forward calls -------------------------------------------------------------------------------


def test_forward_calls_exact(sweep):
    for n, stats in sweep.items():
        assert stats["store_all"].forward_calls == n
        assert stats["recompute_all"].forward_calls == n * (n + 1) // 2
        assert stats["sqrt"].forward_calls == theory_forward_calls(n, "sqrt")
        assert n < stats["sqrt"].forward_calls <= 2 * n + math.sqrt(n)
        assert n < stats["torch"].forward_calls <= 2 * n + math.sqrt(n)


def test_forward_calls_small_cases_by_hand():
    # n = 3: recompute_all runs 1 + 2 + 3 = 6 layer forwards; sqrt (2 segments [2, 1]) runs 3 + 2.
    model, x = _chain_and_input(3)
    assert measure(model, x, "recompute_all").forward_calls == 6
    assert measure(model, x, "sqrt").forward_calls == 5
    assert measure(model, x, "sqrt", segments=1).forward_calls == 3  # one segment = store_all


# --- the schedule: which layer runs when ------------------------------------------------------------


def test_schedule_store_all_and_recompute_all_orders():
    n = 6
    model, x = _chain_and_input(n)
    st = measure(model, x, "store_all")
    assert [c.layer for c in st.schedule] == list(range(n)) and not any(c.recompute for c in st.schedule)
    assert [c.live_saved_bytes for c in st.schedule] == [(i + 2) * ACT for i in range(n)]  # h_0 .. h_(i+1)
    ra = measure(model, x, "recompute_all")
    assert [c.layer for c in ra.schedule if not c.recompute] == list(range(n))
    # backward reaches layer i = n-2 .. 0 and rebuilds it from h_0: layers 0..i, in that order
    assert [c.layer for c in ra.schedule if c.recompute] == [j for i in reversed(range(n - 1)) for j in range(i + 1)]
    assert max(c.live_saved_bytes for c in ra.schedule) == 3 * ACT


@pytest.mark.parametrize("n,segments", [(7, 2), (10, 3), (16, 4), (12, 12)])
def test_schedule_sqrt_replays_each_segment_but_the_last_once(n, segments):
    model, x = _chain_and_input(n)
    st = measure(model, x, "sqrt", segments=segments)
    sizes = segment_sizes(n, segments)
    starts = [sum(sizes[:j]) for j in range(segments)]
    replays = [layer for j in reversed(range(segments - 1)) for layer in range(starts[j], starts[j] + sizes[j])]
    assert [c.layer for c in st.schedule if c.recompute] == replays
    assert [c.layer for c in st.schedule if not c.recompute] == list(range(n))
    assert len(st.schedule) == st.forward_calls == theory_forward_calls(n, "sqrt", segments)
    # the peak sits at the end of the forward pass: the checkpoints plus the last segment kept whole
    end_of_forward = [c for c in st.schedule if not c.recompute][-1]
    assert end_of_forward.live_saved_bytes == st.peak_saved_bytes == theory_saved_activations(n, "sqrt", segments) * ACT



@pytest.mark.parametrize("n,sizes", [(10, [4, 3, 2, 1]), (15, [5, 4, 3, 2, 1]), (9, [1, 2, 6]), (5, [5]), (4, [1, 1, 1, 1])])
def test_sqrt_with_explicit_sizes(n, sizes):
    model, x = _chain_and_input(n)
    st = measure(model, x, "sqrt", sizes=sizes)
    s, starts = len(sizes), [sum(sizes[:j]) for j in range(len(sizes))]
    assert _max_rel_err(st.grads, measure(model, x, "store_all").grads) <= 1e-6
    assert st.forward_calls == 2 * n - sizes[-1]
    replays = [layer for j in reversed(range(s - 1)) for layer in range(starts[j], starts[j] + sizes[j])]
    assert [c.layer for c in st.schedule if c.recompute] == replays
    # the end of the forward pass (s - 1 checkpoints + the last segment whole), or segment j's replay
    # (its j + 1 checkpoints and its L_j recomputed outputs), whichever is larger
    peak = max([s + sizes[-1], *(j + 1 + size for j, size in enumerate(sizes[:-1]))])
    assert st.peak_saved_bytes == peak * ACT
    out = run_strategy(model, x, "sqrt", sizes=sizes)
    grads = torch.autograd.grad(out.sum(), [p for _, p in model.named_parameters()])
    assert _max_rel_err(dict(zip([k for k, _ in model.named_parameters()], grads)), st.grads) <= 1e-6


def test_sizes_of_the_equal_split_give_the_segments_result():
    model, x = _chain_and_input(10)
    a, b = measure(model, x, "sqrt", segments=3), measure(model, x, "sqrt", sizes=segment_sizes(10, 3))
    assert (a.peak_saved_bytes, a.forward_calls, a.schedule) == (b.peak_saved_bytes, b.forward_calls, b.schedule)
    assert _max_rel_err(a.grads, b.grads) == 0.0


# --- saved bytes -------------------------------------------------------------------------------


def test_peak_saved_bytes_match_theory(sweep):
    for n, stats in sweep.items():
        for s in ("store_all", "recompute_all", "sqrt"):
            assert stats[s].peak_saved_bytes == theory_saved_activations(n, s) * ACT, (n, s)


def test_peak_saved_bytes_scaling(sweep):
    m = {s: [sweep[n][s].peak_saved_bytes for n in (16, 64, 256)] for s in STRATEGIES}
    # store_all: linear, x4 in n -> x4 in bytes (n + 1: within 10%)
    for small, big in zip(m["store_all"], m["store_all"][1:]):
        assert big / small == pytest.approx(4.0, rel=0.1)
    # recompute_all: flat
    assert m["recompute_all"][0] == m["recompute_all"][1] == m["recompute_all"][2]
    # sqrt: x4 in n -> x2 in bytes
    for key in ("sqrt", "torch"):
        for small, big in zip(m[key], m[key][1:]):
            assert big / small == pytest.approx(2.0, rel=0.1), key
    # and the order at n = 256
    assert m["recompute_all"][2] < m["sqrt"][2] < m["store_all"][2] / 4


def test_segments_sweep_matches_theory_and_is_u_shaped():
    n = 12
    model, x = _chain_and_input(n)
    mem = {}
    for s in range(1, n + 1):
        st = measure(model, x, "sqrt", segments=s)
        assert st.peak_saved_bytes == theory_saved_activations(n, "sqrt", s) * ACT, s
        assert st.forward_calls == 2 * n - segment_sizes(n, s)[-1], s
        mem[s] = st.peak_saved_bytes
    assert mem[1] == (n + 1) * ACT  # one segment: nothing recomputed, everything kept
    best = min(mem, key=mem.get)
    assert 3 <= best <= 5  # the balance sits near sqrt(12) = 3.5, not at either end
    assert mem[n] > mem[best] and mem[1] > mem[best]


def test_parameters_are_reported_separately(sweep):
    # Linear saves W^T to get the gradient of its input; layer 0's input needs no gradient.
    n = 16
    st = sweep[n]["store_all"]
    assert st.peak_param_bytes == (n - 1) * WIDTH * WIDTH * 4
    assert sweep[n]["recompute_all"].peak_param_bytes == WIDTH * WIDTH * 4


def test_tracker_sees_nothing_under_no_grad_and_releases_everything():
    model, x = _chain_and_input(8)
    with SavedTensorTracker(model.parameters()) as tr:
        with torch.no_grad():
            model(x)
    assert tr.n_packed == 0 and tr.peak_bytes == 0
    with SavedTensorTracker(model.parameters()) as tr:
        y = model(x)
        assert tr.live_bytes == 9 * ACT
        y.sum().backward()
    assert tr.live_bytes == 0 and tr.live_param_bytes == 0
    assert tr.peak_bytes == 9 * ACT


# --- gradients ---------------------------------------------------------------------------------


def test_store_all_grads_equal_plain_autograd():
    model, x = _chain_and_input(10)
    names = [k for k, _ in model.named_parameters()]
    ref = torch.autograd.grad(model(x).sum(), list(model.parameters()))
    st = measure(model, x, "store_all")
    assert _max_rel_err(st.grads, dict(zip(names, ref))) <= 1e-6


def test_all_strategies_match_store_all_grads(sweep):
    for n, stats in sweep.items():
        for s in STRATEGIES:
            assert _max_rel_err(stats[s].grads, stats["store_all"].grads) <= 1e-6, (n, s)


@pytest.mark.parametrize("n,segments", [(7, 2), (7, 3), (7, 7), (10, 4)])
def test_grads_match_for_other_segment_counts(n, segments):
    model, x = _chain_and_input(n, width=12)
    ref = measure(model, x, "store_all").grads
    for s in ("sqrt", "torch"):
        assert _max_rel_err(measure(model, x, s, segments=segments).grads, ref) <= 1e-6


def _dropout_chain(n_blocks: int, width: int = 64) -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(*[nn.Sequential(nn.Linear(width, width), nn.Dropout(0.5), nn.Tanh())
                           for _ in range(n_blocks)]).train()


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("model_kind", ["issue_example", "blocks"])
def test_recomputation_replays_dropout_masks(strategy, model_kind):
    """Ported from PyTorch's test_checkpoint_rng_cpu (test/test_utils.py, TestCheckpoint): a layer
    replayed in backward must draw the same Dropout mask as in the forward pass, so every
    strategy gives the gradients of store_all under the same seed."""
    if model_kind == "issue_example":
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(64, 64), nn.Dropout(), nn.Linear(64, 64), nn.Dropout()).train()
    else:
        model = _dropout_chain(9)
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(123)
    reference = measure(model, x, "store_all")
    after_reference = torch.rand(3)
    torch.manual_seed(123)
    stats = measure(model, x, strategy)
    assert max_relative_grad_error(stats.grads, reference.grads) < 1e-6
    # The replay ran on a borrowed random stream: the caller's stream is where store_all left it.
    assert torch.equal(torch.rand(3), after_reference)


def test_without_replayed_rng_dropout_gradients_would_differ():
    """The test above can fail: two forward passes under different random states draw different masks."""
    model = _dropout_chain(4)
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(123)
    a = measure(model, x, "store_all")
    torch.manual_seed(124)
    b = measure(model, x, "store_all")
    assert max_relative_grad_error(a.grads, b.grads) > 0.1



@pytest.mark.parametrize("strategy", STRATEGIES)
def test_checkpoint_rng_cpu_ported(strategy):
    """PyTorch's TestCheckpoint.test_checkpoint_rng_cpu (test/test_utils.py), on llmlab's strategies:
    five times, from wherever the global generator happens to be, a Dropout *before* the recomputed
    layers and Dropouts inside them; the gradients must equal a plain run from the same state."""
    model = _dropout_chain(4)
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(0)
    for _ in range(5):
        state = torch.get_rng_state()
        stats = measure(model, x, strategy, segments=2 if strategy in ("sqrt", "torch") else None)
        after_checkpointed = torch.get_rng_state()
        torch.set_rng_state(state)
        plain = measure(model, x, "store_all")
        assert max_relative_grad_error(stats.grads, plain.grads) < 1e-6
        assert torch.equal(after_checkpointed, torch.get_rng_state())  # the caller's stream moved on as without checkpointing
        torch.rand(7)                                                 # a new starting state for the next round


@pytest.mark.parametrize("strategy", ["recompute_all", "sqrt", "torch"])
def test_the_next_step_draws_fresh_masks(strategy):
    """After backward the generator is where the forward pass left it (torch.utils.checkpoint forks it for
    the replay): two steps in a row draw the masks two store_all steps draw, never the same ones twice.
    A bare set_rng_state in the replay would leave it where a segment began and repeat masks."""
    model = _dropout_chain(9)
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(2))
    masks = {}
    for s in ("store_all", strategy):
        drawn = []
        hooks = [block[1].register_forward_hook(lambda m, a, out: drawn.append(out == 0)) for block in model]
        torch.manual_seed(11)
        per_step = []
        for _ in range(2):
            start = len(drawn)
            measure(model, x, s)
            per_step.append(drawn[start:start + len(model)])  # the forward pass draws first; replays come later
        for h in hooks:
            h.remove()
        masks[s] = per_step
    for step in range(2):
        assert all(torch.equal(a, b) for a, b in zip(masks[strategy][step], masks["store_all"][step]))
    first, second = masks[strategy]
    assert not any(torch.equal(m, f) for m in second for f in first)

@pytest.mark.parametrize("strategy", STRATEGIES)
def test_run_strategy_gives_measure_gradients_without_hooks(strategy):
    model, x = _chain_and_input(9)
    ref = measure(model, x, strategy)
    out = run_strategy(model, x, strategy)
    grads = torch.autograd.grad(out.sum(), [p for _, p in model.named_parameters()])
    assert _max_rel_err(dict(zip([k for k, _ in model.named_parameters()], grads)), ref.grads) <= 1e-6
    assert all(not blk._forward_hooks and not blk._forward_pre_hooks for blk in model)


def test_torch_strategy_against_checkpoint_sequential_directly():
    model, x = _chain_and_input(9)
    out = torch.utils.checkpoint.checkpoint_sequential(model, 3, x, use_reentrant=False)
    ref = torch.autograd.grad(out.sum(), list(model.parameters()))
    st = measure(model, x, "torch", segments=3)
    assert _max_rel_err(st.grads, dict(zip([k for k, _ in model.named_parameters()], ref))) <= 1e-6
    # torch keeps 2 segment inputs and the last segment (3 layers: its input and 3 outputs)
    assert st.peak_saved_bytes == (2 + 4) * ACT


# --- the model is left as it was ---------------------------------------------------------------


def test_measure_leaves_model_untouched():
    model, x = _chain_and_input(6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sentinel = torch.full_like(model[0][0].weight, 7.0)
    model[0][0].weight.grad = sentinel
    for s in STRATEGIES:
        measure(model, x, s)
    assert model[0][0].weight.grad is sentinel
    assert all(p.grad is None for name, p in model.named_parameters() if name != "0.0.weight")
    assert all(not blk._forward_pre_hooks and not blk._forward_hooks for blk in model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert torch.is_grad_enabled()


def test_stats_fields():
    model, x = _chain_and_input(4)
    st = measure(model, x, "sqrt")
    assert st.seconds > 0
    assert st.cuda_peak_bytes is None  # CPU
    assert set(st.grads) == {k for k, _ in model.named_parameters()}


# --- helpers and validation ----------------------------------------------------------------------


def test_default_segments_is_ceil_sqrt():
    for n in range(1, 300):
        assert default_segments(n) == math.ceil(math.sqrt(n))


def test_segment_sizes():
    assert segment_sizes(10, 3) == [4, 3, 3]
    assert segment_sizes(9, 3) == [3, 3, 3]
    assert sum(segment_sizes(257, 17)) == 257


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: make_chain(0, 4), "n_layers"),
        (lambda: make_chain(3, 0), "width"),
        (lambda: make_chain(-2, 4), "n_layers"),
        (lambda: measure(make_chain(3, 4), torch.randn(2, 4), "nope"), "strategy"),
        (lambda: measure(make_chain(3, 4), torch.randn(2, 4), "sqrt", segments=0), "segments"),
        (lambda: measure(make_chain(3, 4), torch.randn(2, 4), "sqrt", segments=4), "segments"),
        (lambda: measure(make_chain(3, 4), torch.randn(2, 4), "torch", segments=4), "segments"),
        (lambda: measure(make_chain(3, 4), torch.randn(2, 4), "store_all", segments=2), "segments"),
        (lambda: segment_sizes(3, 5), "segments"),
        (lambda: run_strategy(make_chain(3, 4), torch.randn(2, 4), "sqrt", segments=4), "segments"),
        (lambda: run_strategy(make_chain(3, 4), torch.randn(2, 4), "all"), "strategy"),
        (lambda: measure(make_chain(3, 4), torch.randn(2, 4), "sqrt", sizes=[1, 1]), "sizes"),
        (lambda: measure(make_chain(3, 4), torch.randn(2, 4), "sqrt", sizes=[3, 0]), "sizes"),
        (lambda: measure(make_chain(3, 4), torch.randn(2, 4), "sqrt", sizes=[]), "sizes"),
        (lambda: measure(make_chain(3, 4), torch.randn(2, 4), "torch", sizes=[1, 2]), "sizes"),
        (lambda: measure(make_chain(3, 4), torch.randn(2, 4), "sqrt", segments=2, sizes=[1, 2]), "sizes"),
        (lambda: run_strategy(make_chain(3, 4), torch.randn(2, 4), "sqrt", sizes=[2, 2]), "sizes"),
        (lambda: theory_saved_activations(3, "torch"), "strategy"),
    ],
)
def test_bad_values_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: make_chain(2.5, 4), "n_layers"),
        (lambda: make_chain(2, "4"), "width"),
        (lambda: measure(torch.nn.Linear(3, 3), torch.randn(2, 3), "sqrt"), "model"),
        (lambda: measure(make_chain(3, 4), [[1.0] * 4], "sqrt"), "x"),
        (lambda: measure(make_chain(3, 4), torch.randn(2, 4), "sqrt", segments=1.5), "segments"),
        (lambda: run_strategy(torch.nn.Linear(3, 3), torch.randn(2, 3), "sqrt"), "model"),
        (lambda: measure(make_chain(3, 4), torch.randn(2, 4), "sqrt", sizes="12"), "sizes"),
        (lambda: measure(make_chain(3, 4), torch.randn(2, 4), "sqrt", sizes=[1.5, 1.5]), "sizes"),
    ],
)
def test_bad_types_raise_type_error(call, match):
    with pytest.raises(TypeError, match=match):
        call()


# --- CUDA ----------------------------------------------------------------------------------------


@requires_cuda
def test_cuda_accounting_and_allocator_peak():
    # Activation-dominated shape (one activation 2 MiB, all weights 4 MiB), so the allocator's peak
    # is driven by what each strategy keeps, not by the gradients every strategy allocates.
    n, width, batch = 64, 128, 4096
    model = make_chain(n, width).cuda()
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(1)).cuda()
    gpu = {s: measure(model, x, s) for s in STRATEGIES}
    act = batch * width * 4
    for s in ("store_all", "recompute_all", "sqrt"):
        assert gpu[s].peak_saved_bytes == theory_saved_activations(n, s) * act  # same accounting as CPU
        assert gpu[s].forward_calls == theory_forward_calls(n, s)
    assert gpu["store_all"].cuda_peak_bytes >= (n + 1) * act
    assert gpu["sqrt"].cuda_peak_bytes < gpu["store_all"].cuda_peak_bytes / 2
    assert gpu["torch"].cuda_peak_bytes < gpu["store_all"].cuda_peak_bytes / 2
    assert gpu["recompute_all"].cuda_peak_bytes < gpu["sqrt"].cuda_peak_bytes
    for s in ("recompute_all", "sqrt", "torch"):
        assert _max_rel_err(gpu[s].grads, gpu["store_all"].grads) <= 1e-5


# --- fits --------------------------------------------------------------------------------------


def test_max_relative_grad_error():
    ref = {"a": torch.tensor([3.0, 4.0]), "b": torch.tensor([1.0])}
    assert max_relative_grad_error(ref, ref) == 0.0
    assert max_relative_grad_error({"a": torch.tensor([3.0, 4.5]), "b": torch.tensor([1.0])}, ref) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="same parameters"):
        max_relative_grad_error({"a": ref["a"]}, ref)
