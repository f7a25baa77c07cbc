"""The texts notebook 09 works on, all written by us and shipped in ``data/anatomy/``.

* ``animals.txt``: the grammar corpus of :mod:`.corpus`, one sentence a line, written by
  ``data/make_anatomy_corpus.py`` (and regenerated identically when the file is not at hand);
* ``sentiment.jsonl`` and ``topic.jsonl``: two small labelled classification tasks (short reviews,
  positive / negative; one-sentence news in four topics), each line ``{"text", "label", "split"}``
  with 32 training and 32 test examples per task, classes balanced in both splits;
* ``summaries.jsonl``: short news articles, each with a reference summary we wrote.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .._checks import check_choice, check_int
from .corpus import make_animal_corpus

__all__ = ["TASKS", "anatomy_dir", "write_corpus", "load_corpus", "LabelledText", "load_task", "task_labels",
           "load_documents"]

TASKS = ("sentiment", "topic")
CORPUS_FILE = "animals.txt"


def anatomy_dir() -> Path | None:
    """``data/anatomy`` of the repository llmlab runs from (an editable install, or a clone that
    holds the current folder, as on Colab); None when neither is found."""
    here = Path(__file__).resolve().parents[3]
    for root in (here, Path.cwd(), *Path.cwd().parents):
        folder = root / "data" / "anatomy"
        if folder.is_dir():
            return folder
    return None


def _folder(folder) -> Path:
    found = Path(folder) if folder is not None else anatomy_dir()
    if found is None or not found.is_dir():
        raise FileNotFoundError(f"data/anatomy not found{f' at {folder}' if folder else ''}: run llmlab from a clone "
                                "of the repository (see the README's Colab section)")
    return found


def write_corpus(folder, n_sentences: int = 4000, seed: int = 0) -> Path:
    """Write :func:`~.corpus.make_animal_corpus` ``(n_sentences, seed)`` to ``folder/animals.txt``."""
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"folder must be a path (str or pathlib.Path), got {type(folder).__name__}")
    sentences = make_animal_corpus(n_sentences, seed)
    path = Path(folder) / CORPUS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(s + "\n" for s in sentences))
    return path


def load_corpus(folder=None) -> list[str]:
    """The sentences of ``animals.txt`` (default folder: :func:`anatomy_dir`); when no folder is
    found, the same 4,000 sentences regenerated from the grammar."""
    found = Path(folder) if folder is not None else anatomy_dir()
    if found is None:
        return make_animal_corpus()
    path = found / CORPUS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `python data/make_anatomy_corpus.py`")
    return [line for line in path.read_text().splitlines() if line]


@dataclass(frozen=True)
class LabelledText:
    """One classification example."""

    text: str
    label: str


def load_task(name: str, split: str, folder=None) -> list[LabelledText]:
    """Split ``split`` ("train" or "test") of task ``name`` (one of :data:`TASKS`), in file order."""
    name = check_choice("name", name, TASKS)
    split = check_choice("split", split, ("train", "test"))
    path = _folder(folder) / f"{name}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [LabelledText(r["text"], r["label"]) for r in rows if r["split"] == split]


def task_labels(examples: list[LabelledText]) -> tuple[str, ...]:
    """The labels of ``examples`` in order of first appearance."""
    if isinstance(examples, (str, bytes)) or not hasattr(examples, "__iter__"):
        raise TypeError(f"examples must be a list of LabelledText, got {type(examples).__name__}")
    examples = list(examples)
    if not examples:
        raise ValueError("examples must hold at least one LabelledText")
    for e in examples:
        if not isinstance(e, LabelledText):
            raise TypeError(f"examples must hold LabelledText (load_task), got {type(e).__name__}")
    return tuple(dict.fromkeys(e.label for e in examples))


def load_documents(folder=None, *, n: int | None = None) -> list[dict]:
    """The articles of ``summaries.jsonl`` as dicts ``{"title", "document", "summary"}`` (the first
    ``n`` if given)."""
    path = _folder(folder) / "summaries.jsonl"
    docs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return docs if n is None else docs[:check_int("n", n, low=1)]
