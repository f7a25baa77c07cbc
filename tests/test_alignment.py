"""llmlab.alignment: the DPO loss, summed response log-probabilities, preference batches, training.

Peer: TRL (huggingface/trl), whose ``DPOTrainer`` with ``loss_type="sigmoid"`` computes
−logsigmoid(β·((π_w − ref_w) − (π_l − ref_l))) and rewards β·(π − ref), detached
(trl/trainer/dpo_trainer.py, ``_compute_loss``, TRL 1.16). TRL is *not* a dependency of llmlab,
not even a test-only one: ``pip install trl`` (1.16.0) pulls ``datasets``, ``pyarrow`` and
``pandas`` (about 300 MB installed, pyarrow alone 170 MB; 45 s to install on our 2-core machine,
on every CI run) and needs Python >= 3.11 while llmlab supports 3.10; and in our environment
``datasets`` 5.2 with ``pyarrow`` 26 could not even hash a ``Dataset`` (PicklingError on
``MonthDayNano``). So :func:`dpo_loss` is held against the DPO paper's formula (Rafailov et al.,
2023, eq. 7) evaluated independently in float64, a case checked by hand, and the cases of TRL's
own tests; ``test_matches_trl_dpo_trainer`` runs the real ``DPOTrainer`` when ``trl`` is
installed (run with TRL 1.16.0 in a separate environment: it passes).
"""

import math

import pytest
import torch

from llmlab import alignment, lora
from llmlab.alignment import (collate_preferences, dpo_loss, evaluate_preferences, make_preference_batches,
                              reference_logps, tokenize_preference, train_dpo)
from llmlab.data import IGNORE_INDEX, InstructionBatch
from llmlab.decoding import sequence_logprob


def sequence_logps(model, batch):
    """Summed response log-probs of one batch, as train_dpo / reference_logps score it (a private step)."""
    return alignment._sequence_logps(model, *alignment._batch_tensors(batch))
from llmlab.prompting import label_logprobs


def paper_loss(pc, pr, rc, rr, beta):
    """Rafailov et al. (2023), eq. 7, written out in float64: −log σ(β log(π_w/ref_w) − β log(π_l/ref_l))."""
    pc, pr, rc, rr = (t.double() for t in (pc, pr, rc, rr))
    z = beta * (pc - rc) - beta * (pr - rr)
    return -torch.log(1 / (1 + torch.exp(-z)))


# ----------------------------------------------------------------------------- dpo_loss


def test_dpo_loss_by_hand():
    """π_w = −1, π_l = −2, ref_w = ref_l = −1.5, β = 0.1: the log-ratios are +0.5 and −0.5, the
    margin 1.0, so loss = −log σ(0.1) = log(1 + e^−0.1) = 0.6443966600735709; rewards ±0.05."""
    losses, chosen, rejected = dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]),
                                        torch.tensor([-1.5]), beta=0.1)
    assert losses.item() == pytest.approx(0.6443966600735709, rel=1e-6)
    assert chosen.item() == pytest.approx(0.05) and rejected.item() == pytest.approx(-0.05)


@pytest.mark.parametrize("beta", [0.01, 0.1, 0.5, 2.0])
def test_dpo_loss_equals_the_paper_formula(beta):
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (-30 * torch.rand(64, generator=g) for _ in range(4))
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=beta)
    assert losses.shape == chosen.shape == rejected.shape == (64,)
    torch.testing.assert_close(losses.double(), paper_loss(pc, pr, rc, rr, beta), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chosen, beta * (pc - rc))
    torch.testing.assert_close(rejected, beta * (pr - rr))
    # the reward margin is the argument of the sigmoid
    torch.testing.assert_close(losses, -torch.nn.functional.logsigmoid(chosen - rejected))


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_policy_equal_to_reference_gives_log_2(beta):
    """Step 1 of TRL's reference DPO run (tests/invariant/references/dpo.json) logs loss
    0.6931471824645996: the policy starts as the reference, every reward is 0, loss = log 2."""
    logps = torch.tensor([-12.5, -3.0, -40.0])
    losses, chosen, rejected = dpo_loss(logps, logps - 1, logps, logps - 1, beta=beta)
    torch.testing.assert_close(losses, torch.full((3,), math.log(2)))
    assert (chosen == 0).all() and (rejected == 0).all()


