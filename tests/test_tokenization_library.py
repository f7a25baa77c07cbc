"""WordPiece, Unigram and the LLaMA-style BPE (llmlab.tokenization.library) and the shipped texts.

The from-scratch segmenters are held against ``tokenizers`` on every word of our corpus; the Unigram
cases are ported from huggingface/tokenizers tokenizers/src/models/unigram/model.rs (test_encode,
test_encode2), the WordPiece rule from tokenizers/src/models/wordpiece/mod.rs (``tokenize``).
"""

from __future__ import annotations

import math
import re

import pytest

from llmlab.tokenization import (BYTE_TOKENS, TokenCount, encode_ids, load_corpus, load_parallel,
                                 load_samples, segmentations, token_counts, token_strings, train_bpe,
                                 train_llama_style, train_unigram, train_wordpiece, unigram_scores, unigram_viterbi,
                                 wordpiece_greedy)

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import pre_tokenizers  # noqa: E402


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


@pytest.fixture(scope="module")
def words(corpus):
    """Every distinct word of the corpus and the samples (BERT pre-tokenization: no spaces, no punctuation runs)."""
    bert = pre_tokenizers.BertPreTokenizer()
    texts = [*corpus, *load_samples().values()]
    return sorted({w for t in texts for w, _ in bert.pre_tokenize_str(t)})


@pytest.fixture(scope="module")
def wordpiece(corpus):
    return train_wordpiece(corpus, 1000)


@pytest.fixture(scope="module")
def unigram(corpus):
    return train_unigram(corpus, 1000)


@pytest.fixture(scope="module")
def llama(corpus):
    return train_llama_style(corpus, 1256)


# -- the texts we ship -------------------------------------------------------------------------------

def test_the_texts_are_there():
    corpus = load_corpus()
    assert len(corpus) > 50 and all(p.strip() for p in corpus)
    assert 20_000 < sum(len(p.encode("utf-8")) for p in corpus) < 60_000
    assert list(load_samples()) == ["English prose", "Python code", "numbers"]
    parallel = load_parallel()
    assert len(parallel) == 10 and next(iter(parallel)) == "English"
    assert all(text and "\n" not in text for text in parallel.values())


def test_the_corpus_is_plain_english():
    """The notebook shows byte fallback on an emoji the corpus never saw: keep it free of them."""
    text = "\n".join(load_corpus())
    assert all(ord(c) < 0x250 or c in "’“”—–" for c in text)


# -- WordPiece: greedy longest match ----------------------------------------------------------------

def test_wordpiece_greedy_matches_the_library_on_every_word(wordpiece, words):
    vocab = wordpiece.get_vocab()
    assert len(words) > 1000
    for word in words:
        assert wordpiece_greedy(word, vocab) == wordpiece.encode(word).tokens, word


def test_wordpiece_unknown_word(wordpiece):
    """mod.rs tokenize: if some rest of the word matches nothing, the whole word is [UNK]."""
    vocab = wordpiece.get_vocab()
    assert wordpiece_greedy("ab東", vocab) == ["[UNK]"] == wordpiece.encode("ab東").tokens


def test_wordpiece_greedy_is_not_the_best_cut():
    """Greedy takes the longest first piece even when it leaves a worse rest."""
    vocab = {"un", "unb", "##believ", "##able", "##e", "##l", "##i", "##v", "##a", "##b"}
    assert wordpiece_greedy("unbelievable", vocab) == ["unb", "##e", "##l", "##i", "##e", "##v", "##able"]
    assert wordpiece_greedy("unbelievable", vocab - {"unb"}) == ["un", "##believ", "##able"]
    with pytest.raises(TypeError, match="word must be a str"):
        wordpiece_greedy(3, vocab)


# -- Unigram: Viterbi --------------------------------------------------------------------------------

@pytest.mark.parametrize("word, pieces", [
    ("abc", ["abc"]), ("abcd", ["ab", "cd"]), ("abcc", ["abc", "c"]), ("ABC", ["ABC"]),
    ("abABCcd", ["ab", "ABC", "cd"]), ("ababcdabcdcd", ["ab", "abcdabcd", "cd"]), ("abqrcd", ["ab", "q", "r", "cd"]),
])
def test_unigram_viterbi_ported_from_model_rs_test_encode2(word, pieces):
    scores = {"<unk>": 0.0, "ab": 0.0, "cd": -0.1, "abc": -0.2, "a": -0.3, "b": -0.4, "c": -0.5, "ABC": -0.5,
              "abcdabcd": 20.0, "q": 20.5, "r": 20.5, "qr": -0.5}
    assert unigram_viterbi(word, scores)[0] == pieces


def test_unigram_viterbi_ported_from_model_rs_test_encode():
    scores = {"<unk>": 0.0, "a": 0.0, "b": 0.0, "c": 0.0, "d": 0.0, "cd": 1.0, "ab": 2.0, "abc": 5.0, "abcd": 10.0}
    assert unigram_viterbi("abcd", scores) == (["abcd"], 10.0)


def test_unigram_viterbi_matches_the_library_on_every_word(unigram, words):
    log_p = unigram_scores(unigram)
    unk = unigram.token_to_id("<unk>")
    for word in words:
        encoding = unigram.encode(word)
        expected = encoding.tokens
        if unk in encoding.ids:
            with pytest.raises(ValueError, match="cannot be cut"):
                unigram_viterbi("▁" + word, log_p)
            continue
        pieces, score = unigram_viterbi("▁" + word, log_p)
        assert pieces == expected, word
        assert math.isclose(score, sum(log_p[p] for p in pieces))


