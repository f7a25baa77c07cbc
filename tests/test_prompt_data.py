"""llmlab.prompt_data: the in-context-learning tasks, the preference set and the LLaMA tables."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmlab.prompt_data import (LLAMA_MIXTURE, LLAMA_TOKENS, TASKS, load_preferences, load_task, make_preferences,
                                make_task, write_prompt_data)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_tasks_are_seeded_balanced_and_disjoint(name):
    pool, test = make_task(name, seed=3)
    assert (pool, test) == make_task(name, seed=3)
    assert (pool, test) != make_task(name, seed=4)
    for split, n in ((pool, 16), (test, 32)):
        assert len(split) == n
        assert {ex["output"] for ex in split} == set(TASKS[name])
        assert sum(ex["output"] == TASKS[name][0] for ex in split) == n // 2  # balanced
        assert all(set(ex) == {"input", "output"} and ex["input"] for ex in split)
    assert not {ex["input"] for ex in pool} & {ex["input"] for ex in test}
    assert len({ex["input"] for ex in pool + test}) == 48  # no repeated input


def test_reviews_are_written_in_one_polarity():
    from llmlab.prompt_data import _NEGATIVE, _POSITIVE  # the word lists the reviews are built from

    pool, test = make_task("sentiment")
    for ex in pool + test:
        words = set(ex["input"].lower().replace(",", " ").replace(".", " ").replace(";", " ").split())
        own, other = (_POSITIVE, _NEGATIVE) if ex["output"] == "positive" else (_NEGATIVE, _POSITIVE)
        assert words & set(own) and not words & set(other), ex
        assert " a excellent" not in ex["input"].lower() and not ex["input"].startswith("A a")


def test_preferences_wrap_the_same_fact_in_filler():
    train, heldout = make_preferences()
    assert (train, heldout) == make_preferences() and len(train) == 24 and len(heldout) == 8
    assert not {p["prompt"] for p in train} & {p["prompt"] for p in heldout}
    for p in train + heldout:
        assert p["rejected"].startswith(p["chosen"] + " ") and len(p["rejected"]) > 2 * len(p["chosen"])
        assert p["prompt"].endswith("?") and p["chosen"].endswith(".")


def test_committed_files_are_what_the_script_writes(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "data" / "make_prompt_data.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    committed = sorted((ROOT / "lib" / "llmlab" / "datafiles" / "prompting").glob("*.jsonl"))
    assert [p.name for p in committed] == sorted(p.name for p in tmp_path.glob("*.jsonl"))
    for path in committed:
        assert (tmp_path / path.name).read_bytes() == path.read_bytes()
    for name in TASKS:  # the files and the fallback without files agree
        assert (load_task(name, "pool"), load_task(name, "test")) == make_task(name)
    assert (load_preferences("train"), load_preferences("heldout")) == make_preferences()
    assert json.loads((ROOT / "lib" / "llmlab" / "datafiles" / "prompting" / "preferences_train.jsonl").read_text().splitlines()[0]) \
        == load_preferences("train")[0]


def test_write_and_load_roundtrip(tmp_path):
    write_prompt_data(tmp_path, seed=2)
    assert load_task("sentiment", "test", folder=tmp_path) == make_task("sentiment", seed=2)[1]
    assert load_preferences("heldout", folder=tmp_path) == make_preferences(seed=2)[1]
    with pytest.raises(ValueError, match="split"):
        load_task("sentiment", "train", folder=tmp_path)
    with pytest.raises(FileNotFoundError, match="make_prompt_data"):
        load_preferences("train", folder=tmp_path / "missing")


def test_llama_tables_are_the_papers():
    """Touvron et al. (2023), Table 1: the proportions sum to 100 %; Wikipedia and Books are the
    sources seen about twice; Table 2: 1.0T tokens for 7B and 13B, 1.4T for 33B and 65B."""
    assert sum(row.proportion for row in LLAMA_MIXTURE) == pytest.approx(1.0)
    assert [r.source for r in LLAMA_MIXTURE][:2] == ["CommonCrawl", "C4"] and LLAMA_MIXTURE[0].proportion == 0.67
    assert {r.source for r in LLAMA_MIXTURE if r.epochs > 2} == {"Wikipedia", "Books"}
    assert sorted(set(LLAMA_TOKENS.values())) == [1.0e12, 1.4e12]
    assert [LLAMA_TOKENS[p] for p in (6.7, 13.0, 32.5, 65.2)] == [1.0e12, 1.0e12, 1.4e12, 1.4e12]