def test_extreme_log_ratios_stay_finite():
    """The inputs of TRL's test_dpo_loss_alpha_div_f / test_dpo_loss_js_div_f (tests/test_dpo_trainer.py
    before the 2025 refactor): log-ratios of hundreds. A naive −log(sigmoid(z)) gives inf for
    z = −122; the softplus form gives the exact 122.0."""
    cases = [([410.0, 0.1], [810.5, 0.2], [-610.0, -0.1], [110.6, 0.5]),
             ([410.0, 0.1], [95.5, 0.2], [-610.0, -0.1], [5.5, 0.5])]
    for pc, pr, rc, rr in cases:
        t = [torch.tensor(x) for x in (pc, pr, rc, rr)]
        losses, _, _ = dpo_loss(*t, beta=0.1)
        assert torch.isfinite(losses).all()
        z = 0.1 * ((t[0] - t[2]) - (t[1] - t[3])).double()
        torch.testing.assert_close(losses.double(), torch.nn.functional.softplus(-z), rtol=1e-6, atol=1e-6)
    assert dpo_loss(*[torch.tensor([x]) for x in (0.0, 1220.0, 0.0, 0.0)], beta=0.1)[0].item() == pytest.approx(122.0)


def test_dpo_gradient_is_the_papers_weighting():
    """∂L/∂log π(y_w) = −β σ(−β·margin): pairs the implicit reward already orders right push less."""
    pc = torch.tensor([-5.0, -5.0], requires_grad=True)
    pr = torch.tensor([-9.0, -2.0])
    ref = torch.tensor([-6.0, -6.0])
    beta = 0.5
    losses, chosen, rejected = dpo_loss(pc, pr, ref, ref, beta=beta)
    losses.sum().backward()
    expected = -beta * torch.sigmoid(-(chosen - rejected))
    torch.testing.assert_close(pc.grad, expected)
    assert abs(pc.grad[0]) < abs(pc.grad[1])  # the pair ordered right (margin 2) gets the smaller push
    assert not chosen.requires_grad and not rejected.requires_grad  # rewards are metrics: detached


@pytest.mark.parametrize("beta", [0, -0.1, float("nan"), float("inf")])
def test_dpo_loss_refuses_beta_out_of_range(beta):
    t = torch.zeros(2)
    with pytest.raises(ValueError, match="beta must be a .*> 0"):
        dpo_loss(t, t, t, t, beta=beta)


def test_dpo_loss_refuses_mismatched_or_malformed_inputs():
    a, b = torch.zeros(3), torch.zeros(2)
    with pytest.raises(ValueError, match="same length.*reference_rejected_logps has 2"):
        dpo_loss(a, a, a, b)
    with pytest.raises(ValueError, match="policy_chosen_logps must be 1-D"):
        dpo_loss(torch.zeros(2, 2), a, a, a)
    with pytest.raises(ValueError, match="at least 1 element"):
        dpo_loss(*[torch.zeros(0)] * 4)
    with pytest.raises(TypeError, match="floating-point"):
        dpo_loss(torch.zeros(3, dtype=torch.long), a, a, a)
    with pytest.raises(TypeError, match="beta"):
        dpo_loss(a, a, a, a, beta="0.1")


# ----------------------------------------------------------------------------- sequence_logps and batches


