"""llmlab.lora and llmlab.data against PEFT and against the math, on a tiny Llama and on SmolLM2."""

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from llmlab.data import (IGNORE_INDEX, collate, exact_match, format_prompt, load_instructions,
                         make_batches, make_date_instructions, tokenize_example, write_instructions)
from llmlab.lora import (LoRALinear, add_lora, break_even_rank, count_parameters, lora_model_param_count,
                         lora_param_count, merge_lora, train_steps, training_state_bytes, truncation_error)

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
    ({"r": 0, "alpha": 1}, "r must"), ({"r": -2, "alpha": 1}, "r must"), ({"r": 2.0, "alpha": 1}, "r must"),
    ({"r": 2, "alpha": 0}, "alpha must"), ({"r": 2, "alpha": -1.0}, "alpha must"),
    ({"r": 2, "alpha": 1, "dropout": 1.0}, "dropout must"), ({"r": 2, "alpha": 1, "dropout": -0.1}, "dropout must"),
])
def test_lora_linear_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LoRALinear(nn.Linear(4, 4), **kwargs)


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
                                  lambda: break_even_rank(-1, 4), lambda: break_even_rank(4, 2.5)])
def test_param_count_rejects_bad_sizes(call):
    with pytest.raises(ValueError, match="must be an int >= 1"):
        call()


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


