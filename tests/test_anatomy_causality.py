"""llmlab.anatomy.causality: a Hugging Face causal LM under our masks, on a tiny random Llama (both attention
kernels) and on SmolLM2."""

from __future__ import annotations

import pytest
import torch

from llmlab.anatomy import attention_mask, load_documents, logit_changes, masked_nll


def _ids(n=12, seed=0, vocab=97):
    return torch.randint(3, vocab, (2, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_our_causal_mask_reproduces_the_models_own_loss(make_tiny_llama, implementation):
    model = make_tiny_llama(attn_implementation=implementation)
    ids = _ids()
    with torch.no_grad():
        reference = model(ids, labels=ids).loss.item()  # transformers' own causal mask and shifted loss
    assert masked_nll(model, ids, attention_mask("causal", 12)) == pytest.approx(reference, rel=1e-5)
    # a prefix of one token is the causal mask; a longer one changes the numbers
    assert masked_nll(model, ids, attention_mask("prefix", 12, n_prefix=1)) == pytest.approx(reference, rel=1e-5)
    assert abs(masked_nll(model, ids, attention_mask("bidirectional", 12)) - reference) > 1e-4


def test_first_target_scores_only_the_continuation(tiny_llama):
    ids = _ids(seed=1)
    with torch.no_grad():
        logits = tiny_llama(ids).logits
    logp = torch.log_softmax(logits[:, 5:-1], -1).gather(-1, ids[:, 6:, None])
    assert masked_nll(tiny_llama, ids, attention_mask("causal", 12), first_target=6) == pytest.approx(
        -logp.mean().item(), rel=1e-5)
    prefix_nll = masked_nll(tiny_llama, ids, attention_mask("prefix", 12, n_prefix=6), first_target=6)
    assert prefix_nll != pytest.approx(-logp.mean().item(), rel=1e-6)


def test_logit_changes_on_a_tiny_llama(tiny_llama):
    ids = _ids(n=10, seed=2)[:1]
    delta = logit_changes(tiny_llama, ids, 6, new_token=int(ids[0, 6]) % 90 + 4)
    assert delta.shape == (10,) and bool((delta[:6] == 0).all()) and bool((delta[6:] > 0).all())


@pytest.mark.parametrize("call, error, match", [
    (lambda m, ids: logit_changes(m, ids, 2, int(ids[0, 2])), ValueError, "new_token must differ"),
    (lambda m, ids: logit_changes(m, torch.cat([ids, ids]), 2, 5), ValueError, r"one sequence \(1, seq\)"),
    (lambda m, ids: logit_changes(m, ids, 12, 5), ValueError, r"position must be an int in \[0, 11\]"),
    (lambda m, ids: masked_nll(m, ids, attention_mask("causal", 5)), ValueError, r"mask must have shape \(12, 12\)"),
    (lambda m, ids: masked_nll(m, ids, attention_mask("causal", 12), first_target=0), ValueError, "first_target"),
    (lambda m, ids: masked_nll("model", ids, None), TypeError, "model must be a torch.nn.Module"),
])
def test_bad_arguments(tiny_llama, call, error, match):
    with pytest.raises(error, match=match):
        call(tiny_llama, _ids()[:1])


@pytest.mark.slow
def test_smollm2_is_causal_and_not_a_prefix_lm(default_lm):
    model, tokenizer = default_lm
    text = ("The river rose after three days of rain, and the village council met at night to decide whether "
            "the old bridge should be closed to cars and buses until engineers could inspect it.")
    ids = tokenizer(text, return_tensors="pt").input_ids
    delta = logit_changes(model, ids, 10, tokenizer.encode(" banana")[0])
    assert float(delta[:10].max()) <= 1e-5 and float(delta[10:].min()) > 1e-2
    # Bidirectional context over the first 48 tokens of an article: the same 32 later tokens get harder to
    # predict, by about a nat per token (3.3 -> 4.6 when measured), not easier.
    article = tokenizer(load_documents(n=1)[0]["document"], return_tensors="pt").input_ids[:, :96]
    causal = masked_nll(model, article, attention_mask("causal", 96), first_target=64)
    prefix = masked_nll(model, article, attention_mask("prefix", 96, n_prefix=48), first_target=64)
    assert prefix > causal + 0.5