def test_collate_preferences_layout_is_trls():
    """Port of TRL's TestDataCollatorForPreference.test_padding_and_masks (tests/test_dpo_trainer.py):
    chosen rows first, then rejected, right-padded; our labels are the ids where TRL's
    completion_mask is 1, −100 elsewhere."""
    features = [{"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5], "rejected_ids": [6]},
                {"prompt_ids": [7, 8], "chosen_ids": [9, 10], "rejected_ids": [11, 12, 13]}]
    batch = collate_preferences(features, pad_token_id=0)
    expected_input_ids = torch.tensor([[1, 2, 3, 4, 5], [7, 8, 9, 10, 0], [1, 2, 3, 6, 0], [7, 8, 11, 12, 13]])
    expected_attention_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    expected_completion_mask = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 1, 1, 0], [0, 0, 0, 1, 0], [0, 0, 1, 1, 1]])
    torch.testing.assert_close(batch.input_ids, expected_input_ids)
    torch.testing.assert_close(batch.attention_mask, expected_attention_mask)
    torch.testing.assert_close(batch.labels, expected_input_ids.masked_fill(expected_completion_mask == 0, IGNORE_INDEX))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_sequence_logps_equals_hf_loss_and_single_rows(arch, tiny_llama, tiny_gpt2):
    """Against Hugging Face's own masked cross-entropy (mean over the response tokens, times their
    number) and decoding.sequence_logprob, row by row, with padding and different prompt lengths."""
    model = tiny_llama if arch == "llama" else tiny_gpt2
    features = [{"prompt_ids": [5, 6, 7, 8], "chosen_ids": [9, 10, 2], "rejected_ids": [11, 2]},
                {"prompt_ids": [12, 13], "chosen_ids": [14, 2], "rejected_ids": [15, 16, 17, 18, 2]}]
    batch = collate_preferences(features, pad_token_id=0)
    with torch.no_grad():
        got = sequence_logps(model, batch)
    rows = [f["prompt_ids"] + f[k] for k in ("chosen_ids", "rejected_ids") for f in features]
    prompts = [len(f["prompt_ids"]) for f in features] * 2
    for value, ids, n_prompt in zip(got.tolist(), rows, prompts):
        x = torch.tensor([ids])
        labels = x.clone()
        labels[0, :n_prompt] = IGNORE_INDEX
        with torch.no_grad():
            hf = -model(input_ids=x, labels=labels).loss.item() * (len(ids) - n_prompt)
        assert value == pytest.approx(hf, abs=1e-4)
        assert value == pytest.approx(sequence_logprob(model, x, n_prompt), abs=1e-4)


def test_sequence_logps_agrees_with_label_logprobs(tiny_llama, char_tokenizer):
    """Two independent implementations (prompting's row-sharing scorer, alignment's masked sum)."""
    prompt, answers = "Q: 2+2?\nA:", [" four", " five!"]
    features = [{"prompt_ids": char_tokenizer(prompt)["input_ids"],
                 "chosen_ids": char_tokenizer(answers[0], add_special_tokens=False)["input_ids"],
                 "rejected_ids": char_tokenizer(answers[1], add_special_tokens=False)["input_ids"]}]
    with torch.no_grad():
        ours = sequence_logps(tiny_llama, collate_preferences(features, 0))
    torch.testing.assert_close(ours, label_logprobs(tiny_llama, char_tokenizer, prompt, answers), rtol=0, atol=1e-4)


def test_sequence_logps_carries_gradients_and_refuses_bad_batches(tiny_llama):
    batch = collate_preferences([{"prompt_ids": [5, 6], "chosen_ids": [7], "rejected_ids": [8]}], 0)
    tiny_llama.zero_grad()
    sequence_logps(tiny_llama, batch).sum().backward()
    assert tiny_llama.model.layers[0].self_attn.q_proj.weight.grad is not None
    tiny_llama.zero_grad(set_to_none=True)
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match="at least one response token"):
        sequence_logps(tiny_llama, {"input_ids": ids, "labels": torch.full_like(ids, IGNORE_INDEX)})
    with pytest.raises(ValueError, match="first token"):
        sequence_logps(tiny_llama, {"input_ids": ids, "labels": ids})
    with pytest.raises(ValueError, match="shape of input_ids"):
        sequence_logps(tiny_llama, {"input_ids": ids, "labels": ids[:, :2]})
    with pytest.raises(TypeError, match="batch"):
        sequence_logps(tiny_llama, [ids])


