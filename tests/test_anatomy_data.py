"""llmlab.anatomy.corpus / datasets: the grammar corpus of notebook 09, its vocabulary, and the shipped files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmlab.anatomy import (ANIMAL_SOUNDS, BOS, EOS, PAD, SPECIALS, WordVocab, encode_batch,
                            is_grammatical, load_animal_corpus, load_documents, make_animal_corpus, write_corpus)

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_corpus_is_the_generated_one(tmp_path):
    shipped = (ROOT / "lib" / "llmlab" / "datafiles" / "anatomy" / "animals.txt").read_bytes()
    subprocess.run([sys.executable, str(ROOT / "data" / "make_anatomy_corpus.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True, env={"PYTHONPATH": str(ROOT / "lib")})
    assert (tmp_path / "animals.txt").read_bytes() == shipped
    assert load_animal_corpus() == make_animal_corpus() == load_animal_corpus(folder=tmp_path)
    assert write_corpus(tmp_path / "other", 10, seed=3).read_text().splitlines() == make_animal_corpus(10, seed=3)


def test_every_generated_sentence_is_grammatical_and_agreement_matters():
    corpus = make_animal_corpus(2000, seed=1)
    assert all(is_grammatical(s) for s in corpus)
    assert len(set(corpus)) > 500, "a varied corpus, not a handful of sentences"
    for animal, sound in ANIMAL_SOUNDS.items():
        assert any(f"{animal} {sound}" in s for s in corpus)
    assert is_grammatical("the dog barks .") and is_grammatical("every sleepy owl hoots softly near the barn .")
    for bad in ("the dog meows .", "the dog barks", "dog barks .", "the big big dog barks .",
                "the dog barks near the .", "the dog barks loudly softly .", "", "the dog barks near a barn ."):
        assert not is_grammatical(bad), bad


def test_vocabulary_and_batches():
    vocab = WordVocab.from_sentences(["the dog barks .", "a cat meows ."])
    assert vocab.tokens[:4] == SPECIALS and len(vocab) == 4 + 7 and vocab.word_ids == list(range(4, 11))
    ids = encode_batch(["the dog barks .", "a cat meows loudly ."], WordVocab.from_sentences(
        ["the dog barks .", "a cat meows loudly ."]))
    assert ids.shape == (2, 7) and ids.dtype == torch.long
    assert ids[0].tolist()[0] == BOS and ids[0].tolist()[5:] == [EOS, PAD] and ids[1, -1] == EOS
    assert vocab.decode(vocab.encode("a cat meows .")) == "a cat meows ."
    assert vocab.decode([BOS, vocab.index["dog"], EOS, vocab.index["cat"]]) == "dog"
    with pytest.raises(ValueError, match=r"outside the vocabulary: \['horse'\]"):
        vocab.encode("the horse barks .")
    with pytest.raises(ValueError, match="sentences must be a non-empty list"):
        encode_batch([], vocab)


def test_documents_have_reference_summaries():
    docs = load_documents()
    assert len(docs) >= 2 and load_documents(n=1) == docs[:1]
    for doc in docs:
        assert set(doc) == {"title", "document", "summary"}
        assert len(doc["summary"].split()) < len(doc["document"].split()) / 3
    with pytest.raises(FileNotFoundError, match="summaries.jsonl not found"):
        load_documents(folder=ROOT / "no-such-folder")
