"""Byte-level BPE from scratch (llmlab.tokenization.bpe) against Hugging Face ``tokenizers``.

Cases ported from huggingface/tokenizers (cited at each test): tokenizers/src/models/bpe/trainer.rs,
word.rs and model.rs, tokenizers/src/pre_tokenizers/byte_level.rs, and the Python bindings' tests
bindings/python/tests/implementations/test_byte_level_bpe.py and tests/bindings/test_decoders.py.
Expected values are those files' own, or re-derived by running ``tokenizers`` itself.
"""

from __future__ import annotations

import random
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmlab.tokenization import (ALPHABET, BYTE_TO_CHAR, BPETokenizer, load_corpus, load_parallel, load_samples,
                                 model_json, pretokenize, reference_bpe, split_pieces, train_bpe)
from llmlab.tokenization.bpe import _merge_in_word

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import pre_tokenizers  # noqa: E402

BYTE_LEVEL = pre_tokenizers.ByteLevel(add_prefix_space=False)
PROPERTY = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Text from characters every Unicode version since Python's own agrees on: tokenizers' regex engine
# (Oniguruma) and the `regex` module may know different Unicode versions (see bpe.py).
ASSIGNED_TEXT = st.text(st.characters(exclude_categories=("Cs", "Cn")), max_size=60)
# Any string Python can encode as UTF-8: unassigned code points, controls, private use included.
ANY_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)

HARD_STRINGS = [
    "", " ", "  ", "\n", "\r\n", "\t\t x", "a\u0000b", "\x7f\x80\x9f", "\ufeffBOM", "\ufffd",
    "e\u0301 n\u0303 a\u0308\u0301",  # combining marks
    "👩‍👩‍👧‍👦 🇫🇷 👍🏽 🦙",  # ZWJ sequence, flag, skin tone, an emoji outside the BMP
    "日本語のテキスト、中文文本。한국어 텍스트", "مرحبا بالعالم", "שָׁלוֹם", "नमस्ते दुनिया",
    "x²+y² = z²; 3½ × ⅞", "I'm you're he'll they'd it's we've", "'s'S 'T", "\U0010ffff\U000e0001",
    "ǅungla", "   leading and trailing   ", "word\u00a0nbsp\u2003em\u3000ideo",
]


def hf_merges(tok) -> list[tuple[str, str]]:
    return [tuple(m) for m in model_json(tok)["merges"]]


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


@pytest.fixture(scope="module")
def trained(corpus):
    return train_bpe(corpus, 1256)


@pytest.fixture(scope="module")
def library_twin(corpus):
    return reference_bpe(corpus, 1256)


# -- the byte alphabet and pre-tokenization -------------------------------------------------------

def test_byte_alphabet_is_the_library_one():
    assert sorted(BYTE_TO_CHAR) == list(range(256))
    assert len(set(BYTE_TO_CHAR.values())) == 256
    assert set(BYTE_TO_CHAR.values()) == set(pre_tokenizers.ByteLevel.alphabet())
    assert BYTE_TO_CHAR[ord(" ")] == "Ġ" and BYTE_TO_CHAR[ord("\n")] == "Ċ" and BYTE_TO_CHAR[ord("a")] == "a"
    assert list(ALPHABET) == sorted(ALPHABET) and ALPHABET[0] == "!"


# tokenizers/src/pre_tokenizers/byte_level.rs: pre_tokenization, handling_of_newlines,
# handling_of_multiple_whitespaces, offsets_when_char_split_up.
@pytest.mark.parametrize("text, pieces", [
    ("Hello my friend, how is your day going?",
     ["Hello", "Ġmy", "Ġfriend", ",", "Ġhow", "Ġis", "Ġyour", "Ġday", "Ġgoing", "?"]),
    ("Hello there\nHello there", ["Hello", "Ġthere", "Ċ", "Hello", "Ġthere"]),
    ("Hello there       dear", ["Hello", "Ġthere", "ĠĠĠĠĠĠ", "Ġdear"]),
    ("i⭢j", ["i", "âŃ¢", "j"]),
])
def test_pretokenize_ported_cases(text, pieces):
    assert pretokenize(text) == pieces
    assert [p for p, _ in BYTE_LEVEL.pre_tokenize_str(text)] == pieces


