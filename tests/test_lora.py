"""llmlab.lora against PEFT and against the math, on a tiny Llama and on SmolLM2 (llmlab.data: test_data.py)."""

import copy
import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from llmlab import memory
from llmlab.data import collate
from llmlab.lora import (LoRALinear, SweepRun, TrainResult, add_lora, lr_sweep, validation_loss, break_even_rank, count_parameters, lora_model_param_count,
                         lora_param_count, merge_lora, train_steps, truncation_error)
from llmlab.memory import ParamCount, StateLedger, measured_ledger

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj")


def peft_model(model, targets, r, alpha, dropout=0.0):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none")
    return get_peft_model(model, config)


def ours_and_peft(base, targets=TARGETS, r=4, alpha=8, seed=0):
    """The same base model adapted by llmlab and by PEFT, each from the same seed."""
    torch.manual_seed(seed)
    ours = add_lora(copy.deepcopy(base), targets, r=r, alpha=alpha)
    torch.manual_seed(seed)
    theirs = peft_model(copy.deepcopy(base), targets, r, alpha)
    return ours, theirs


def lora_pairs(ours, theirs):
    """(our LoRALinear, PEFT's lora layer) for every adapted module, matched by name."""
    peft_modules = dict(theirs.base_model.model.named_modules())
    pairs = [(m, peft_modules[n]) for n, m in ours.named_modules() if isinstance(m, LoRALinear)]
    assert pairs
    return pairs


