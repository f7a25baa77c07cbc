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
