"""The texts notebook 09 works on, all written by us and shipped with the package in
``llmlab/datafiles/anatomy/`` (:mod:`llmlab.paths`); every loader takes ``folder=`` to read another copy.

* ``animals.txt``: the grammar corpus of :mod:`.corpus`, one sentence a line, written by
  ``data/make_anatomy_corpus.py``;
* ``sentiment.jsonl`` and ``topic.jsonl``: two small labelled classification tasks (short reviews,
  positive / negative; one-sentence news in four topics), each line ``{"text", "label", "split"}``
  with 32 training and 32 test examples per task, classes balanced in both splits;
* ``summaries.jsonl``: short news articles, each with a reference summary we wrote.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .._checks import check_choice, check_int, check_path
from ..paths import data_path
from .corpus import make_animal_corpus

__all__ = ["CLASSIFICATION_TASKS", "write_corpus", "load_animal_corpus", "LabelledText", "load_classification_task",
           "load_documents"]

CLASSIFICATION_TASKS = ("sentiment", "topic")
CORPUS_FILE = "animals.txt"


def _file(name: str, folder) -> Path:
    """``folder/name``, or the shipped ``datafiles/anatomy/name``; ``FileNotFoundError`` names a missing one."""
    if folder is None:
        return data_path("anatomy", name)
    path = Path(check_path("folder", folder)) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (write the corpus with write_corpus or data/make_anatomy_corpus.py)")
    return path


def write_corpus(folder, n_sentences: int = 4000, *, seed: int = 0) -> Path:
    """Write :func:`~.corpus.make_animal_corpus` ``(n_sentences, seed)`` to ``folder/animals.txt``."""
    sentences = make_animal_corpus(n_sentences, seed=seed)
    path = Path(folder) / CORPUS_FILE  # data/make_anatomy_corpus.py passes its --out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(s + "\n" for s in sentences))
    return path


def load_animal_corpus(*, folder=None) -> list[str]:
    """The sentences of ``animals.txt`` (the 4,000 of :func:`~.corpus.make_animal_corpus`, as shipped)."""
    return [line for line in _file(CORPUS_FILE, folder).read_text().splitlines() if line]


@dataclass(frozen=True)
class LabelledText:
    """One classification example."""

    text: str
    label: str


def load_classification_task(name: str, split: str, *, folder=None) -> list[LabelledText]:
    """Split ``split`` ("train" or "test") of task ``name`` (one of :data:`CLASSIFICATION_TASKS`), in file order."""
    name = check_choice("name", name, CLASSIFICATION_TASKS)
    split = check_choice("split", split, ("train", "test"))
    path = _file(f"{name}.jsonl", folder)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [LabelledText(r["text"], r["label"]) for r in rows if r["split"] == split]


def load_documents(*, folder=None, n: int | None = None) -> list[dict]:
    """The articles of ``summaries.jsonl`` as dicts ``{"title", "document", "summary"}`` (the first
    ``n`` if given)."""
    path = _file("summaries.jsonl", folder)
    docs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return docs if n is None else docs[:check_int("n", n, low=1)]