def copy_ab(ours, theirs, seed=1):
    """Give both models the same random non-zero A and B (B = 0 would hide scaling bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mine, peft_layer in lora_pairs(ours, theirs):
            mine.A.weight.copy_(torch.randn(mine.A.weight.shape, generator=g) * 0.05)
            mine.B.weight.copy_(torch.randn(mine.B.weight.shape, generator=g) * 0.05)
            peft_layer.lora_A["default"].weight.copy_(mine.A.weight)
            peft_layer.lora_B["default"].weight.copy_(mine.B.weight)


def token_batch(vocab, batch=3, seq=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, seq), generator=g)


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


# ----------------------------------------------------------------------------- LoRALinear


def test_lora_linear_formula_and_start_equal_to_base():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    layer = LoRALinear(base, r=2, alpha=3.0)
    x = torch.randn(4, 6)
    torch.testing.assert_close(layer(x), base(x))  # B = 0 at the start
    assert torch.count_nonzero(layer.A.weight) == layer.A.weight.numel()
    with torch.no_grad():
        layer.B.weight.normal_()
    expected = x @ base.weight.T + base.bias + (3.0 / 2) * (x @ layer.A.weight.T) @ layer.B.weight.T
    torch.testing.assert_close(layer(x), expected)
    assert layer.A.weight.shape == (2, 6) and layer.B.weight.shape == (5, 2)
    assert not base.weight.requires_grad and not base.bias.requires_grad
    assert layer.A.weight.requires_grad and layer.B.weight.requires_grad


def test_lora_linear_init_is_kaiming_uniform_like_peft():
    # kaiming_uniform_(a=sqrt(5)) on fan_in n gives U(-1/sqrt(n), 1/sqrt(n)).
    layer = LoRALinear(nn.Linear(400, 300), r=64, alpha=16)
    bound = 1 / math.sqrt(400)
    assert layer.A.weight.abs().max() <= bound
    assert layer.A.weight.abs().max() > 0.95 * bound
    assert abs(layer.A.weight.std().item() - bound / math.sqrt(3)) < 0.05 * bound
    assert torch.count_nonzero(layer.B.weight) == 0


def test_lora_linear_dropout_only_on_the_adapter_path():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(8, 8), r=2, alpha=2, dropout=0.5)
    with torch.no_grad():
        layer.B.weight.normal_()
    x = torch.randn(16, 8)
    layer.eval()
    torch.testing.assert_close(layer(x), layer.base(x) + layer.B(layer.A(x)))
    layer.train()
    assert not torch.allclose(layer(x), layer.base(x) + layer.B(layer.A(x)))


@pytest.mark.parametrize("kwargs, match", [
    ({"r": 0, "alpha": 1}, "r must"), ({"r": -2, "alpha": 1}, "r must"),
    ({"r": 2, "alpha": 0}, "alpha must"), ({"r": 2, "alpha": -1.0}, "alpha must"),
    ({"r": 2, "alpha": float("nan")}, "alpha must"),
    ({"r": 2, "alpha": 1, "dropout": 1.0}, "dropout must"), ({"r": 2, "alpha": 1, "dropout": -0.1}, "dropout must"),
])
def test_lora_linear_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LoRALinear(nn.Linear(6, 4), **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"r": 2.0, "alpha": 1}, "r must"), ({"r": True, "alpha": 1}, "r must"), ({"r": 2, "alpha": "1"}, "alpha must"),
    ({"r": 2, "alpha": 1, "dropout": None}, "dropout must"),
])
def test_lora_linear_rejects_bad_types(kwargs, match):
    with pytest.raises(TypeError, match=match):
        LoRALinear(nn.Linear(6, 4), **kwargs)


def test_lora_linear_full_rank_is_allowed_and_delta_weight_is_scaled_ba():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(6, 4), r=4, alpha=2.0)
    with torch.no_grad():
        layer.B.weight.normal_()
    delta = layer.delta_weight()
    assert delta.shape == layer.base.weight.shape == (4, 6)
    torch.testing.assert_close(delta, 0.5 * layer.B.weight @ layer.A.weight)
    assert layer.delta_weight(dtype=torch.float64).dtype == torch.float64
    x = torch.randn(3, 6)
    torch.testing.assert_close(layer(x), layer.base(x) + x @ delta.T)


def test_lora_linear_needs_a_linear():
    with pytest.raises(TypeError, match="base must be an nn.Linear"):
        LoRALinear(nn.Conv1d(2, 2, 1), r=1, alpha=1)


# ----------------------------------------------------------------------------- add_lora / merge_lora


def test_add_lora_wraps_targets_and_freezes_the_rest(tiny_llama):
    model = add_lora(copy.deepcopy(tiny_llama), ("q_proj", "v_proj"), r=4, alpha=8)
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    assert wrapped == [f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{w}.{ab}.weight" for w in wrapped for ab in ("A", "B")}
    x = token_batch(97)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, tiny_llama(x).logits)  # starts equal to the base


def test_add_lora_parameter_count_matches_the_formula(tiny_llama):
    model = copy.deepcopy(tiny_llama)
    expected = lora_model_param_count(model, TARGETS, r=4)
    # per layer: q 32x32, k 16x32, v 16x32, o 32x32, up 64x32
    assert expected == 2 * 4 * ((32 + 32) + (16 + 32) + (16 + 32) + (32 + 32) + (64 + 32))
    _, total_before = count_parameters(model)
    trainable, total = count_parameters(add_lora(model, TARGETS, r=4, alpha=8))
    assert trainable == expected and total == total_before + expected


@pytest.mark.parametrize("kwargs, match", [
    ({"r": 0}, "r must"), ({"alpha": 0}, "alpha must"), ({"alpha": -3}, "alpha must"),
    ({"target_modules": ("q_proj", "nothing_here")}, r"nothing_here"), ({"target_modules": ()}, "target_modules"),
    ({"dropout": 1.5}, "dropout must"),
])
def test_add_lora_rejects_bad_arguments(tiny_llama, kwargs, match):
    with pytest.raises(ValueError, match=match):
        add_lora(copy.deepcopy(tiny_llama), **kwargs)


def test_add_lora_with_a_bad_target_leaves_the_model_untouched(tiny_llama):
    model = copy.deepcopy(tiny_llama)
    with pytest.raises(ValueError, match="nothing_here"):
        add_lora(model, ("q_proj", "nothing_here"), r=4, alpha=8)  # q_proj matches, the second does not
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert count_parameters(model) == count_parameters(tiny_llama)  # nothing frozen either
    with pytest.raises(TypeError, match="r must"):
        add_lora(model, ("q_proj",), r=2.0)
    with pytest.raises(TypeError, match="model must"):
        add_lora("model", ("q_proj",))


def test_add_lora_twice_on_the_same_target_is_an_error(tiny_llama):
    model = add_lora(copy.deepcopy(tiny_llama), ("q_proj",), r=2, alpha=2)
    with pytest.raises(ValueError, match="q_proj"):
        add_lora(model, ("q_proj",), r=2, alpha=2)


def test_merge_lora_equals_unmerged_and_removes_every_adapter(tiny_llama):
    model = add_lora(copy.deepcopy(tiny_llama), TARGETS, r=4, alpha=8)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.B.weight.copy_(torch.randn(m.B.weight.shape, generator=g) * 0.1)
    x = token_batch(97)
    with torch.no_grad():
        before = model(x).logits
        assert rel_err(before, tiny_llama(x).logits) > 1e-3  # the adapter does change the model
        layer = model.model.layers[0].self_attn.q_proj
        expected_W = layer.base.weight + 2.0 * layer.B.weight @ layer.A.weight
        torch.testing.assert_close(layer.base.weight + layer.delta_weight(), expected_W)
        merged = merge_lora(model)
        after = merged(x).logits
    assert merged is model
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    assert type(merged.model.layers[0].self_attn.q_proj) is nn.Linear
    torch.testing.assert_close(merged.model.layers[0].self_attn.q_proj.weight, expected_W)
    assert rel_err(after, before) <= 1e-5
    assert count_parameters(merged)[1] == count_parameters(tiny_llama)[1]


def test_merge_lora_keeps_bias_and_rejects_a_plain_model(tiny_gpt2):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    add_lora(net, ("0", "2"), r=2, alpha=4)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, LoRALinear):
                m.B.weight.normal_()
    x = torch.randn(4, 5)
    with torch.no_grad():
        before = net(x)
        merge_lora(net)
        torch.testing.assert_close(net(x), before, rtol=1e-5, atol=1e-6)
    assert net[0].bias is not None
    with pytest.raises(ValueError, match="no LoRALinear"):
        merge_lora(net)
    with pytest.raises(TypeError, match="model must be"):
        merge_lora("not a model")


# ----------------------------------------------------------------------------- against PEFT


def test_same_trainable_count_and_same_init_as_peft(tiny_llama):
    ours, theirs = ours_and_peft(tiny_llama)
    trainable, total = count_parameters(ours)
    peft_trainable, peft_total = theirs.get_nb_trainable_parameters()
    assert (trainable, total) == (peft_trainable, peft_total)
    # Same seed, same construction order: the same Kaiming-uniform A matrices, B = 0.
    for mine, peft_layer in lora_pairs(ours, theirs):
        torch.testing.assert_close(mine.A.weight, peft_layer.lora_A["default"].weight)
        assert torch.count_nonzero(peft_layer.lora_B["default"].weight) == 0
        assert mine.scaling == peft_layer.scaling["default"]


def test_same_outputs_as_peft_with_copied_ab(tiny_llama):
    ours, theirs = ours_and_peft(tiny_llama)
    copy_ab(ours, theirs)
    x = token_batch(97)
    with torch.no_grad():
        mine, ref = ours(x).logits, theirs(x).logits
    assert rel_err(ref, tiny_llama(x).logits) > 1e-3
    assert rel_err(mine, ref) <= 1e-5


def _train_both(ours, theirs, vocab, steps=4, lr=1e-2):
    results = []
    for model in (ours, theirs):
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
        model.train()
        for step in range(steps):
            x = token_batch(vocab, seed=10 + step)
            model(input_ids=x, labels=x).loss.backward()
            opt.step()
            opt.zero_grad()
        model.eval()
    for mine, peft_layer in lora_pairs(ours, theirs):
        results.append((mine.A.weight, peft_layer.lora_A["default"].weight))
        results.append((mine.B.weight, peft_layer.lora_B["default"].weight))
    return results


def test_same_weights_as_peft_after_training(tiny_llama):
    ours, theirs = ours_and_peft(tiny_llama)
    pairs = _train_both(ours, theirs, 97)
    for mine, ref in pairs:
        assert torch.count_nonzero(ref) > 0  # B moved away from zero: training did something
        assert (mine - ref).abs().max().item() <= 1e-4
    # the frozen base weights did not move in either
    torch.testing.assert_close(ours.model.layers[0].self_attn.q_proj.base.weight,
                               tiny_llama.model.layers[0].self_attn.q_proj.weight, rtol=0, atol=0)


def test_merged_equals_peft_merge_and_unload(tiny_llama):
    ours, theirs = ours_and_peft(tiny_llama)
    copy_ab(ours, theirs)
    merged_peft = theirs.merge_and_unload()
    merge_lora(ours)
    for (n, p), (n2, p2) in zip(ours.named_parameters(), merged_peft.named_parameters()):
        assert n == n2
        torch.testing.assert_close(p, p2, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_default_model_against_peft(default_lm):
    base, _ = default_lm
    targets = ("q_proj", "v_proj")
    ours, theirs = ours_and_peft(base, targets, r=8, alpha=16)
    assert count_parameters(ours) == theirs.get_nb_trainable_parameters()
    assert count_parameters(ours)[0] == 30 * 8 * ((576 + 576) + (192 + 576))
    copy_ab(ours, theirs)
    x = token_batch(49152, batch=2, seq=16)
    with torch.no_grad():
        mine, ref = ours(x).logits, theirs(x).logits
    assert rel_err(mine, ref) <= 1e-5
    # merging keeps the outputs
    with torch.no_grad():
        merged = merge_lora(copy.deepcopy(ours))(x).logits
    assert rel_err(merged, mine) <= 1e-5
    # and a few optimizer steps from the same start land on the same weights
    ours, theirs = ours_and_peft(base, targets, r=8, alpha=16)
    for mine_w, ref_w in _train_both(ours, theirs, 49152, steps=2, lr=1e-3):
        assert (mine_w - ref_w).abs().max().item() <= 1e-4


# ----------------------------------------------------------------------------- parameter arithmetic


def test_param_count_and_break_even_rank():
    assert lora_param_count(4096, 4096, 8) == 8 * 8192
    assert break_even_rank(512, 512) == 256  # r < n/2 for a square matrix
    assert break_even_rank(300, 600) == 200
    for m, n in [(576, 576), (192, 576), (1536, 576), (7, 3)]:
        r_star = break_even_rank(m, n)
        for r in range(1, min(m, n) + 1):
            assert (lora_param_count(m, n, r) < m * n) == (r < r_star)


@pytest.mark.parametrize("call", [lambda: lora_param_count(0, 4, 1), lambda: lora_param_count(4, 4, 0),
                                  lambda: break_even_rank(-1, 4), lambda: lora_model_param_count(nn.Linear(2, 2), r=0)])
def test_param_count_rejects_bad_sizes(call):
    with pytest.raises(ValueError, match="must be an int >= 1"):
        call()


@pytest.mark.parametrize("call", [lambda: break_even_rank(4, 2.5), lambda: lora_param_count(4, 4, True),
                                  lambda: lora_param_count("4", 4, 1)])
def test_param_count_rejects_non_integer_sizes(call):
    with pytest.raises(TypeError, match="must be an int >= 1"):
        call()


def test_count_parameters_is_the_memory_one():
    assert count_parameters is memory.count_parameters
    counts = count_parameters(add_lora(nn.Sequential(nn.Linear(6, 4)), ("0",), r=2, alpha=2))
    assert isinstance(counts, ParamCount) and counts == ParamCount(trainable=2 * (6 + 4), total=28 + 20)


def test_truncation_error_is_eckart_young():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(20, 5, generator=g) @ torch.randn(5, 30, generator=g)  # rank 5
    err = truncation_error(delta, [0, 1, 3, 5, 8])
    assert err[0] == pytest.approx(1.0) and err[3] < 1e-6 and err[4] < 1e-6
    U, S, Vh = torch.linalg.svd(delta)
    best3 = U[:, :3] @ torch.diag(S[:3]) @ Vh[:3]
    assert err[2].item() == pytest.approx(((delta - best3).norm() / delta.norm()).item(), rel=1e-4)
    assert torch.all(err[:-1] >= err[1:])
    with pytest.raises(ValueError, match="2-D"):
        truncation_error(torch.ones(3), [1])
    with pytest.raises(ValueError, match="ranks"):
        truncation_error(delta, [-1])
    torch.testing.assert_close(truncation_error(delta, 1), err[1:2])
    torch.testing.assert_close(truncation_error(delta, 3), err[2:3])
    torch.testing.assert_close(truncation_error(delta, torch.tensor([0, 1])), err[:2])
    assert truncation_error(torch.zeros(3, 3), [0, 2]).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("call, error, match", [
    (lambda: truncation_error(torch.ones(3, 3), [True]), TypeError, r"ranks\[0\]"),
    (lambda: truncation_error(torch.ones(3, 3), True), TypeError, "ranks"),
    (lambda: truncation_error(torch.ones(3, 3), [1, 2.0]), TypeError, r"ranks\[1\]"),
    (lambda: truncation_error([[1.0]], [1]), TypeError, "delta_W"),
    (lambda: truncation_error(torch.tensor([[1.0, float("nan")]]), [1]), ValueError, "delta_W"),
])
def test_truncation_error_rejects_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_measured_ledger_counts_adam_states_for_trainable_only(tiny_llama):
    model = add_lora(copy.deepcopy(tiny_llama), ("q_proj",), r=2, alpha=4)
    trainable, total = count_parameters(model)
    trainable_tensors = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable_tensors, lr=1e-3)
    x = token_batch(97)
    model(input_ids=x, labels=x).loss.backward()
    opt.step()
    state = measured_ledger(model, opt)
    assert state.weights == 4 * total
    assert state.grads == 4 * trainable
    assert state.optimizer_states == 2 * 4 * trainable  # exp_avg and exp_avg_sq
    assert state.other == 4 * len(trainable_tensors)  # AdamW's scalar `step`, one per tensor
    assert state.master_weights == 0
    assert state.total == state.weights + state.grads + state.optimizer_states + state.other


def test_train_steps_lowers_the_loss_on_a_repeated_batch(tiny_llama):
    torch.manual_seed(0)
    model = add_lora(copy.deepcopy(tiny_llama), ("q_proj", "v_proj"), r=4, alpha=8)
    x = token_batch(97)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    result = train_steps(model, [{"input_ids": x, "labels": x}] * 8, opt)
    assert isinstance(result, TrainResult) and isinstance(result.state, StateLedger)
    assert len(result.losses) == len(result.step_times) == 8
    assert all(t > 0 for t in result.step_times)
    assert len(result.phase_times) == 8 and all(len(p) == 3 and min(p) > 0 for p in result.phase_times)
    assert all(abs(sum(p) - t) < 1e-12 for p, t in zip(result.phase_times, result.step_times))  # fwd + bwd + update
    assert result.losses[-1] < result.losses[0] - 0.1
    assert result.peak_bytes == result.state.total > 0
    trainable, _ = count_parameters(model)
    assert result.state.grads == 4 * trainable  # measured before zero_grad: the last step's gradients
    assert not model.training
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.peak_bytes = 0


def test_train_steps_takes_instruction_batches_and_no_batches(tiny_llama):
    model = add_lora(copy.deepcopy(tiny_llama), ("q_proj",), r=2, alpha=4)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    feats = [{"input_ids": [5, 6, 7, 9], "labels": [-100, 6, 7, 9]}, {"input_ids": [8, 4], "labels": [-100, 4]}]
    result = train_steps(model, [collate(feats, pad_token_id=0)] * 2, opt)
    assert len(result.losses) == 2 and result.state is not None
    empty = train_steps(model, [], opt)
    assert (empty.losses, empty.step_times, empty.peak_bytes, empty.state, empty.phase_times) == ((), (), 0, None, ())


@pytest.mark.parametrize("kwargs, match", [
    ({"batches": [torch.ones(2, 3, dtype=torch.long)]}, "batches must yield dicts"),
    ({"optimizer": "adamw"}, "optimizer must"),
])
def test_train_steps_rejects_bad_input_with_a_short_message(tiny_llama, kwargs, match):
    model = add_lora(copy.deepcopy(tiny_llama), ("q_proj",), r=2, alpha=4)
    args = {"batches": [], "optimizer": torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1),
            **kwargs}
    with pytest.raises(TypeError, match=match) as info:
        train_steps(model, args.pop("batches"), args.pop("optimizer"), **args)
    assert len(str(info.value)) < 200  # names the problem, not the model's repr


# ----------------------------------------------------------------------------- validation loss and the lr sweep


def _instruction_batches(n, seed=0, batch=3, seq=10):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(3, 97, (batch, seq), generator=g)
        labels = ids.clone()
        labels[:, :4] = -100  # a masked "prompt"
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


def test_validation_loss_is_the_token_weighted_mean_loss(tiny_llama):
    batches = _instruction_batches(2)
    batches[1]["labels"][:, :7] = -100  # fewer labelled tokens in the second batch
    tiny_llama.train()
    expected = 0.0
    with torch.no_grad():
        losses = [tiny_llama(**b).loss.item() for b in batches]
    counts = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]
    expected = sum(l * c for l, c in zip(losses, counts)) / sum(counts)
    assert validation_loss(tiny_llama, batches) == pytest.approx(expected, rel=1e-6)
    assert tiny_llama.training  # the mode is given back
    tiny_llama.eval()
    with pytest.raises(ValueError, match="labels"):
        validation_loss(tiny_llama, [{"input_ids": batches[0]["input_ids"]}])
    with pytest.raises(ValueError, match="labelled token"):
        validation_loss(tiny_llama, [])


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_lr_sweep_trains_fresh_models_and_keeps_the_best(tiny_llama, kind):
    base = copy.deepcopy(tiny_llama)
    before = {k: v.clone() for k, v in base.state_dict().items()}

    def make():
        torch.manual_seed(0)
        m = copy.deepcopy(base)
        return add_lora(m, ("q_proj", "v_proj"), r=2, alpha=4) if kind == "lora" else m

    train = _instruction_batches(4, seed=1)
    val = train[:2]  # random tokens do not generalise: the right rate is the one that fits them
    lrs = (1e-5, 1e-2, 50.0)  # too small, about right, diverging
    runs, best = lr_sweep(make, train, lrs, val)
    assert [r.lr for r in runs] == list(lrs) and all(isinstance(r, SweepRun) for r in runs)
    assert all(len(r.train.losses) == 4 for r in runs)
    winner = min((r for r in runs if math.isfinite(r.val_loss)), key=lambda r: r.val_loss)
    assert winner.lr == 1e-2 and validation_loss(best, val) == pytest.approx(winner.val_loss)
    # each run started from the same weights: the same first-step loss, and the base is untouched
    assert len({round(r.train.losses[0], 6) for r in runs}) == 1
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())
    trainable, total = count_parameters(best)
    assert (trainable < total) == (kind == "lora")



def test_lr_sweep_widens_the_grid_until_the_winner_is_inside(tiny_llama):
    train = _instruction_batches(4, seed=1)
    val = train[:2]
    make = lambda: copy.deepcopy(tiny_llama)
    # 1e-5 and 1e-4 are both too small: the larger wins at the edge, so the sweep tries 1e-3, 1e-2, ...
    runs, best = lr_sweep(make, train, [1e-5, 1e-4], val, widen=3)
    lrs = [r.lr for r in runs]
    assert lrs[:2] == [1e-5, 1e-4] and all(b / a == pytest.approx(10) for a, b in zip(lrs[1:], lrs[2:]))
    winner = min(runs, key=lambda r: r.val_loss if math.isfinite(r.val_loss) else math.inf)
    assert winner.lr > 1e-4 and validation_loss(best, val) == pytest.approx(winner.val_loss)
    if len(runs) < 5:  # it stopped early: the winner is inside the grid it tried
        assert min(lrs) < winner.lr < max(lrs)
    # a winner already inside the grid adds nothing; widen=0 never widens
    inside, _ = lr_sweep(make, train, [1e-5, 1e-2, 50.0], val, widen=2)
    assert [r.lr for r in inside] == [1e-5, 1e-2, 50.0]
    assert [r.lr for r in lr_sweep(make, train, [1e-5, 1e-4], val)[0]] == [1e-5, 1e-4]
    with pytest.raises(ValueError, match="widen"):
        lr_sweep(make, train, [1e-3], val, widen=1)

def test_lr_sweep_fused_adamw_matches_the_reference_adamw(tiny_llama):
    # lr_sweep uses PyTorch's fused AdamW on CPU for speed: the same run as the default AdamW, to rounding
    train, val = _instruction_batches(3, seed=2), _instruction_batches(1, seed=3)
    runs, best = lr_sweep(lambda: copy.deepcopy(tiny_llama), train, [1e-2], val)
    reference = copy.deepcopy(tiny_llama)
    result = train_steps(reference, train, torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.0))
    assert runs[0].train.losses == pytest.approx(result.losses, rel=1e-4, abs=1e-5)
    for (name, p), q in zip(best.named_parameters(), reference.parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-5), name


def test_lr_sweep_rejects_bad_input(tiny_llama):
    make = lambda: copy.deepcopy(tiny_llama)
    batches = _instruction_batches(1)
    with pytest.raises(TypeError, match="make_model"):
        lr_sweep("a model", batches, [1e-3], batches)
    with pytest.raises(ValueError, match="lrs"):
        lr_sweep(make, batches, [], batches)
    with pytest.raises(ValueError, match=r"lrs\[1\]"):
        lr_sweep(make, batches, [1e-3, -1.0], batches)
    with pytest.raises(TypeError, match="make_model"):
        lr_sweep(lambda: "not a model", batches, [1e-3], batches)
    with pytest.raises(ValueError, match="diverged"):
        lr_sweep(make, batches, [1e9], batches)


# ----------------------------------------------------------------------------- PEFT's own custom-model cases
#
# Ported from huggingface/peft, tests/test_custom_models.py: its `MLP` (lin0 10->20, ReLU,
# Dropout(0.5), lin1 20->2, LogSoftmax; input `torch.arange(90).view(9, 10)`) and the LoRA rows of
# its TEST_CASES ("Vanilla MLP 1/3/4/6 LoRA"; 2 is 1 as a list, 5 needs `modules_to_save`, which
# llmlab has not). LoraConfig's default r = 8 is larger than min(20, 2) = 2 for lin1: PEFT accepts
# it, so llmlab must too (issue 23). Each row runs the checks of PEFT's
# TestPeftCustomModel.test_forward_output_finite, test_only_params_are_updated, test_merge_layers
# and test_forward_bfloat16 (merge and unload in bf16), plus the same init and outputs as PEFT.

class PeftMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin0 = nn.Linear(10, 20)
        self.relu = nn.ReLU()
        self.drop = nn.Dropout(0.5)
        self.lin1 = nn.Linear(20, 2)
        self.sm = nn.LogSoftmax(dim=-1)
        self.dtype = torch.float  # PEFT's test sets it to run the model in half precision

    def forward(self, X):
        return self.sm(self.lin1(self.drop(self.relu(self.lin0(X.to(self.dtype))))))


PEFT_MLP_CASES = [
    ("Vanilla MLP 1 LoRA", {"target_modules": ("lin0",)}),
    ("Vanilla MLP 3 LoRA", {"target_modules": ("lin1",)}),  # r = 8 on the 2x20 weight
    ("Vanilla MLP 4 LoRA", {"target_modules": ("lin0", "lin1")}),
    ("Vanilla MLP 6 LoRA", {"target_modules": ("lin0",), "lora_alpha": 4, "lora_dropout": 0.1}),
    ("Vanilla MLP 3 LoRA r=32", {"target_modules": ("lin1",), "r": 32}),  # far past min(in, out) = 2
]


def _peft_mlp_pair(kwargs):
    from peft import LoraConfig, get_peft_model

    r, alpha, dropout = kwargs.get("r", 8), kwargs.get("lora_alpha", 8), kwargs.get("lora_dropout", 0.0)
    torch.manual_seed(0)
    base = PeftMLP().eval()
    torch.manual_seed(1)
    ours = add_lora(copy.deepcopy(base), kwargs["target_modules"], r=r, alpha=alpha, dropout=dropout)
    torch.manual_seed(1)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(kwargs["target_modules"]))
    theirs = get_peft_model(copy.deepcopy(base), config)
    return base, ours, theirs


@pytest.mark.parametrize("name, kwargs", PEFT_MLP_CASES, ids=[c[0] for c in PEFT_MLP_CASES])
def test_peft_custom_mlp_cases(name, kwargs):
    base, ours, theirs = _peft_mlp_pair(kwargs)
    X = torch.arange(90).view(9, 10)
    trainable, total = count_parameters(ours)
    assert (trainable, total) == tuple(theirs.get_nb_trainable_parameters())
    for mine, peft_layer in lora_pairs(ours, theirs):
        torch.testing.assert_close(mine.A.weight, peft_layer.lora_A["default"].weight)  # the same init
        assert mine.scaling == peft_layer.scaling["default"]
    ours.eval(), theirs.eval()
    with torch.no_grad():  # test_forward_output_finite; B = 0, so both equal the base model
        out = ours(X)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, theirs(X))
        torch.testing.assert_close(out, base(X))
        g = torch.Generator().manual_seed(2)
        for mine, peft_layer in lora_pairs(ours, theirs):  # a trained-looking adapter, copied to PEFT
            mine.B.weight.copy_(torch.randn(mine.B.weight.shape, generator=g))
            peft_layer.lora_B["default"].weight.copy_(mine.B.weight)
        adapted = ours(X)
        torch.testing.assert_close(adapted, theirs(X))
        assert not torch.allclose(adapted, base(X))

    # test_only_params_are_updated: one optimizer step moves A and B, nothing else.
    ours.train()
    before = {n: p.detach().clone() for n, p in ours.named_parameters()}
    opt = torch.optim.SGD([p for p in ours.parameters() if p.requires_grad], lr=0.5)
    ours(X).sum().backward()
    opt.step()
    moved = {n for n, p in ours.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(n.endswith((".A.weight", ".B.weight")) for n in moved), moved
    ours.eval()

    # test_merge_layers: the merged model computes what the adapted one does.
    with torch.no_grad():
        adapted = ours(X)
        merged = merge_lora(copy.deepcopy(ours))
        torch.testing.assert_close(merged(X), adapted, rtol=1e-4, atol=1e-4)  # as PEFT: logits in the thousands
        # test_forward_bfloat16: the same in bf16, adapted then merged, runs and stays finite
        half = copy.deepcopy(ours).to(torch.bfloat16)
        half.dtype = torch.bfloat16
        assert torch.isfinite(half(X)).all()
        assert torch.isfinite(merge_lora(half)(X)).all()
