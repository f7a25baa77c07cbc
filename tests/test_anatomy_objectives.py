"""llmlab.anatomy.objectives: BERT masking against Hugging Face's collator, the causal and masked losses,
and what a causal and a masked LM can do, on random and on briefly trained tiny transformers."""

from __future__ import annotations

import math

import pytest
import torch

from llmlab.anatomy import (ANIMAL_SOUNDS, BOS, EOS, MASK, PAD, TinyTransformer, WordVocab, attention_mask,
                            encode_batch, fill_blank, is_grammatical, lm_loss, load_animal_corpus, mask_tokens, padded_mask,
                            pair_total, causal_perplexity, pseudo_logprobs, pseudo_perplexity, sample_sentences,
                            sentence_logprob, target_logprobs, train_tiny_lm)


@pytest.fixture(scope="module")
def vocab():
    return WordVocab.from_sentences(load_animal_corpus())


@pytest.fixture(scope="module")
def sentences():
    return load_animal_corpus()[:64]


def random_model(vocab_size, seed=0, **kwargs):
    torch.manual_seed(seed)
    return TinyTransformer(vocab_size, **{"d_model": 16, "n_layers": 2, "n_heads": 2, "max_len": 16, **kwargs}).eval()


def hf_word_tokenizer(vocab: WordVocab):
    """A Hugging Face tokenizer over the same ids, so the collator draws over the same vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab.index, unk_token="[PAD]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", mask_token="[MASK]", bos_token="[BOS]",
                                   eos_token="[EOS]")


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_mask_tokens_equals_hugging_face_collator(vocab, sentences, seed):
    # huggingface/transformers src/transformers/data/data_collator.py, DataCollatorForLanguageModeling.
    # torch_mask_tokens: the same draws in the same order, so the same generator state gives the same
    # inputs and labels (tests/trainer/test_data_collator.py only checks shapes and -100 labels).
    from transformers import DataCollatorForLanguageModeling

    ids = encode_batch(sentences, vocab)
    special = (ids == PAD) | (ids == BOS) | (ids == EOS)
    collator = DataCollatorForLanguageModeling(hf_word_tokenizer(vocab), mlm_probability=0.15)
    collator.generator = torch.Generator().manual_seed(seed)
    hf_inputs, hf_labels = collator.torch_mask_tokens(ids.clone(), special_tokens_mask=special.clone())
    ours = mask_tokens(ids, vocab_size=len(vocab), special_mask=special, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(ours[0], hf_inputs) and torch.equal(ours[1], hf_labels)


def test_mask_tokens_rates_and_labels(vocab):
    ids = encode_batch(load_animal_corpus()[:2000], vocab)
    inputs, labels = mask_tokens(ids, vocab_size=len(vocab), generator=torch.Generator().manual_seed(0))
    picked = labels != -100
    eligible = (ids != PAD) & (ids != BOS) & (ids != MASK)
    assert not bool((picked & ~eligible).any()), "PAD and BOS are never picked"
    assert bool((labels[picked] == ids[picked]).all()) and bool((inputs[~picked] == ids[~picked]).all())
    rate = picked.sum().item() / eligible.sum().item()
    as_mask = (inputs[picked] == MASK).float().mean().item()
    unchanged = (inputs[picked] == ids[picked]).float().mean().item()
    assert abs(rate - 0.15) < 0.01 and abs(as_mask - 0.8) < 0.03
    assert abs(unchanged - (0.1 + 0.1 / len(vocab))) < 0.03  # 10 % kept, plus random draws that hit the same id
    inputs, labels = mask_tokens(ids, vocab_size=len(vocab), p=0.0)
    assert torch.equal(inputs, ids) and bool((labels == -100).all())


def test_causal_loss_and_log_probabilities_by_hand(vocab, sentences):
    model = random_model(len(vocab))
    ids = encode_batch(sentences[:5], vocab)
    logits = model(ids[:, :-1], attention_mask("causal", ids.shape[1] - 1))  # no padding mask: checked separately
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
    real = ids[:, 1:] != PAD
    for b in range(5):
        n = int(real[b].sum())
        # padding only comes after the sentence, so the causal mask alone gives the same real positions
        torch.testing.assert_close(sentence_logprob(model, ids[b:b + 1])[0], logp[b, :n].sum())
    with torch.no_grad():
        loss = lm_loss(model, ids, "causal")
    torch.testing.assert_close(loss, -logp[real].mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(causal_perplexity(model, ids)), torch.exp(-logp[real].mean()), rtol=1e-5, atol=0)


def test_padding_does_not_change_a_sentence_score(vocab):
    model = random_model(len(vocab))
    short = encode_batch(["a cat meows ."], vocab)
    padded = encode_batch(["a cat meows .", "every happy horse neighs loudly near the barn ."], vocab)
    torch.testing.assert_close(sentence_logprob(model, short)[0], sentence_logprob(model, padded)[0])
    torch.testing.assert_close(pseudo_logprobs(model, short)[0], pseudo_logprobs(model, padded)[0, :short.shape[1] - 1])


def test_pseudo_logprobs_by_a_loop(vocab):
    model = random_model(len(vocab), seed=3)
    ids = encode_batch(["the dog barks .", "my old owl hoots softly ."], vocab)
    got = pseudo_logprobs(model, ids)
    for b in range(2):
        for i in range(1, ids.shape[1]):
            if ids[b, i] == PAD:
                assert got[b, i - 1] == 0
                continue
            hidden = ids[b:b + 1].clone()
            hidden[0, i] = MASK
            logits = model(hidden, padded_mask("bidirectional", hidden))[0, i]
            torch.testing.assert_close(got[b, i - 1], torch.log_softmax(logits, -1)[ids[b, i]])
    n = (ids[:, 1:] != PAD).sum().item()
    assert math.isclose(pseudo_perplexity(model, ids), math.exp(-got.sum().item() / n), rel_tol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_causal_conditionals_chain_for_any_model(vocab, seed):
    """Σ_a Σ_b p(a | x_<i) p(b | x_<i, a) = 1 for every causal model, trained or not."""
    model = random_model(len(vocab), seed=seed)
    ids = encode_batch(["the big dog barks ."], vocab)
    for position in (1, 3):
        assert abs(pair_total(model, ids, position, objective="causal") - 1) < 1e-6
    # (A random model's masked conditionals are nearly independent of the context, so their products sum to
    # about V² · (1/V)² = 1; a trained one's do not: test_training_teaches_each_model_what_its_mask_allows.)


def test_fill_blank_methods_by_hand(vocab):
    model = random_model(len(vocab), seed=5)
    ids = encode_batch(["the dog barks .", "a cat meows loudly ."], vocab)
    cands = [vocab.index[a] for a in sorted(ANIMAL_SOUNDS)]
    left = fill_blank(model, ids, 2, method="left", candidates=cands)
    logits = model(ids[:, :2], attention_mask("causal", 2))[:, -1]
    assert torch.equal(left, torch.tensor(cands)[logits[:, cands].argmax(-1)])
    rescored = fill_blank(model, ids, 2, method="rescore", candidates=cands)
    for b in range(2):
        scores = []
        for c in cands:
            filled = ids[b:b + 1].clone()
            filled[0, 2] = c
            scores.append(sentence_logprob(model, filled)[0])
        assert rescored[b] == cands[int(torch.stack(scores).argmax())]
    masked = fill_blank(model, ids, 2, method="masked", candidates=cands)
    assert all(int(m) in cands for m in masked)


def test_sampling_is_seeded_and_stops_at_eos(vocab):
    model = random_model(len(vocab))
    a = sample_sentences(model, 6, max_len=10, generator=torch.Generator().manual_seed(0))
    b = sample_sentences(model, 6, max_len=10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape[0] == 6 and a.shape[1] <= 10 and bool((a[:, 0] == BOS).all())
    for row in a.tolist():
        if EOS in row:
            assert all(t == PAD for t in row[row.index(EOS) + 1:])


def test_training_teaches_each_model_what_its_mask_allows(vocab):
    """A few hundred steps: the causal model writes grammatical sentences; only the masked model (or the
    causal one re-scoring every candidate) fills an animal from the sound to its right."""
    ids = encode_batch(load_animal_corpus(), vocab)
    causal, masked = (random_model(len(vocab), d_model=64, n_heads=4) for _ in range(2))
    before = causal_perplexity(causal, ids[:200])
    log = train_tiny_lm(causal, ids, "causal", steps=150, lr=1e-2, batch_size=128, seed=0)  # notebook 09's recipe
    train_tiny_lm(masked, ids, "masked", steps=300, lr=5e-3, batch_size=128, seed=0)
    assert not causal.training and len(log.losses) == 150 and log.losses[-1] < log.losses[0]
    assert causal_perplexity(causal, ids[:200]) < before / 5
    samples = sample_sentences(causal, 20, generator=torch.Generator().manual_seed(0))
    assert sum(is_grammatical(vocab.decode(s)) for s in samples) >= 18
    test = encode_batch(["the dog barks .", "a cow moos again .", "my owl hoots .", "every frog croaks ."], vocab)
    cands = [vocab.index[a] for a in sorted(ANIMAL_SOUNDS)]
    truth = test[:, 2]
    assert bool((fill_blank(masked, test, 2, method="masked", candidates=cands) == truth).all())
    assert bool((fill_blank(causal, test, 2, method="rescore", candidates=cands) == truth).all())
    assert (fill_blank(causal, test, 2, method="left", candidates=cands) == truth).float().mean() <= 0.5
    assert abs(pair_total(causal, test[:1], 2, objective="causal") - 1) < 1e-6
    assert pair_total(masked, test[:1], 2, objective="masked") > 5  # animal and sound vouch for each other


def test_training_is_repeatable_and_leaves_the_global_stream_alone(vocab, sentences):
    ids = encode_batch(sentences, vocab)
    runs = []
    for _ in range(2):
        model = random_model(len(vocab), dropout=0.1)
        state, threads = torch.get_rng_state(), torch.get_num_threads()
        runs.append(train_tiny_lm(model, ids, "masked", steps=5, seed=3).losses)
        assert torch.equal(state, torch.get_rng_state()) and torch.get_num_threads() == threads
    assert runs[0] == runs[1]
    assert len(train_tiny_lm(random_model(len(vocab)), ids, "causal", steps=1).losses) == 1


@pytest.mark.parametrize("call, error, match", [
    (lambda m, ids: lm_loss(m, ids, "permuted"), ValueError, r"objective must be one of \['causal', 'masked'\]"),
    (lambda m, ids: train_tiny_lm(m, ids, "causal", steps=0), ValueError, "steps must be an int >= 1"),
    (lambda m, ids: train_tiny_lm(m, ids, "causal", lr=0), ValueError, "lr must be a number > 0"),
    (lambda m, ids: train_tiny_lm(m, ids, "masked", mask_prob=0), ValueError, r"mask_prob must be a number in \(0, 1\]"),
    (lambda m, ids: train_tiny_lm("model", ids, "causal"), TypeError, "model must be a torch.nn.Module"),
    (lambda m, ids: train_tiny_lm(m, ids.float(), "causal"), TypeError, "ids must hold integers"),
    (lambda m, ids: mask_tokens(ids, vocab_size=52, p=1.5), ValueError, r"p must be a number in \[0, 1\]"),
    (lambda m, ids: mask_tokens(ids, vocab_size=3), ValueError, r"mask_id must be an int in \[0, 2\]"),
    (lambda m, ids: mask_tokens(ids, vocab_size=10, special_mask=torch.zeros(2)), ValueError, "special_mask must be"),
    (lambda m, ids: fill_blank(m, ids, 1, method="guess", candidates=[5]), ValueError, "method must be one of"),
    (lambda m, ids: fill_blank(m, ids, 0, method="left", candidates=[5]), ValueError, "position must be an int in"),
    (lambda m, ids: fill_blank(m, ids, 1, method="left", candidates=[]), ValueError, "candidates must be a non-empty"),
    (lambda m, ids: pair_total(m, ids, 1, objective="causal"), ValueError, "ids must hold one sentence"),
    (lambda m, ids: pair_total(m, ids[:1], 0, objective="causal"), ValueError, "position must be an int in"),
    (lambda m, ids: sample_sentences(m, 0), ValueError, r"n must be an int in \[1, 100000\]"),
    (lambda m, ids: sample_sentences(m, 2, temperature=0), ValueError, "temperature must be a number > 0"),
    (lambda m, ids: sample_sentences(m, 2, max_len=99), ValueError, r"max_len must be an int in \[2, 16\]"),
])
def test_bad_arguments(vocab, call, error, match):
    model = random_model(len(vocab))
    ids = encode_batch(["the dog barks .", "a cat meows ."], vocab)
    with pytest.raises(error, match=match):
        call(model, ids)


def test_target_logprobs_are_zero_on_padding(vocab):
    model = random_model(len(vocab))
    ids = encode_batch(["a cat meows .", "every happy horse neighs loudly near the barn ."], vocab)
    logp = target_logprobs(model, ids)
    assert bool((logp[0, 5:] == 0).all()) and bool((logp[0, :5] < 0).all()) and bool((logp[1] < 0).all())