def test_unigram_scores_are_log_probabilities(unigram):
    log_p = unigram_scores(unigram)
    assert "<unk>" not in log_p and len(log_p) == unigram.get_vocab_size() - 1
    assert all(v < 0 for v in log_p.values())
    with pytest.raises(ValueError, match="Unigram"):
        unigram_scores(train_wordpiece(["some text here"], 50))


# -- the LLaMA-style tokenizer -------------------------------------------------------------------------

def test_llama_style_splits_every_number_into_digits(llama):
    text = load_samples()["numbers"]
    tokens = [t for t in token_strings(llama, text) if t not in BYTE_TOKENS]  # "\n" is <0x0A> here, as in LLaMA
    with_digits = [t for t in tokens if any(c.isdigit() for c in t)]
    assert all(len(t) == 1 for t in with_digits)
    assert len(with_digits) == sum(c.isdigit() for c in text) > 100


def test_llama_style_falls_back_to_bytes(llama):
    ids = llama.encode("a 🦙", add_special_tokens=False).ids
    tokens = llama.encode("a 🦙", add_special_tokens=False).tokens
    assert tokens[-4:] == ["<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"] and ids[-4:] == [0xF0, 0x9F, 0xA6, 0x99]
    assert llama.decode(ids) == "a 🦙"


def test_llama_style_vocabulary(llama, corpus):
    vocab = llama.get_vocab()
    assert llama.get_vocab_size() == 1256
    assert [vocab[t] for t in BYTE_TOKENS] == list(range(256))
    assert llama.encode("<0x41>", add_special_tokens=False).tokens != ["<0x41>"]  # not read as a byte token
    assert all(t.startswith("▁") or not t.startswith(" ") for t in vocab)


@pytest.mark.parametrize("name", ["samples", "parallel", "corpus", "odd"])
def test_llama_style_round_trip(llama, corpus, name):
    texts = {"samples": list(load_samples().values()), "parallel": list(load_parallel().values()),
             "corpus": corpus[:20], "odd": ["", " ", " leading", "trailing ", "a  b\n\nc", "x²\t日本 🦙"]}[name]
    for text in texts:
        assert llama.decode(llama.encode(text, add_special_tokens=False).ids) == text


def test_trainers_refuse_bad_input():
    for train in (train_wordpiece, train_unigram, train_llama_style):
        with pytest.raises(ValueError, match="non-empty"):
            train([], 500)
        with pytest.raises(TypeError, match="vocab_size"):
            train(["text"], "500")
    with pytest.raises(ValueError, match="vocab_size must be an int >= 257"):
        train_llama_style(["text"], 256)


# -- counting tokens ----------------------------------------------------------------------------------

def test_encode_ids_and_token_strings_for_every_kind(corpus, wordpiece):
    ours = train_bpe(corpus, 600)
    text = "The ferry crossed the river."
    twin = ours.to_tokenizers()
    assert encode_ids(ours, text) == ours.encode(text) == encode_ids(twin, text)
    assert token_strings(ours, text) == token_strings(twin, text)
    assert token_strings(wordpiece, text)[:2] == ["The", "ferry"]
    with pytest.raises(TypeError, match="tokenizer must be"):
        encode_ids(object(), text)


def test_token_counts(corpus):
    ours = train_bpe(corpus, 256)  # bytes only: one token per byte
    counts = token_counts(ours, {"a": "héllo", "b": "日本"})
    assert counts[0] == TokenCount("a", 6, 6, 5) and counts[1] == TokenCount("b", 6, 6, 2)
    assert counts[1].tokens_per_byte == 1.0 and counts[1].tokens_per_char == 3.0 and counts[0].bytes_per_token == 1.0
    with pytest.raises(TypeError, match="dict"):
        token_counts(ours, ["a"])
    with pytest.raises(ValueError, match="at least one"):
        token_counts(ours, {})
    with pytest.raises(TypeError, match=re.escape("texts['x'] must be a str")):
        token_counts(ours, {"x": 3})


@pytest.mark.slow
def test_token_counts_of_a_transformers_tokenizer(default_lm):
    _, tokenizer = default_lm
    counts = token_counts(tokenizer, {"digits": "12345"})
    assert counts[0].n_tokens == 5  # SmolLM2's vocabulary has no token of two digits


# -- every cut, for checking Viterbi by brute force ----------------------------------------------------

def test_segmentations_lists_every_cut():
    cuts = segmentations("abc", {"a", "b", "c", "ab", "bc", "abc"})
    assert sorted(cuts) == sorted([["a", "b", "c"], ["ab", "c"], ["a", "bc"], ["abc"]])
    assert segmentations("abd", {"a", "b"}) == []
    assert len(segmentations("a" * 12, {"a", "aa"})) == 233  # Fibonacci: cuts into 1s and 2s
    with pytest.raises(ValueError, match="more than limit=100"):
        segmentations("a" * 12, {"a", "aa"}, limit=100)


def test_viterbi_is_the_best_of_all_cuts(unigram, words):
    log_p = unigram_scores(unigram)
    checked = 0
    for word in words[::7]:
        cuts = segmentations("▁" + word, log_p)
        if not cuts:
            continue
        best = max(sum(log_p[p] for p in cut) for cut in cuts)
        pieces, score = unigram_viterbi("▁" + word, log_p)
        assert math.isclose(score, best, abs_tol=1e-9) and pieces in cuts
        checked += 1
    assert checked > 100