def test_training_state_bytes_counts_adam_states_for_trainable_only(tiny_llama):
    model = add_lora(copy.deepcopy(tiny_llama), ("q_proj",), r=2, alpha=4)
    trainable, total = count_parameters(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    x = token_batch(97)
    model(input_ids=x, labels=x).loss.backward()
    opt.step()
    state = training_state_bytes(model, opt)
    assert state.params == 4 * total
    assert state.grads == 4 * trainable
    assert state.optimizer == 2 * 4 * trainable  # exp_avg and exp_avg_sq; the scalar step excluded
    assert state.total == state.params + state.grads + state.optimizer


def test_train_steps_lowers_the_loss_on_a_repeated_batch(tiny_llama):
    torch.manual_seed(0)
    model = add_lora(copy.deepcopy(tiny_llama), ("q_proj", "v_proj"), r=4, alpha=8)
    x = token_batch(97)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    result = train_steps(model, [{"input_ids": x, "labels": x}] * 8, opt)
    assert len(result.losses) == len(result.step_times) == 8
    assert result.losses[-1] < result.losses[0] - 0.1
    assert result.peak_bytes == result.state.total > 0
    assert not model.training


# ----------------------------------------------------------------------------- data


def test_instruction_data_is_deterministic_and_well_formed():
    train, heldout = make_date_instructions(40, 10, seed=3)
    assert (train, heldout) == make_date_instructions(40, 10, seed=3)
    assert train != make_date_instructions(40, 10, seed=4)[0]
    for ex in train + heldout:
        assert set(ex) == {"instruction", "input", "output", "text"}
        assert ex["text"] == format_prompt(ex["instruction"], ex["input"]) + ex["output"]
        assert "### Response:\n" in ex["text"]
        y, m, d = ex["output"].split("-")
        assert len(y) == 4 and len(m) == 2 and len(d) == 2
        assert str(int(y)) in ex["input"] and str(int(d)) in ex["input"]
    assert not {ex["output"] for ex in train} & {ex["output"] for ex in heldout}
    with pytest.raises(ValueError, match="n_train"):
        make_date_instructions(0, 10)


def test_committed_files_are_what_the_script_writes(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "data" / "make_instructions.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for split in ("train", "heldout"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (ROOT / "data" / "instructions" / f"{split}.jsonl").read_bytes()
    train = load_instructions("train")
    assert len(train) == 512 and len(load_instructions("heldout")) == 64
    assert (train, load_instructions("heldout")) == make_date_instructions()  # also the fallback without files
    row = json.loads((ROOT / "data" / "instructions" / "train.jsonl").read_text().splitlines()[0])
    assert row == train[0]
    with pytest.raises(ValueError, match="split"):
        load_instructions("test")


def test_write_and_load_roundtrip(tmp_path):
    write_instructions(tmp_path, 5, 2, seed=1)
    assert load_instructions("heldout", tmp_path) == make_date_instructions(5, 2, seed=1)[1]


class CharTokenizer:
    """A stand-in tokenizer: one id per character, EOS = 2, pad = 0."""

    eos_token_id, pad_token_id = 2, 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [3 + ord(c) % 90 for c in text]}


def test_tokenize_example_masks_the_prompt():
    ex = {"instruction": "Do it.", "input": "May 1, 2000", "output": "2000-05-01"}
    tok = CharTokenizer()
    f = tokenize_example(ex, tok)
    n_prompt = len(format_prompt(ex["instruction"], ex["input"]))
    assert len(f["input_ids"]) == len(f["labels"]) == n_prompt + len(ex["output"]) + 1
    assert f["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert f["labels"][n_prompt:] == f["input_ids"][n_prompt:]
    assert f["input_ids"][-1] == tok.eos_token_id
    assert tokenize_example(ex, tok, max_length=10)["input_ids"] == f["input_ids"][:10]
    with pytest.raises(ValueError, match="missing 'output'"):
        tokenize_example({"instruction": "a", "input": "b"}, tok)


@pytest.mark.slow
def test_tokenize_example_with_the_real_tokenizer(default_lm):
    _, tokenizer = default_lm
    ex = load_instructions("heldout")[0]
    f = tokenize_example(ex, tokenizer)
    response = [i for i, lab in zip(f["input_ids"], f["labels"]) if lab != IGNORE_INDEX]
    assert tokenizer.decode(response) == ex["output"] + tokenizer.eos_token
    prompt = [i for i, lab in zip(f["input_ids"], f["labels"]) if lab == IGNORE_INDEX]
    assert tokenizer.decode(prompt) == format_prompt(ex["instruction"], ex["input"])


def test_collate_pads_right_and_ignores_padding():
    feats = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    b = collate(feats, pad_token_id=0)
    assert b.input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b.labels.tolist() == [[-100, 6, 7], [8, -100, -100]]
    with pytest.raises(ValueError, match="non-empty"):
        collate([], 0)


def test_masked_loss_is_the_mean_over_response_tokens_only(tiny_llama):
    feats = [{"input_ids": [5, 6, 7, 9, 2], "labels": [-100, -100, 7, 9, 2]}, {"input_ids": [8, 4, 2], "labels": [-100, 4, 2]}]
    b = collate(feats, pad_token_id=0)
    with torch.no_grad():
        out = tiny_llama(**b.as_kwargs())
        logp = out.logits.log_softmax(-1)
    nll = [-logp[0, 1, 7], -logp[0, 2, 9], -logp[0, 3, 2], -logp[1, 0, 4], -logp[1, 1, 2]]
    torch.testing.assert_close(out.loss, torch.stack(nll).mean())


def test_make_batches_is_seeded_and_covers_the_data():
    tok = CharTokenizer()
    examples = make_date_instructions(10, 1)[0]
    a = make_batches(examples, tok, batch_size=4, steps=5, seed=0)
    b = make_batches(examples, tok, batch_size=4, steps=5, seed=0)
    assert all(torch.equal(x.input_ids, y.input_ids) for x, y in zip(a, b))
    assert len(a) == 5 and a[0].input_ids.shape[0] == 4
    with pytest.raises(ValueError, match="batch_size"):
        make_batches(examples, tok, batch_size=0, steps=1)


@pytest.mark.slow
def test_exact_match_scores_the_true_answers(default_lm):
    model, tokenizer = default_lm
    heldout = load_instructions("heldout")[:4]
    result = exact_match(model, tokenizer, heldout, max_new_tokens=12)
    assert len(result.predictions) == 4 and result.targets == [ex["output"] for ex in heldout]
    assert result.accuracy == sum(p == t for p, t in zip(result.predictions, result.targets)) / 4
