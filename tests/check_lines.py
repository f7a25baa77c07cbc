"""How much of llmlab is argument checking: check lines as a share of code lines (issue 23).

A *code line* is a non-blank line of ``lib/llmlab`` that is not a comment or part of a docstring.
A *check line* is a code line of a ``raise`` statement or of a simple statement that calls into
the checking policy (``check_int(...)``, ``k = check_float(...)``, ``check_token_ids(model, ids)``:
every function whose name starts with ``check_``), as issue 23 counts them. ``_checks.py`` itself
(the policy) is left out of both counts. ``python tests/check_lines.py`` prints the figure and
the modules with the highest share; ``tests/test_architecture.py`` keeps it under :data:`CEILING`,
a ratchet that only goes down towards issue 23's :data:`GOAL`.
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lib" / "llmlab"
POLICY = PACKAGE / "_checks.py"
#: Issue 23's goal for the share of check lines.
GOAL = 0.08
#: What the library holds today, rounded up: lower it as checks leave the inner functions.
CEILING = 0.080


def code_lines(source: str) -> set[int]:
    """Line numbers holding code: not blank, not only a comment, not inside a docstring."""
    tree = ast.parse(source)
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    for node in ast.walk(tree):  # `#: ...` constants' docs and bare strings elsewhere count as prose too
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            docstrings.update(range(node.lineno, node.end_lineno + 1))
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                        tokenize.ENDMARKER):
            continue
        lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines - docstrings


_COMPOUND = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try, ast.FunctionDef,
             ast.AsyncFunctionDef, ast.ClassDef, ast.Match)


def _is_check_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name.startswith("check_")


def _calls_a_check(node: ast.stmt) -> bool:
    """A simple statement (not an ``if``/``for``/...) with a ``check_*`` call anywhere in it."""
    return not isinstance(node, _COMPOUND) and any(_is_check_call(n) for n in ast.walk(node))


def check_lines(source: str) -> set[int]:
    """Line numbers of check statements (see the module docstring)."""
    tree = ast.parse(source)
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) or (isinstance(node, ast.stmt) and _calls_a_check(node)):
            lines.update(range(node.lineno, node.end_lineno + 1))
    return lines


def census(package: Path = PACKAGE) -> dict[str, tuple[int, int]]:
    """Module path -> (check lines, code lines), ``_checks.py`` left out."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        if path == POLICY:
            continue
        source = path.read_text()
        code = code_lines(source)
        out[str(path.relative_to(package))] = (len(check_lines(source) & code), len(code))
    return out


def share(counts: dict[str, tuple[int, int]]) -> float:
    checks = sum(c for c, _ in counts.values())
    code = sum(n for _, n in counts.values())
    return checks / code


def main(argv: list[str]) -> None:
    counts = census()
    checks, code = sum(c for c, _ in counts.values()), sum(n for _, n in counts.values())
    print(f"check lines: {checks:,} of {code:,} code lines = {100 * checks / code:.1f} % "
          f"(ceiling {100 * CEILING:.1f} %, goal {100 * GOAL:.0f} %)")
    most = int(argv[0]) if argv else 10
    ranked = sorted(counts.items(), key=lambda kv: -kv[1][0] / max(kv[1][1], 1))
    for name, (c, n) in ranked[:most]:
        print(f"  {name:36s} {c:4d} / {n:4d} = {100 * c / max(n, 1):4.1f} %")


if __name__ == "__main__":
    main(sys.argv[1:])