@pytest.mark.parametrize("text", HARD_STRINGS)
def test_pretokenize_matches_the_library_on_hard_strings(text):
    assert pretokenize(text) == [p for p, _ in BYTE_LEVEL.pre_tokenize_str(text)]
    assert "".join(split_pieces(text)) == text


@PROPERTY
@given(ASSIGNED_TEXT)
def test_pretokenize_matches_the_library(text):
    assert pretokenize(text) == [p for p, _ in BYTE_LEVEL.pre_tokenize_str(text)]


@PROPERTY
@given(ANY_TEXT)
def test_pieces_cover_the_text(text):
    assert "".join(split_pieces(text)) == text


def test_pretokenize_errors():
    with pytest.raises(TypeError, match="text must be a str"):
        pretokenize(b"bytes")
    with pytest.raises(ValueError, match="lone surrogate"):
        pretokenize("a\ud800b")


# -- training --------------------------------------------------------------------------------------

def test_train_ported_from_trainer_rs():
    """trainer.rs test_train: with min_frequency=2 only 're', 'are' and 'is' are learned, in that order
    ('are' and 'is' both occur twice: the smaller pair of ids wins)."""
    counts = {"roses": 1, "are": 2, "red": 1, "voilets": 1, "blue": 1, "BERT": 1, "is": 2, "big": 1,
              "and": 1, "so": 1, "GPT-2": 1}
    texts = [w for w, n in counts.items() for _ in range(n)]
    ours = train_bpe(texts, 30000, min_frequency=2)
    assert ours.merges == [("r", "e"), ("a", "re"), ("i", "s")]
    assert [ours.vocab[t] for t in ("re", "are", "is")] == [256, 257, 258]
    assert ours.merges == hf_merges(reference_bpe(texts, 30000, min_frequency=2))


def test_train_from_iterator_ported_from_the_python_bindings():
    """bindings/python/tests/implementations/test_byte_level_bpe.py test_train_from_iterator
    (ByteLevelBPETokenizer trains with min_frequency=2)."""
    text = ["A first sentence", "Another sentence", "And a last one"]
    ours = train_bpe(text, 30000, min_frequency=2)
    assert ours.tokens("A sentence") == ["A", "Ġsentence"]
    assert ours.merges == hf_merges(reference_bpe(text, 30000, min_frequency=2))


def test_merge_in_word_ported_from_word_rs():
    """word.rs test_merge: 'hello' = h e l l o (ids 0 1 2 2 3), merge (l, l) -> 4."""
    symbols = [0, 1, 2, 2, 3]
    changes = _merge_in_word(symbols, 2, 2, 4)
    assert symbols == [0, 1, 4, 3]
    assert changes == [((1, 2), -1), ((1, 4), 1), ((2, 3), -1), ((4, 3), 1)]


def test_merge_in_word_goes_left_to_right_without_overlap():
    symbols = [7, 7, 7]
    _merge_in_word(symbols, 7, 7, 9)
    assert symbols == [9, 7]
    symbols = [7, 7, 7, 7]
    _merge_in_word(symbols, 7, 7, 9)
    assert symbols == [9, 9]


def test_ids_follow_code_points_then_merge_order(trained):
    assert [trained.vocab[c] for c in ALPHABET] == list(range(256))
    assert trained.vocab["!"] == 0 and BYTE_TO_CHAR[0] == "Ā" and trained.vocab["Ā"] == 188
    assert [trained.vocab[a + b] for a, b in trained.merges] == list(range(256, 256 + len(trained.merges)))


def test_same_merges_vocab_and_ids_as_the_library_on_our_corpus(corpus, trained, library_twin):
    assert len(trained.merges) == 1000
    assert trained.merges == hf_merges(library_twin)
    assert trained.vocab == library_twin.get_vocab()
    texts = [*load_samples().values(), *load_parallel().values(), *HARD_STRINGS, "\n\n".join(corpus)]
    for text in texts:
        assert trained.encode(text) == library_twin.encode(text).ids
        assert trained.tokens(text) == library_twin.encode(text).tokens


