"""Every public function refuses bad input with one clear error from llmlab's own code (issue 18).

The rows live in ``tests/bad_inputs_table.py``. A row passes when its call raises the expected
``ValueError``/``TypeError``, the innermost traceback frame is inside ``lib/llmlab`` (not deep in
torch or transformers) and the message names the argument. ``python tests/test_bad_inputs.py``
prints the census by outcome (clear / silent / foreign / vague / runaway), each call under a
memory and time limit so a runaway case is counted instead of taking the machine down.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback
from pathlib import Path

import pytest
import torch

import llmlab

sys.path.insert(0, str(Path(__file__).parent))
from bad_inputs_table import CASES, INNER, NO_ARGUMENTS, OUT_OF_SCOPE_MODULES, RESULT_TYPES  # noqa: E402

LIB = str(Path(llmlab.__file__).parent)


def classify(case) -> tuple[str, str]:
    """(outcome, detail) of one row: "clear", "silent", "foreign", "vague" (or "runaway" on MemoryError)."""
    try:
        result = case.call()
    except MemoryError as e:
        return "runaway", f"MemoryError {e}"
    except Exception as e:  # noqa: BLE001 - the point is to see every kind
        frames = traceback.extract_tb(e.__traceback__)
        inside = bool(frames) and frames[-1].filename.startswith(LIB)
        msg = f"{type(e).__name__}: {str(e)[:300]}"
        if not isinstance(e, (ValueError, TypeError)) or not inside:
            where = frames[-1].filename if frames else "?"
            return "foreign", f"{msg} (raised in {where})"
        if type(e) is not case.exc and not issubclass(type(e), case.exc):
            return "vague", f"expected {case.exc.__name__}, got {msg}"
        if case.arg not in str(e):
            return "vague", f"message does not name {case.arg!r}: {msg}"
        return "clear", msg
    return "silent", f"returned {type(result).__name__}: {str(result)[:120]}"


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_bad_input_gives_one_clear_error(case):
    outcome, detail = classify(case)
    assert outcome == "clear", f"{case.label}: {outcome}: {detail}"


def _public_modules():
    for info in pkgutil.walk_packages(llmlab.__path__, "llmlab."):
        if info.name.endswith("__main__") or info.name.startswith(OUT_OF_SCOPE_MODULES):
            continue
        yield importlib.import_module(info.name)


def test_every_public_name_is_in_the_table():
    """A new public function or class needs rows in the table (or a reason in NO_ARGUMENTS / RESULT_TYPES / INNER)."""
    covered = {id(case.target) for case in CASES}
    # A method row (e.g. StaticDecoder.generate) covers its method; the class needs its own rows.
    missing = []
    for module in _public_modules():
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if name in NO_ARGUMENTS or name in RESULT_TYPES or name in INNER or id(obj) in covered:
                continue
            missing.append(f"{module.__name__}.{name}")
    assert not missing, f"public names without bad-input rows: {missing}"


def test_every_row_names_a_public_name_or_method():
    public = set()
    for module in _public_modules():
        public |= {id(getattr(module, n)) for n in getattr(module, "__all__", ())}
    strays = [c.label for c in CASES if id(c.target) not in public and "." not in c.target.__qualname__]
    assert not strays, strays


def census(limit_gib: float = 8.0, seconds: int = 20) -> dict[str, list[str]]:
    """Run every row under an address-space limit and an alarm; group the labels by outcome."""
    import resource
    import signal

    resource.setrlimit(resource.RLIMIT_AS, (int(limit_gib * 2**30), resource.RLIM_INFINITY))

    def alarm(signum, frame):
        raise MemoryError("ran past the time limit")

    signal.signal(signal.SIGALRM, alarm)
    groups: dict[str, list[str]] = {}
    for case in CASES:
        signal.alarm(seconds)
        try:
            outcome, detail = classify(case)
        finally:
            signal.alarm(0)
        groups.setdefault(outcome, []).append(f"{case.label}: {detail}")
    return groups


if __name__ == "__main__":
    groups = census()
    for outcome in ("silent", "foreign", "vague", "runaway"):
        for line in groups.get(outcome, []):
            print(f"[{outcome}] {line}")
    print({k: len(v) for k, v in groups.items()}, "of", len(CASES))