def test_tokenize_preference_ends_answers_with_eos(char_tokenizer):
    pair = {"prompt": "Q?", "chosen": "Yes.", "rejected": "Well, yes."}
    ids = tokenize_preference(pair, char_tokenizer, chat=False)
    assert ids["prompt_ids"] == char_tokenizer("Q?", add_special_tokens=False)["input_ids"]
    assert ids["chosen_ids"][-1] == ids["rejected_ids"][-1] == char_tokenizer.eos_token_id
    assert char_tokenizer.decode(ids["rejected_ids"]) == "Well, yes."
    with pytest.raises(ValueError, match="missing 'rejected'"):
        tokenize_preference({"prompt": "Q?", "chosen": "Yes."}, char_tokenizer, chat=False)
    with pytest.raises(ValueError, match="chosen"):
        tokenize_preference({**pair, "chosen": ""}, char_tokenizer, chat=False)


# ----------------------------------------------------------------------------- instruction tuning


# ----------------------------------------------------------------------------- training


PAIRS = [{"prompt": f"Q{i}?", "chosen": "Yes.", "rejected": "Well, let me think... yes, I suppose so!"}
         for i in range(6)]


def test_train_dpo_raises_the_margin_of_held_out_pairs(make_tiny_llama, char_tokenizer):
    """A few LoRA DPO steps on a tiny random Llama: the train loss falls from log 2, the implicit
    reward margin of *unseen* pairs of the same kind rises from exactly 0, and the reference
    (the frozen base weights) does not move."""
    torch.manual_seed(0)
    model = lora.add_lora(make_tiny_llama(), ("q_proj", "v_proj"), r=4, alpha=8)
    base = model.model.layers[0].self_attn.q_proj.base.weight.detach().clone()
    batches = make_preference_batches(PAIRS[:4], char_tokenizer, batch_size=2, steps=6, chat=False)
    held = make_preference_batches(PAIRS[4:], char_tokenizer, batch_size=2, steps=1, chat=False)
    ref_train, ref_held = reference_logps(model, batches), reference_logps(model, held)
    before = evaluate_preferences(model, held, ref_held, beta=0.1)
    assert before.margin == 0 and before.accuracy == 0 and before.loss == pytest.approx(math.log(2))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    result = train_dpo(model, batches, opt, reference=ref_train, beta=0.1)
    assert result.losses[0] == pytest.approx(math.log(2), abs=1e-5)  # the first step: policy == reference
    assert result.losses[-1] < result.losses[0] and result.margins[-1] > 0
    assert len(result.step_times) == 6 and result.accuracies[-1] == 1.0
    after = evaluate_preferences(model, held, ref_held, beta=0.1)
    assert after.margin > 0 and after.accuracy == 1.0 and after.loss < math.log(2)
    torch.testing.assert_close(model.model.layers[0].self_attn.q_proj.base.weight, base, rtol=0, atol=0)
    with pytest.raises(ValueError, match="same length"):
        train_dpo(model, batches, opt, reference=ref_train[:1])
    with pytest.raises(ValueError, match="beta"):
        train_dpo(model, batches, opt, reference=ref_train, beta=0)


