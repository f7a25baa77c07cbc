"""llmlab.decoding.repetition: repeated_ngram_fraction on hand-counted sequences."""

import pytest
import torch

from llmlab.decoding import repeated_ngram_fraction


@pytest.mark.parametrize("ids,n,expected", [
    ([1, 2, 3, 1, 2, 3], 3, 1 / 4),  # (1,2,3) (2,3,1) (3,1,2) (1,2,3): the last one repeats
    ([1, 2, 3, 1, 2, 3], 2, 2 / 5),  # (1,2) (2,3) (3,1) (1,2) (2,3)
    ([1, 2, 3, 1, 2, 3], 4, 0.0),  # (1,2,3,1) (2,3,1,2) (3,1,2,3): all different
    ([7, 7, 7, 7], 1, 3 / 4),  # every token after the first repeats
    ([7, 7, 7, 7], 2, 2 / 3),
    ([5, 6, 7, 8], 1, 0.0),
    ([4, 5, 4, 5, 4, 5, 4, 5], 2, 5 / 7),  # a loop of period 2: 7 bigrams, only the first two are new
    ([1, 2, 3], 3, 0.0),  # one n-gram, nothing earlier
])
def test_hand_counted(ids, n, expected):
    assert repeated_ngram_fraction(ids, n) == pytest.approx(expected)


def test_n_longer_than_the_sequence_gives_zero():
    assert repeated_ngram_fraction([1, 1, 1], 4) == 0.0
    assert repeated_ngram_fraction([], 1) == 0.0
    assert repeated_ngram_fraction(torch.tensor([3, 3], dtype=torch.long), 5) == 0.0


def test_tensor_and_list_agree():
    ids = [9, 1, 2, 9, 1, 2, 9, 4]
    expected = repeated_ngram_fraction(ids, 3)
    assert expected == pytest.approx(2 / 6)
    assert repeated_ngram_fraction(torch.tensor(ids), 3) == expected
    assert repeated_ngram_fraction(torch.tensor([ids]), 3) == expected  # (1, T), as decoders return
    assert repeated_ngram_fraction(torch.tensor(ids, dtype=torch.int32), 3) == expected
    assert repeated_ngram_fraction(tuple(ids), 3) == expected
    assert repeated_ngram_fraction(ids) == repeated_ngram_fraction(ids, 4)  # n defaults to 4


@pytest.mark.parametrize("args,error,match", [
    (([1, 2, 3], 0), ValueError, "n must"),
    (([1, 2, 3], 2.0), TypeError, "n must"),
    (([1, 2, 3], True), TypeError, "n must"),
    ((torch.tensor([1.0, 2.0]), 1), TypeError, "token_ids"),
    ((torch.tensor([[1, 2], [3, 4]]), 1), ValueError, "token_ids"),
    (([1, 2.5], 1), TypeError, "token_ids"),
    (("hello", 1), TypeError, "token_ids"),
    ((None, 1), TypeError, "token_ids"),
])
def test_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        repeated_ngram_fraction(*args)


# ---------------------------------------------------------------------------------------------
# The repetition controls, against transformers' logits processors
# ---------------------------------------------------------------------------------------------

from transformers.generation.logits_process import (  # noqa: E402  (the reference implementations)
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
)

from llmlab.decoding import banned_ngram_tokens, repetition_penalty_filter  # noqa: E402
from llmlab.decoding.repetition import _ban_repeated_ngrams, _repetition_controls  # noqa: E402


def no_repeat_ngram_filter(scores, token_ids, n):
    """The decoders' n-gram ban (a private step of theirs) on (batch, vocab) or (vocab,) scores."""
    return _ban_repeated_ngrams(scores.reshape(-1, scores.shape[-1]), token_ids.reshape(scores.reshape(
        -1, scores.shape[-1]).shape[0], -1), n).reshape(scores.shape)


def _uniform(batch, vocab):
    return torch.ones((batch, vocab)) / vocab


