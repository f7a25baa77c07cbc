"""The small data sets of notebook 11, written by us, and the published facts it quotes.

* Two in-context-learning tasks (:func:`make_task`): ``"sentiment"`` — short movie reviews,
  labelled positive/negative, a format the default model knows — and ``"animal_or_tool"`` —
  words labelled with the arbitrary letters A (an animal) and B (a tool), a mapping nothing but
  the demonstrations can teach.
* A preference set (:func:`make_preferences`): questions with a concise answer (chosen) and a
  rambling one (rejected): the same answer followed by a filler sentence.
* LLaMA's pre-training mixture and token counts (Touvron et al., 2023, arXiv:2302.13971,
  Tables 1 and 2), as :data:`LLAMA_MIXTURE` and :data:`LLAMA_TOKENS`, and the MMLU scores of
  LLaMA-65B before and after instruction tuning (Tables 9 and 10) as :data:`LLAMA_I_MMLU`.

The sets are generated from a seed; ``data/make_prompt_data.py`` writes them to
``llmlab/datafiles/prompting/`` (shipped with the package, :mod:`llmlab.paths`) and
:func:`load_task` / :func:`load_preferences` read them back.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from ._checks import check_choice, check_path
from .paths import data_path

__all__ = [
    "TASKS",
    "make_task",
    "make_preferences",
    "write_prompt_data",
    "load_task",
    "load_preferences",
    "MixtureRow",
    "LLAMA_MIXTURE",
    "LLAMA_TOKENS",
    "LLAMA_I_MMLU",
]

_POSITIVE = ["wonderful", "brilliant", "delightful", "moving", "gripping", "charming", "superb", "beautiful",
             "clever", "excellent", "funny", "touching", "stunning", "fresh"]
_NEGATIVE = ["dull", "boring", "clumsy", "tedious", "awful", "messy", "lifeless", "predictable", "weak",
             "painful", "bland", "forgettable", "silly", "flat"]
_ASPECTS = ["acting", "plot", "script", "music", "ending", "cast", "dialogue", "direction", "story", "pacing",
            "humour", "camera work"]
_FRAMES = ["The {a} was {x}.", "{A_x} film with {a_y} {b}.", "I found the {a} {x} and the {b} {y}.",
           "What {a_x} movie; the {a} was {y}.", "{X} {a}, {y} {b}.", "The {a} felt {x} from start to finish."]
_ANIMALS = ["tiger", "rabbit", "horse", "eagle", "dolphin", "wolf", "sheep", "camel", "parrot", "mouse", "frog",
            "bear", "lion", "goat", "duck", "owl", "shark", "zebra", "fox", "deer", "whale", "monkey", "snake",
            "goose"]
_TOOLS = ["hammer", "wrench", "shovel", "saw", "drill", "chisel", "ladder", "rake", "axe", "pliers",
          "screwdriver", "spade", "trowel", "chainsaw", "mallet", "file", "clamp", "stapler", "scissors", "needle",
          "brush", "funnel", "sander", "level"]

#: The tasks of :func:`make_task` and their two labels.
TASKS = {
    "sentiment": ("positive", "negative"),
    "animal_or_tool": ("A", "B"),
}


def _review(rng: random.Random, positive: bool) -> str:
    words = _POSITIVE if positive else _NEGATIVE
    x, y = rng.sample(words, 2)
    a, b = rng.sample(_ASPECTS, 2)
    a_x, a_y = (("an " if w[0] in "aeiou" else "a ") + w for w in (x, y))
    return rng.choice(_FRAMES).format(a=a, b=b, x=x, y=y, X=x.capitalize(), a_x=a_x, A_x=a_x.capitalize(), a_y=a_y)


def make_task(name: str, *, n_train: int = 16, n_test: int = 32, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """``(pool, test)`` examples ``{"input", "output"}`` of task ``name`` (a key of :data:`TASKS`).

    Both splits are balanced over the two labels and share no input. ``"sentiment"``: reviews
    composed from a frame, two aspects and two adjectives of one polarity. ``"animal_or_tool"``:
    an animal is "A", a tool is "B" (24 of each, so n_train + n_test <= 48). Deterministic for a given ``seed``.
    A data generator that only ``data/make_prompt_data.py`` (through :func:`write_prompt_data`) runs: it
    trusts its arguments (issue 23).
    """
    rng = random.Random(seed)
    labels = TASKS[name]
    n = n_train + n_test
    if name == "sentiment":
        seen: set[str] = set()
        examples = []
        while len(examples) < n:
            positive = len(examples) % 2 == 0
            text = _review(rng, positive)
            if text not in seen:
                seen.add(text)
                examples.append({"input": text, "output": labels[0] if positive else labels[1]})
    else:
        animals, tools = rng.sample(_ANIMALS, len(_ANIMALS)), rng.sample(_TOOLS, len(_TOOLS))
        examples = [{"input": (animals if i % 2 == 0 else tools)[i // 2], "output": labels[i % 2]} for i in range(n)]
    # Alternate the labels in both splits (balanced), then shuffle each split.
    pool, test = examples[:n_train], examples[n_train:]
    rng.shuffle(pool)
    rng.shuffle(test)
    return pool, test


_QA = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many days are in a week?", "A week has seven days."),
    ("What do bees make?", "Bees make honey."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote it."),
    ("What is the largest planet in the solar system?", "Jupiter is the largest planet."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("Which gas do plants take in from the air?", "Plants take in carbon dioxide."),
    ("How many minutes are in an hour?", "An hour has sixty minutes."),
    ("Which ocean is the largest?", "The Pacific Ocean is the largest."),
    ("What is the chemical symbol for gold?", "The symbol for gold is Au."),
    ("How many continents are there?", "There are seven continents."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("What is 5 plus 7?", "5 plus 7 is 12."),
    ("Which language is spoken in Brazil?", "People in Brazil speak Portuguese."),
    ("What is the tallest animal?", "The giraffe is the tallest animal."),
    ("How many hours are in a day?", "A day has 24 hours."),
    ("What is the main ingredient of bread?", "The main ingredient of bread is flour."),
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("How many sides does a triangle have?", "A triangle has three sides."),
    ("What is frozen water called?", "Frozen water is called ice."),
    ("Which star is closest to Earth?", "The Sun is the closest star to Earth."),
    ("How many months are in a year?", "A year has twelve months."),
    ("What is the square root of 81?", "The square root of 81 is 9."),
    ("What is the largest mammal?", "The blue whale is the largest mammal."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted it."),
    ("What is the capital of Spain?", "The capital of Spain is Madrid."),
    ("What color is a ripe banana?", "A ripe banana is yellow."),
    ("How many wheels does a bicycle have?", "A bicycle has two wheels."),
    ("What is the freezing point of water?", "Water freezes at 0 degrees Celsius."),
    ("Which animal is known as the king of the jungle?", "The lion is called the king of the jungle."),
]
_FILLERS = [
    "This is something that many people learn at school, and it often comes up in quizzes.",
    "There is a lot more that could be said about this, and it has a long and interesting history.",
    "It is a well-known fact, but it is still fascinating to think about how people found it out.",
    "Many people find this surprising when they first hear it, so it is worth remembering.",
]


def make_preferences(n_train: int = 24, n_heldout: int = 8, *, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """``(train, heldout)`` pairs ``{"prompt", "chosen", "rejected"}``: a question, its concise
    answer, and the same answer followed by a filler sentence (drawn with ``seed``). Both answers start alike and part where the concise one stops, so the preference
    is "stop after the answer". The splits share no question; at most 32 pairs in all. A data generator
    like :func:`make_task`: it trusts its arguments."""
    rng = random.Random(seed)
    qa = rng.sample(_QA, n_train + n_heldout)
    pairs = [{"prompt": q, "chosen": a, "rejected": f"{a} {rng.choice(_FILLERS)}"} for q, a in qa]
    return pairs[:n_train], pairs[n_train:]


def _dump(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def write_prompt_data(folder: str | Path, *, seed: int = 0) -> list[Path]:
    """Write ``<task>_{pool,test}.jsonl`` for every task and ``preferences_{train,heldout}.jsonl``."""
    folder = Path(folder)  # data/make_prompt_data.py passes its --out
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in TASKS:
        for split, rows in zip(("pool", "test"), make_task(name, seed=seed)):
            paths.append(_dump(folder / f"{name}_{split}.jsonl", rows))
    for split, rows in zip(("train", "heldout"), make_preferences(seed=seed)):
        paths.append(_dump(folder / f"preferences_{split}.jsonl", rows))
    return paths


def _load(name: str, folder: str | Path | None) -> list[dict]:
    path = Path(check_path("folder", folder)) / f"{name}.jsonl" if folder is not None \
        else data_path("prompting", f"{name}.jsonl")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `python data/make_prompt_data.py`")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_task(name: str, split: str, *, folder: str | Path | None = None) -> list[dict]:
    """The ``split`` ("pool": demonstrations to draw from, or "test") of task ``name``."""
    check_choice("name", name, TASKS)
    check_choice("split", split, ("pool", "test"))
    return _load(f"{name}_{split}", folder)


def load_preferences(split: str, *, folder: str | Path | None = None) -> list[dict]:
    """The ``split`` ("train" or "heldout") of the preference set."""
    check_choice("split", split, ("train", "heldout"))
    return _load(f"preferences_{split}", folder)


@dataclass(frozen=True)
class MixtureRow:
    """One source of a pre-training mixture: its share of the sampled tokens, how many passes
    over it the training made, and its size on disk (GB)."""

    source: str
    proportion: float
    epochs: float
    disk_gb: float


#: LLaMA's pre-training data (Touvron et al., 2023, Table 1): sampling proportion, epochs when
#: training on 1.4T tokens, disk size.
LLAMA_MIXTURE = (
    MixtureRow("CommonCrawl", 0.670, 1.10, 3300),
    MixtureRow("C4", 0.150, 1.06, 783),
    MixtureRow("GitHub", 0.045, 0.64, 328),
    MixtureRow("Wikipedia", 0.045, 2.45, 83),
    MixtureRow("Books", 0.045, 2.23, 85),
    MixtureRow("ArXiv", 0.025, 1.06, 92),
    MixtureRow("StackExchange", 0.020, 1.03, 78),
)

#: Training tokens per LLaMA model (Touvron et al., 2023, Table 2): parameters (billions) -> tokens.
LLAMA_TOKENS = {6.7: 1.0e12, 13.0: 1.0e12, 32.5: 1.4e12, 65.2: 1.4e12}


#: MMLU (5-shot) accuracy in % (Touvron et al., 2023, Tables 9 and 10): LLaMA-65B, and LLaMA-I, the same
#: model after a short instruction fine-tune that follows the protocol and data of Chung et al. (2022).
LLAMA_I_MMLU = {"LLaMA-65B": 63.4, "LLaMA-I (65B)": 68.9}