@pytest.mark.parametrize("vocab_size", [256, 257, 300, 2000, 100_000])
def test_same_merges_at_every_size(corpus, vocab_size):
    ours = train_bpe(corpus, vocab_size)
    assert ours.merges == hf_merges(reference_bpe(corpus, vocab_size))
    assert len(ours.vocab) == min(vocab_size, 256 + len(ours.merges))


def test_the_corpus_runs_out_of_pairs(corpus):
    full = train_bpe(corpus, 100_000)
    assert len(full.vocab) < 100_000  # every piece of the corpus is one token: nothing left to merge
    assert all(len(full.encode(p)) == 1 for p in {p for t in corpus for p in split_pieces(t)})


def test_same_merges_on_a_larger_corpus():
    """About 470 kB of English (Python's own documentation, installed with Python) and 3000 merges."""
    topics = pytest.importorskip("pydoc_data.topics").topics
    texts = [topics[k] for k in sorted(topics)]
    ours = train_bpe(texts, 3256)
    twin = reference_bpe(texts, 3256)
    assert ours.merges == hf_merges(twin) and ours.vocab == twin.get_vocab()
    assert ours.encode(texts[0]) == twin.encode(texts[0]).ids


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(st.sampled_from("ab c\n1'é"), max_size=30), min_size=1, max_size=6)
       .filter(lambda texts: any(texts)), st.integers(256, 330))
def test_same_merges_on_tiny_corpora_full_of_ties(texts, vocab_size):
    """Tiny alphabets: most pairs tie on their count, so the order depends on the tie-break."""
    ours = train_bpe(texts, vocab_size)
    twin = reference_bpe(texts, vocab_size)
    assert ours.merges == hf_merges(twin)
    assert ours.vocab == twin.get_vocab()
    probe = " ".join(texts) + " abba c1'é"
    assert ours.encode(probe) == twin.encode(probe).ids


def test_random_corpora_with_words_of_one_letter_runs():
    rng = random.Random(0)
    for _ in range(30):
        texts = [" ".join("a" * rng.randint(1, 9) + "b" * rng.randint(0, 3) for _ in range(rng.randint(1, 12)))]
        size = rng.randint(256, 300)
        assert train_bpe(texts, size).merges == hf_merges(reference_bpe(texts, size))


def test_training_is_a_prefix_of_longer_training(corpus):
    big = train_bpe(corpus, 1256)
    small = train_bpe(corpus, 456)
    assert small.merges == big.merges[:200]
    cut = big.truncated(200)
    assert cut.vocab == small.vocab and cut.merges == small.merges
    text = load_samples()["English prose"]
    assert cut.encode(text) == small.encode(text)


def test_train_bpe_errors():
    with pytest.raises(ValueError, match=r"vocab_size must be an int >= 256"):
        train_bpe(["abc"], 255)
    with pytest.raises(TypeError, match="vocab_size"):
        train_bpe(["abc"], 300.0)
    with pytest.raises(TypeError, match="vocab_size"):
        train_bpe(["abc"], True)
    with pytest.raises(ValueError, match="at least one non-empty str"):
        train_bpe([], 300)
    with pytest.raises(ValueError, match="at least one non-empty str"):
        train_bpe(["", ""], 300)
    with pytest.raises(TypeError, match="wrap a single text"):
        train_bpe("a whole text", 300)
    with pytest.raises(TypeError, match="only str, got bytes at index 1"):
        train_bpe(["ok", b"bytes"], 300)
    with pytest.raises(TypeError, match="iterable of str"):
        train_bpe(42, 300)
    with pytest.raises(ValueError, match="min_frequency"):
        train_bpe(["abc"], 300, min_frequency=-1)
    assert train_bpe(iter(["abab"]), 257).merges == [("a", "b")]  # any iterable will do


# -- encoding and decoding -------------------------------------------------------------------------