def test_repetition_penalty_hf_case():
    # Ported from huggingface/transformers tests/generation/test_logits_process.py,
    # LogitsProcessorTest.test_repetition_penalty_dist_process.
    input_ids = torch.tensor([[0, 1], [5, 0]])
    vocab = 10
    scores = _uniform(2, vocab)
    scores[0, 0] = -(1 / vocab)
    scores[1, 5] = 4 / vocab
    before = scores.clone()
    out = repetition_penalty_filter(scores, input_ids, 2.0)
    assert out[0, 0].item() == pytest.approx(-(1 / vocab) * 2)  # negative: multiplied
    assert out[0, 1].item() == pytest.approx((1 / vocab) / 2)  # positive: divided
    assert out[1, 0].item() == pytest.approx((1 / vocab) / 2)
    assert out[1, 5].item() == pytest.approx((4 / vocab) / 2)
    assert out[0, 2].item() == pytest.approx(1 / vocab)  # not seen: unchanged
    assert torch.equal(scores, before)  # not in place


def test_repetition_penalty_lowers_scores_but_a_probability_can_rise():
    # The docstring's example: seen tokens with scores 10 and 1, an unseen one with 0, penalty 2.
    scores = torch.tensor([10.0, 1.0, 0.0])
    out = repetition_penalty_filter(scores, torch.tensor([0, 1]), 2.0)
    assert out.tolist() == [5.0, 0.5, 0.0]  # every nonzero seen score falls; the unseen one stays
    assert (out[:2] - out[2] < scores[:2] - scores[2]).all()  # less likely relative to the unseen token ...
    before, after = scores.softmax(-1)[1].item(), out.softmax(-1)[1].item()
    assert before == pytest.approx(1.2e-4, rel=0.05) and after == pytest.approx(0.011, rel=0.05)
    assert after > 50 * before  # ... yet token 1's probability rises: token 0, likelier, lost more


def test_no_repeat_ngram_hf_cases():
    # Ported from huggingface/transformers tests/generation/test_logits_process.py,
    # LogitsProcessorTest.test_no_repeat_ngram_dist_processor.
    input_ids = torch.tensor([[1, 1, 2, 1], [0, 1, 0, 1]])
    scores = _uniform(2, 3)
    two = no_repeat_ngram_filter(scores, input_ids, 2)
    three = no_repeat_ngram_filter(scores, input_ids, 3)
    # 2-grams: row 0 bans 1 and 2 ((1,1), (1,2) seen after a 1); row 1 bans 0 ((1,0) seen)
    assert torch.isinf(two).tolist() == [[False, True, True], [True, False, False]]
    # 3-grams: row 0 bans nothing ((2,1) never continued); row 1 bans 0 ((0,1,0) seen)
    assert torch.isinf(three).tolist() == [[False, False, False], [True, False, False]]
    assert not torch.isinf(scores).any()  # not in place


def test_no_repeat_ngram_ban_is_not_undone_by_a_later_ngram_with_the_same_last_token():
    # Ported from ... test_no_repeat_ngram_dist_processor_banned_token_reappears: (1, 2, 5)
    # bans 5 after the suffix (1, 2); the later (7, 8, 5) ends in 5 too and must not unban it.
    input_ids = torch.tensor([[1, 2, 5, 7, 8, 5, 1, 2]])
    out = no_repeat_ngram_filter(_uniform(1, 10), input_ids, 3)
    assert torch.isinf(out).nonzero()[:, 1].tolist() == [5]
    assert banned_ngram_tokens(input_ids, 3) == [5]


