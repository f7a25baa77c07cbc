"""The small English corpus the tiny transformers of notebook 09 are trained on, and its vocabulary.

The sentences come from a grammar we wrote (``data/make_anatomy_corpus.py`` writes them to
``data/anatomy/animals.txt``)::

    <det> [<adjective>] <animal> <sound> [<adverb>] [near the <place>] .

with one dependency that matters: the sound agrees with the animal ("the dog barks", "a cat
meows", never "the dog meows"). The animal is therefore determined by the word to its *right*
and the sound by the word to its *left*: a blank on the animal is easy for a model that reads
both sides (a masked LM) and a coin toss for one that reads only the left (a causal LM).

:class:`WordVocab` maps the words to ids, one id per word, after four special tokens
(``[PAD]`` 0, ``[BOS]`` 1, ``[EOS]`` 2, ``[MASK]`` 3); :func:`encode_batch` turns sentences into a
padded ``(batch, seq)`` id tensor ``[BOS] w_1 .. w_k [EOS] [PAD]...``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .._checks import check_int, check_str

__all__ = ["ANIMAL_SOUNDS", "ADJECTIVES", "ADVERBS", "PLACES", "DETERMINERS", "SPECIALS", "PAD", "BOS", "EOS",
           "MASK", "make_animal_corpus", "is_grammatical", "WordVocab", "encode_batch"]

ANIMAL_SOUNDS = {
    "dog": "barks", "cat": "meows", "cow": "moos", "duck": "quacks", "lion": "roars", "owl": "hoots",
    "frog": "croaks", "bee": "buzzes", "sheep": "bleats", "horse": "neighs", "snake": "hisses", "wolf": "howls",
}
DETERMINERS = ("the", "a", "my", "every")
ADJECTIVES = ("big", "small", "old", "young", "brown", "white", "sleepy", "happy")
ADVERBS = ("loudly", "softly", "again", "often")
PLACES = ("barn", "river", "house", "hill", "forest", "field")

SPECIALS = ("[PAD]", "[BOS]", "[EOS]", "[MASK]")
PAD, BOS, EOS, MASK = range(4)


def make_animal_corpus(n_sentences: int = 4000, *, seed: int = 0) -> list[str]:
    """``n_sentences`` sentences of the grammar above, drawn with Python's ``random.Random(seed)``
    (the same list for the same arguments on every machine). A data generator that only
    ``data/make_anatomy_corpus.py`` (through :func:`~.datasets.write_corpus`) runs: it trusts its
    arguments (issue 23)."""
    rng = random.Random(seed)
    animals = sorted(ANIMAL_SOUNDS)
    sentences = []
    for _ in range(n_sentences):
        animal = rng.choice(animals)
        words = [rng.choice(DETERMINERS)]
        if rng.random() < 0.6:
            words.append(rng.choice(ADJECTIVES))
        words += [animal, ANIMAL_SOUNDS[animal]]
        if rng.random() < 0.4:
            words.append(rng.choice(ADVERBS))
        if rng.random() < 0.5:
            words += ["near", "the", rng.choice(PLACES)]
        sentences.append(" ".join(words + ["."]))
    return sentences


def is_grammatical(sentence: str) -> bool:
    """Whether ``sentence`` (words separated by single spaces) is one the grammar can produce,
    sound agreeing with animal."""
    check_str("sentence", sentence, allow_empty=True)
    words = sentence.split(" ")
    if len(words) < 4 or words[0] not in DETERMINERS or words[-1] != ".":
        return False
    k = 2 if words[1] in ADJECTIVES else 1
    if len(words) < k + 3 or ANIMAL_SOUNDS.get(words[k]) != words[k + 1]:
        return False
    rest = words[k + 2:-1]
    if rest and rest[0] in ADVERBS:
        rest = rest[1:]
    return rest == [] or (len(rest) == 3 and rest[:2] == ["near", "the"] and rest[2] in PLACES)


def _check_sentences(sentences) -> None:
    """What the vocabulary and the batch encoder take: a non-empty list of sentences (not one str)."""
    if isinstance(sentences, str) or not sentences:
        raise ValueError("sentences must be a non-empty list of strings")


@dataclass(frozen=True)
class WordVocab:
    """One id per word: the four :data:`SPECIALS` first (``[PAD]`` 0, ``[BOS]`` 1, ``[EOS]`` 2,
    ``[MASK]`` 3), then the words in sorted order."""

    tokens: tuple[str, ...]

    def __post_init__(self):
        if not isinstance(self.tokens, tuple) or not all(isinstance(t, str) for t in self.tokens):
            raise TypeError(f"tokens must be a tuple of str, got {type(self.tokens).__name__}")
        if self.tokens[:len(SPECIALS)] != SPECIALS:
            raise ValueError(f"tokens must start with the specials {SPECIALS} (use WordVocab.from_sentences)")

    @classmethod
    def from_sentences(cls, sentences: list[str]) -> "WordVocab":
        """The vocabulary of the words in ``sentences`` (split on spaces)."""
        _check_sentences(sentences)
        words = sorted({w for s in sentences for w in check_str("sentence", s).split(" ")})
        return cls(SPECIALS + tuple(words))

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def index(self) -> dict[str, int]:
        """word -> id."""
        return {t: i for i, t in enumerate(self.tokens)}

    @property
    def word_ids(self) -> list[int]:
        """The ids of the real words (every id after the specials)."""
        return list(range(len(SPECIALS), len(self.tokens)))

    def encode(self, sentence: str) -> list[int]:
        """``[BOS]`` + one id per word + ``[EOS]``; a word outside the vocabulary raises ``ValueError``."""
        index = self.index
        words = check_str("sentence", sentence).split(" ")
        unknown = [w for w in words if w not in index]
        if unknown:
            raise ValueError(f"sentence has words outside the vocabulary: {unknown}")
        return [BOS] + [index[w] for w in words] + [EOS]

    def decode(self, ids) -> str:
        """The words of ``ids`` joined by spaces, specials (``[BOS]``, ``[PAD]`` ...) left out;
        stops at the first ``[EOS]``."""
        if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
            raise TypeError(f"ids must be a sequence of token ids (a list or a 1-D tensor), got {type(ids).__name__}")
        words = []
        for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids):
            i = check_int("ids", i, low=0, high=len(self.tokens) - 1)
            if i == EOS:
                break
            if i >= len(SPECIALS):
                words.append(self.tokens[i])
        return " ".join(words)


def encode_batch(sentences: list[str], vocab: WordVocab, *, device=None) -> torch.Tensor:
    """Sentences as a LongTensor ``(batch, seq)``: ``[BOS] words [EOS]``, right-padded with ``[PAD]``."""
    _check_sentences(sentences)
    if not isinstance(vocab, WordVocab):
        raise TypeError(f"vocab must be a WordVocab, got {type(vocab).__name__}")
    rows = [vocab.encode(s) for s in sentences]
    n = max(len(r) for r in rows)
    ids = torch.full((len(rows), n), PAD, dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, :len(row)] = torch.tensor(row)
    return ids if device is None else ids.to(device)