@pytest.mark.parametrize("text", HARD_STRINGS)
def test_round_trip_on_hard_strings(trained, text):
    assert trained.decode(trained.encode(text)) == text


@PROPERTY
@given(ANY_TEXT)
def test_round_trip_on_any_string(trained, text):
    ids = trained.encode(text)
    assert trained.decode(ids) == text
    assert b"".join(trained.token_bytes(i) for i in ids) == text.encode("utf-8")


@PROPERTY
@given(ASSIGNED_TEXT)
def test_same_ids_as_the_library_for_any_text(trained, library_twin, text):
    assert trained.encode(text) == library_twin.encode(text).ids


@PROPERTY
@given(st.lists(st.integers(0, 1255), max_size=12))
def test_decode_of_any_ids_matches_the_library(trained, library_twin, ids):
    """Ids that cut a character in the middle decode to U+FFFD the way the library does."""
    assert trained.decode(ids) == library_twin.decode(ids)


def test_decoding_ported_from_the_python_bindings():
    """bindings/python/tests/bindings/test_decoders.py TestByteLevel.test_decoding."""
    tok = BPETokenizer([("Ġ", "n"), ("Ġn", "a"), ("Ġna", "m"), ("Ġnam", "e"), ("Ġ", "i"), ("Ġi", "s")])
    ids = [tok.vocab["M"], tok.vocab["y"], tok.vocab["Ġname"], tok.vocab["Ġis"], tok.vocab["Ġ"], tok.vocab["J"]]
    assert tok.decode(ids) == "My name is J"


def test_decode_works_on_separated_tokens_ported_from_byte_level_rs():
    """byte_level.rs decode_works_on_separated_tokens: bytes decoded one token at a time still join up."""
    bytes_only = BPETokenizer([])
    for sample in ["A Nuskhuri abbreviation of იესუ ქრისტე ( iesu kriste ) \" Jesus Christ \"",
                   "An equal number have descenders , like p or q in English : გ , დ , ე , ვ , კ , ლ , ჟ"]:
        ids = bytes_only.encode(sample)
        assert len(ids) == len(sample.encode("utf-8"))
        assert bytes_only.decode(ids) == sample


def test_unrelated_ported_from_model_rs():
    """model.rs test_tokenize_with_and_without_dropout: all merges give one token; none gives the letters."""
    merges = [("r", "e"), ("a", "t"), ("e", "d"), ("u", "n"), ("at", "ed"), ("re", "l"), ("rel", "ated"),
              ("un", "related")]
    tok = BPETokenizer(merges)
    assert tok.tokens("unrelated") == ["unrelated"]
    assert tok.truncated(0).tokens("unrelated") == list("unrelated")
    assert tok.to_tokenizers().encode("unrelated").tokens == ["unrelated"]


def test_merges_must_refer_to_known_tokens_ported_from_model_rs():
    """model.rs test_bpe_from_file_merge_token_oov / test_bpe_from_file_bad_merges."""
    vocab = {c: i for i, c in enumerate(ALPHABET)}
    vocab["ab"] = 256
    with pytest.raises(ValueError, match="'abc' is not in vocab"):
        BPETokenizer([("a", "b"), ("ab", "c")], vocab)
    with pytest.raises(TypeError, match="pairs of str"):
        BPETokenizer([("a", "b", "c")])
    with pytest.raises(TypeError, match="int ids"):
        BPETokenizer([], {"a": "0"})
    with pytest.raises(ValueError, match="byte-level"):
        BPETokenizer([], {**vocab, "▁the": 999})  # a SentencePiece token: "▁" stands for no byte


def test_a_byte_missing_from_the_vocabulary_is_dropped_as_the_library_does():
    vocab = {c: i for i, c in enumerate(c for c in ALPHABET if c not in (BYTE_TO_CHAR[4], BYTE_TO_CHAR[0xF1]))}
    vocab["!?"] = len(vocab)
    tok = BPETokenizer([("!", "?")], vocab)
    assert tok.missing_bytes == (4, 0xF1)
    twin = tok.to_tokenizers()
    for text in ["!\x04?", "\x04", "a\U00040000b", "plain"]:
        assert tok.encode(text) == twin.encode(text).ids
    assert tok.tokens("!\x04?") == ["!?"]  # the neighbours of a dropped byte (one piece) can merge