def test_no_repeat_ngram_sequence_shorter_than_n_bans_nothing():
    # Ported from ... test_no_repeat_ngram_dist_processor_sequence_shorter_than_ngram.
    out = no_repeat_ngram_filter(_uniform(2, 3), torch.tensor([[1, 2], [0, 1]]), 3)
    assert not torch.isinf(out).any()
    assert banned_ngram_tokens([1, 2], 3) == []


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("penalty", [0.5, 1.0, 1.2, 2.0, 10.0])
def test_repetition_penalty_matches_hf_on_random_inputs(seed, penalty):
    g = torch.Generator().manual_seed(seed)
    scores = 3 * torch.randn(4, 50, generator=g)
    scores[0, :5] = 0.0  # zero scores stay zero under either branch
    ids = torch.randint(0, 50, (4, 1 + seed * 7), generator=g)
    expected = RepetitionPenaltyLogitsProcessor(penalty)(ids, scores.clone())
    torch.testing.assert_close(repetition_penalty_filter(scores, ids, penalty), expected, rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_no_repeat_ngram_matches_hf_on_random_inputs(seed, n):
    g = torch.Generator().manual_seed(seed)
    vocab = 6  # a small vocabulary, so n-grams do repeat
    ids = torch.randint(0, vocab, (5, 2 + 3 * seed), generator=g)
    scores = torch.randn(5, vocab, generator=g)
    expected = NoRepeatNGramLogitsProcessor(n)(ids, scores.clone())
    got = no_repeat_ngram_filter(scores, ids, n)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    for row in range(5):  # the plain loop lists the same banned tokens
        assert banned_ngram_tokens(ids[row], n) == torch.isinf(expected[row]).nonzero()[:, 0].tolist()


def test_no_repeat_ngram_hand_examples():
    assert banned_ngram_tokens([4, 5, 6, 4, 5], 3) == [6]  # (4, 5) was followed by 6
    assert banned_ngram_tokens([4, 5, 6, 4, 5], 2) == [6]  # after 5 came 6
    assert banned_ngram_tokens([7, 7, 7], 2) == [7]
    assert banned_ngram_tokens([1, 2, 3], 1) == [1, 2, 3]  # n = 1: every token seen
    assert banned_ngram_tokens([1, 2, 3, 1, 2, 4, 1, 2], 3) == [3, 4]


def test_chain_matches_hf_processors_in_generate_order():
    # generate's order: RepetitionPenaltyLogitsProcessor, then NoRepeatNGramLogitsProcessor
    # (transformers GenerationMixin._get_logits_processor; chained as in test_processor_list).
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 8, (3, 20), generator=g)
    scores = torch.randn(3, 8, generator=g)
    expected = NoRepeatNGramLogitsProcessor(2)(ids, RepetitionPenaltyLogitsProcessor(1.7)(ids, scores.clone()))
    got = _repetition_controls(scores, ids, 1.7, 2)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert _repetition_controls(scores, ids, 1.0, 0) is scores  # both off: untouched


def test_one_sequence_without_a_batch_axis():
    ids, scores = torch.tensor([3, 1, 3, 2, 3]), torch.linspace(-1, 1, 5)
    torch.testing.assert_close(repetition_penalty_filter(scores, ids, 2.0),
                               repetition_penalty_filter(scores[None], ids[None], 2.0)[0])
    assert no_repeat_ngram_filter(scores, ids, 2).isinf().nonzero()[:, 0].tolist() == [1, 2]


def test_ids_past_the_vocabulary_are_ignored():
    # As in HF: ids the scores cannot hold (an embedding larger than the LM head) are skipped.
    scores = torch.tensor([[1.0, -1.0, 2.0]])
    out = repetition_penalty_filter(scores, torch.tensor([[0, 7]]), 2.0)
    assert out.tolist() == [[0.5, -1.0, 2.0]]
    assert torch.equal(no_repeat_ngram_filter(scores, torch.tensor([[9, 9]]), 2), scores)


@pytest.mark.parametrize("call,error,match", [
    (lambda s, i: repetition_penalty_filter(s, i, 0.0), ValueError, "penalty"),
    (lambda s, i: repetition_penalty_filter(s, i, -1.0), ValueError, "penalty"),
    (lambda s, i: repetition_penalty_filter(s, i, float("nan")), ValueError, "penalty"),
    (lambda s, i: repetition_penalty_filter(s, i, "2"), TypeError, "penalty"),
    (lambda s, i: repetition_penalty_filter(s, -i, 2.0), ValueError, "token_ids"),
    (lambda s, i: banned_ngram_tokens(i[0], 0), ValueError, "n must"),
])
def test_controls_bad_input(call, error, match):
    scores, ids = torch.randn(2, 5), torch.tensor([[1, 2, 3], [3, 2, 1]])
    with pytest.raises(error, match=match):
        call(scores, ids)
