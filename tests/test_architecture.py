"""The layout rules of README's Contributing section, checked on the source.

Imports inside llmlab point one way: small shared helpers (``_checks``, ``_torch``, ``timing``,
``memory``, ``fitting``) -> topic modules -> ``display`` / ``widgets`` -> ``bench``; ``bench``,
``gallery``, ``colab`` and ``exercises`` are leaves that nothing in the library imports. These tests read the
source with ``ast`` (nothing is imported), so they fail on the line that breaks a rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lib"
PACKAGE = LIB / "llmlab"
FILES = sorted(PACKAGE.rglob("*.py"))

#: Modules nothing else in llmlab may import.
LEAVES = ("llmlab.bench", "llmlab.gallery", "llmlab.colab", "llmlab.exercises")
#: Front ends: only other front ends and the leaves may import them.
FRONT_ENDS = ("llmlab.widgets",)
#: The shared internal helpers whose private-looking module names are meant to be imported.
INTERNAL_API = ("llmlab._checks", "llmlab._torch")
#: Third-party packages that may be imported inside a function (slow to import or optional),
#: each such import carrying a comment that says why.
OPTIONAL_HEAVY = ("transformers", "peft", "skimage", "tqdm", "nbformat", "nbconvert", "tokenizers", "trl",
                  "IPython", "scipy", "sklearn", "gguf")
MAX_LINES = 420


def module_name(path: Path) -> str:
    parts = path.relative_to(LIB).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in FILES}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    """Absolute module name of a ``from ... import`` in ``importer``."""
    if node.level == 0:
        return node.module or ""
    base = importer.split(".") if _is_package(importer) else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str):
    """Yield ``(target_module, imported_names, node, at_module_level)`` for every llmlab import."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    top_level = {id(n) for n in tree.body}
    # Imports under `if TYPE_CHECKING:` / try blocks at module level count as module level.
    for n in tree.body:
        for sub in ast.walk(n):
            if isinstance(sub, (ast.Import, ast.ImportFrom)) and not isinstance(n, (ast.FunctionDef, ast.ClassDef)):
                top_level.add(id(sub))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "llmlab":
                    yield alias.name, [], node, id(node) in top_level
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(name, node)
            if target.split(".")[0] != "llmlab":
                continue
            names = [a.name for a in node.names]
            # `from . import x` / `from .pkg import sub`: a submodule is imported.
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            yield (subs[0] if len(subs) == 1 and len(names) == 1 else target), names, node, id(node) in top_level


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for name in MODULES:
        for target, names, _, _ in imports_of(name):
            if target in MODULES and target != name:  # `from . import a, b` in a package: not a self-edge
                edges[name].add(target)
            for n in names:
                if f"{target}.{n}" in MODULES:
                    edges[name].add(f"{target}.{n}")
    return edges


def test_the_package_is_found():
    assert "llmlab" in MODULES and "llmlab._checks" in MODULES


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            # A package importing its own submodules is how re-exports work; a submodule
            # importing its parent package back is the cycle we look for.
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name)


def _inside(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_library_does_not_import_leaves_or_front_ends(name):
    for target, _, node, _ in imports_of(name):
        same_leaf = any(_inside(target, (leaf,)) and _inside(name, (leaf,)) for leaf in LEAVES)
        if _inside(target, LEAVES) and not same_leaf:
            pytest.fail(f"{name} (line {node.lineno}) imports the leaf {target}: nothing in llmlab may")
        if _inside(target, FRONT_ENDS) and not _inside(name, FRONT_ENDS + LEAVES):
            pytest.fail(f"{name} (line {node.lineno}) imports the front end {target}")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_function_level_imports_of_llmlab(name):
    for target, _, node, at_top in imports_of(name):
        assert at_top, f"{name} line {node.lineno}: import of {target} inside a function"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_function_level_imports_are_optional_heavy_dependencies_with_a_reason(name):
    path = MODULES[name]
    lines = path.read_text().splitlines()
    tree = ast.parse(path.read_text())
    for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        for node in ast.walk(func):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                continue  # llmlab's own: test_no_function_level_imports_of_llmlab
            roots = [a.name.split(".")[0] for a in node.names] if isinstance(node, ast.Import) \
                else [(node.module or "").split(".")[0]]
            for root in roots:
                if root == "llmlab":
                    continue
                assert root in OPTIONAL_HEAVY, (
                    f"{name} line {node.lineno}: `{root}` imported inside {func.name}(); import it at the "
                    f"top, or add it to OPTIONAL_HEAVY if it is slow or optional")
                # The comment may sit on the line, or above the block of imports the line belongs to.
                k = node.lineno - 2
                while k >= 0 and lines[k].strip().startswith(("import ", "from ")) and "#" not in lines[k]:
                    k -= 1
                above = lines[k] if k >= 0 else ""
                assert "#" in lines[node.lineno - 1] or above.strip().startswith("#") or "#" in above, (
                    f"{name} line {node.lineno}: function-level import of {root} needs a comment saying why")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_names_from_other_modules(name):
    for target, names, node, _ in imports_of(name):
        if _inside(target, INTERNAL_API) or target == name:
            continue
        private = [n for n in names if n.startswith("_") and f"{target}.{n}" not in INTERNAL_API]
        assert not private, f"{name} line {node.lineno} imports private {private} from {target}"
        assert not target.split(".")[-1].startswith("_") or target in INTERNAL_API, (
            f"{name} line {node.lineno} imports the private module {target}")


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(LIB)))
def test_modules_stay_small(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.name} has {n} lines (> {MAX_LINES}): split it by concern"


def test_the_rule_checker_catches_a_cycle(tmp_path, monkeypatch):
    """The cycle test must be able to fail: fake a two-module cycle and run it."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from .fake_b import x\n")
    b.write_text("from .fake_a import y\n")
    fake = {"llmlab.fake_a": a, "llmlab.fake_b": b}
    monkeypatch.setitem(globals(), "MODULES", {**MODULES, **fake})
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_no_import_cycles()