def test_merge_steps_replay_the_encoding(trained):
    steps = trained.merge_steps(" granddaughter")
    assert steps[0] == (-1, list(pretokenize(" granddaughter")[0]))
    ranks = [rank for rank, _ in steps[1:]]
    assert ranks == sorted(ranks)  # no new pair ranks below the merge that created it here
    assert steps[-1][1] == trained.tokens(" granddaughter")
    assert all(len(b) == len(a) - 1 for (_, a), (_, b) in zip(steps, steps[1:]))
    with pytest.raises(ValueError, match="one pre-tokenized piece"):
        trained.merge_steps("two words")


def test_more_merges_never_cost_more_tokens(trained):
    text = load_samples()["English prose"]
    counts = [len(trained.truncated(k).encode(text)) for k in range(0, 1001, 50)]
    assert counts[0] == len(text.encode("utf-8"))
    assert all(a >= b for a, b in zip(counts, counts[1:]))


def test_encode_and_decode_errors(trained):
    with pytest.raises(TypeError, match="text must be a str"):
        trained.encode(None)
    with pytest.raises(ValueError, match="lone surrogate"):
        trained.encode("\udc80")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        trained.decode([5000])
    with pytest.raises(ValueError, match=r"ids\[0\] must be an int >= 0"):
        trained.decode([-1])
    with pytest.raises(TypeError, match="ids must be an iterable"):
        trained.decode("abc")
    with pytest.raises(ValueError, match="n_merges"):
        trained.truncated(1001)
    assert trained.pieces("😀") == ["\ufffd"] * 4  # an emoji the corpus never saw: four byte tokens


def test_pieces_spell_the_text(trained):
    text = load_samples()["English prose"]
    assert "".join(trained.pieces(text)) == text
    assert len(trained) == 1256 and "1000 merges" in repr(trained)


@pytest.mark.slow
def test_our_encoder_reproduces_the_default_model_tokenizer(default_lm):
    """SmolLM2's tokenizer is a byte-level BPE with this very pre-tokenizer: given its merges, ours
    gives its ids."""
    _, tokenizer = default_lm
    model = model_json(tokenizer.backend_tokenizer)
    ours = BPETokenizer([tuple(m) for m in model["merges"]], model["vocab"])
    assert len(ours.missing_bytes) == 21 and 0x04 in ours.missing_bytes
    texts = [*load_samples().values(), *load_parallel().values(), *HARD_STRINGS, "a\x04b \U00040000"]
    for text in texts:
        assert ours.encode(text) == tokenizer(text, add_special_tokens=False).input_ids
    assert ours.decode(ours.encode("a\x04b")) == "ab"  # the byte 0x04 is lost


def test_unicode_tables_are_the_only_disagreement():
    """Where the two pre-tokenizers differ, the character is unknown to Python's unicodedata too."""
    differing = []
    for cp in range(0x0530, 0x0600):  # Armenian: U+0558 is assigned by Unicode 16 or 17 only
        text = f"a{chr(cp)}b"
        if pretokenize(text) != [p for p, _ in BYTE_LEVEL.pre_tokenize_str(text)]:
            differing.append(cp)
    assert all(unicodedata.category(chr(cp)) == "Cn" for cp in differing)


def test_a_tokenizer_cannot_be_changed_after_it_is_built():
    tok = train_bpe(["low lower lowest", "new newer newest"], 262)
    ids = tok.encode("lowest newer")
    with pytest.raises(AttributeError):
        tok.merges = []
    tok.merges.append(("x", "y"))  # a copy: the tokenizer's own merges are untouched
    with pytest.raises(TypeError):
        tok.vocab["x"] = 10**6  # a read-only view
    assert tok.n_merges == 6 and ("x", "y") not in tok.merges and tok.encode("lowest newer") == ids
