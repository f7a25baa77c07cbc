"""The browser test's cell subsets, checked without a browser (``tests/browser_cells.py`` states the rule).

Every notebook that builds a widget is in ``test_browser.WIDGET_NOTEBOOKS``, and its subset — the setup
cells plus the cells tagged ``browser`` — builds, displays and drives that widget and defines every name
it reads before reading it, so it runs standalone in a fresh kernel. (``test_browser.py`` then runs it.)
"""

from __future__ import annotations

import ast
import builtins
import json
import re
from pathlib import Path

import pytest

import llmlab.widgets
from browser_cells import ROOT, TAGGED, code_cells, is_tagged, source, subset_cells, subset_notebook
from test_browser import WIDGET_NOTEBOOKS

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
#: The widget builders notebooks call (``llmlab.widgets.decoding_widget(...)``, ``svd_explorer(...)`` ...).
FACTORIES = sorted(n for n in llmlab.widgets.__all__ if n[0].islower())
#: Names a notebook cell may read without defining them: Python's builtins and what IPython provides.
PROVIDED = set(dir(builtins)) | {"display", "get_ipython", "In", "Out", "_"}


def _calls_factory(text: str) -> bool:
    return bool(re.search(rf"\b({'|'.join(FACTORIES)})\(", text))


def _nb(path: Path) -> dict:
    return json.loads(path.read_text())


def _python(text: str) -> str:
    """Cell source as Python: IPython's ``%magic`` and ``!shell`` lines dropped."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in text.splitlines())


def _bound(tree: ast.AST) -> set[str]:
    """Every name a cell binds anywhere (assignments, imports, defs, loop and ``with`` targets, ...)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            names.update(a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg))
        elif isinstance(node, ast.Lambda):
            names.update(a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
    return names


def undefined_names(cells: list[dict]) -> list[tuple[int, str]]:
    """(cell position in ``cells``, name) for each name read before any earlier cell (or the cell itself) binds it."""
    known, missing = set(PROVIDED), []
    for k, cell in enumerate(cells):
        tree = ast.parse(_python(source(cell)))
        bound = _bound(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in known | bound:
                missing.append((k, node.id))
        known |= bound
    return missing


def test_the_names_check_catches_a_missing_input():
    cells = [{"cell_type": "code", "source": s} for s in ("import torch\nx = torch.ones(2)", "y = x + z", "print(y)")]
    assert undefined_names(cells) == [(1, "z")]
    assert undefined_names(cells[:1] + cells[2:]) == [(1, "y")]


def test_every_notebook_that_builds_a_widget_is_in_the_browser_test():
    builds = {p.name for p in NOTEBOOKS if any(_calls_factory(source(c)) for c in code_cells(_nb(p)))}
    assert builds, f"no notebook calls a widget builder ({FACTORIES})"
    assert builds <= set(WIDGET_NOTEBOOKS), f"add to test_browser.WIDGET_NOTEBOOKS: {sorted(builds - set(WIDGET_NOTEBOOKS))}"
    present = {p.name for p in NOTEBOOKS}
    assert {n for n in WIDGET_NOTEBOOKS if n in present} <= builds, "WIDGET_NOTEBOOKS lists a notebook that builds no widget"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_browser_tags_only_in_widget_notebooks(path):
    nb = _nb(path)
    tagged = [i for i, c in enumerate(nb["cells"]) if is_tagged(c)]
    if path.name not in WIDGET_NOTEBOOKS:
        assert not tagged, f"{path.name} is no widget notebook but tags cells {tagged} 'browser'"
    assert all(nb["cells"][i]["cell_type"] == "code" for i in tagged), "only code cells run"


@pytest.mark.parametrize("name", [n for n in WIDGET_NOTEBOOKS if (ROOT / "notebooks" / n).exists()])
def test_widget_subset_builds_drives_and_stands_alone(name):
    nb = _nb(ROOT / "notebooks" / name)
    cells = subset_cells(nb)
    setup = code_cells(nb)[:2]
    assert cells[:2] == setup and len(cells) > 2, f"{name}: no cell is tagged 'browser' (see tests/browser_cells.py)"
    texts = [source(c) for c in cells[2:]]
    builder = next((i for i, t in enumerate(texts) if _calls_factory(t)), None)
    assert builder is not None, f"{name}: the tagged cells build no widget"
    # The widget is displayed (display(w.widget), or the cell ends with the widget) and then driven from code.
    assert "display(" in texts[builder] or ast.parse(texts[builder]).body[-1].__class__ is ast.Expr
    assert any(re.search(r"\.value\s*=", t) for t in texts[builder:]), f"{name}: no tagged cell drives the widget"
    missing = undefined_names(cells)
    assert not missing, (f"{name}: the browser subset reads names no earlier subset cell defines "
                         f"(tag the cells that compute them): {[(n, source(cells[k])[:60]) for k, n in missing]}")
    # What the browser test opens: the title and these cells, nothing else.
    opened = subset_notebook(nb)["cells"]
    assert [c for c in opened if c["cell_type"] == "code"] == cells and opened[0]["cell_type"] == "markdown"


def test_tagging_record_names_widget_notebooks():
    assert set(TAGGED) <= set(WIDGET_NOTEBOOKS)
