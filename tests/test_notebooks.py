"""Static checks on the committed notebooks (nbval executes them separately)."""

import json
from pathlib import Path

import pytest

from llmlab.colab import SETUP_CELL

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
NOTEBOOKS = LESSONS + SOLUTIONS


def test_there_are_notebooks():
    assert LESSONS


def test_one_solutions_notebook_per_notebook():
    assert [p.stem + "_solutions" for p in LESSONS] == [p.stem for p in SOLUTIONS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{path.name} cell {i} carries outputs"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has an execution count"
    assert "widgets" not in nb.get("metadata", {}), f"{path.name} carries saved widget state"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_first_code_cell_is_the_bootstrap(path):
    nb = json.loads(path.read_text())
    first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert "".join(first_code["source"]) == SETUP_CELL, "run `python -m llmlab.colab` to sync"
    assert nb["cells"][0]["cell_type"] == "markdown", "a notebook opens with its title and what you learn"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_listed_in_readme(path):
    assert path.name in (ROOT / "README.md").read_text()