def test_stop_probabilities_are_the_eos_probability_after_the_chosen_answer(tiny_llama, char_tokenizer):
    pairs = [{"prompt": "Q: 1+1?", "chosen": "2.", "rejected": "2, as you know."}, {"prompt": "Hi", "chosen": "Hello!", "rejected": "Hey"}]
    got = alignment.stop_probabilities(tiny_llama, char_tokenizer, pairs, chat=False)
    for p, pair in zip(got.tolist(), pairs):
        ids = char_tokenizer(pair["prompt"] + pair["chosen"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = tiny_llama(input_ids=torch.tensor([ids])).logits[0, -1]
        assert p == pytest.approx(logits.softmax(-1)[char_tokenizer.eos_token_id].item(), rel=1e-4)
    with pytest.raises(ValueError, match="examples"):
        alignment.stop_probabilities(tiny_llama, char_tokenizer, [])


def test_generate_answers_with_a_plain_prompt(tiny_llama, char_tokenizer):
    answers = alignment.generate_answers(tiny_llama, char_tokenizer, ["Hi", "Hello there"], max_new_tokens=4, chat=False)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    with pytest.raises(ValueError, match="prompts"):
        alignment.generate_answers(tiny_llama, char_tokenizer, [], chat=False)


# ----------------------------------------------------------------------------- the peer and the real model


def test_matches_trl_dpo_trainer(monkeypatch):
    """TRL's DPOTrainer (loss_type "sigmoid") on a tiny Llama with the default model's tokenizer and
    a *different* reference model: the same loss, rewards and log-probabilities from its batch.
    Runs only where trl is installed (not a dependency: see the module docstring)."""
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    import itertools
    import tempfile

    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from llmlab.models import LLAMA_PRESETS, default_model_dir

    counter = itertools.count()
    # datasets 5.2 + pyarrow 26 fail to dill-hash a Dataset here (MonthDayNano): any unique hash does.
    monkeypatch.setattr(datasets.fingerprint.Hasher, "hash", classmethod(lambda cls, value: f"h{next(counter)}"))
    tok = AutoTokenizer.from_pretrained(str(default_model_dir()))
    cfg = dict(LLAMA_PRESETS["tiny"], vocab_size=len(tok), bos_token_id=tok.bos_token_id,
               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    policy = LlamaForCausalLM(LlamaConfig(**cfg))
    torch.manual_seed(1)
    ref = LlamaForCausalLM(LlamaConfig(**cfg))
    ds = datasets.Dataset.from_dict({"prompt": ["What is 2+2?", "Name a colour."], "chosen": [" Four.", " Blue."],
                                     "rejected": [" It is five, I think.", " Dog."]})
    with tempfile.TemporaryDirectory() as out:
        args = trl.DPOConfig(output_dir=out, beta=0.3, per_device_train_batch_size=2, report_to="none", use_cpu=True)
        trainer = trl.DPOTrainer(model=policy, ref_model=ref, args=args, processing_class=tok, train_dataset=ds)
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.model.eval()
        with torch.no_grad():
            loss = trainer.compute_loss(trainer.model, batch)
        metrics = trainer._metrics["train"] or trainer._metrics["eval"]
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE_INDEX)
        ours_batch = InstructionBatch(batch["input_ids"], batch["attention_mask"], labels)
        with torch.no_grad():
            pc, pr = sequence_logps(trainer.model, ours_batch).chunk(2)
            rc, rr = sequence_logps(trainer.ref_model, ours_batch).chunk(2)
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.3)
    assert losses.mean().item() == pytest.approx(loss.item(), rel=1e-5)
    assert chosen.mean().item() == pytest.approx(metrics["rewards/chosen"][-1], rel=1e-4)
    assert rejected.mean().item() == pytest.approx(metrics["rewards/rejected"][-1], rel=1e-4)
    assert pc.mean().item() == pytest.approx(metrics["logps/chosen"][-1], rel=1e-5)
    assert pr.mean().item() == pytest.approx(metrics["logps/rejected"][-1], rel=1e-5)


@pytest.mark.slow
def test_default_model_chat_pairs(default_lm):
    model, tokenizer = default_lm
    pair = {"prompt": "What is the capital of France?", "chosen": "Paris.", "rejected": "Well, it is Paris, I think!"}
    ids = tokenize_preference(pair, tokenizer)
    prompt = tokenizer.decode(ids["prompt_ids"])
    assert prompt.endswith("<|im_start|>assistant\n") and "What is the capital of France?" in prompt
    assert tokenizer.decode(ids["chosen_ids"]) == "Paris.<|im_end|>"  # EOS closes the assistant's turn
    batch = collate_preferences([ids], tokenizer.pad_token_id)
    with torch.no_grad():
        chosen, rejected = sequence_logps(model, batch)
    assert chosen > rejected  # the short, plain answer is the likelier one under the instruct model
