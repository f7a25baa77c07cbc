"""Exercises that check themselves: ``check("06.2", answer)`` prints ✓ or a specific hint.

Every notebook's Exercises section ends each checkable exercise with a scaffold::

    answer = None  # your code
    check("06.2", answer);

``check`` grades the answer against values llmlab computes at check time (so the check holds on
any device and size), prints a ✓ or a hint that points at the mistake without giving the
solution, and returns True or False. It never raises on a wrong answer (a crash inside a function
you pass is reported as a hint too); it raises ``ValueError`` only for an unknown exercise id or
an answer of the wrong kind (the message says what kind is expected). ``None`` (the scaffold's
placeholder) prints "no answer yet" and returns False. (The scaffold's ``;`` keeps Jupyter from echoing the
returned bool under the message.) Worked solutions live in ``solutions/``.

One module per group of notebooks registers its exercises in :data:`EXERCISES`:
``text`` (01, 02, 10), ``training`` (03, 04, 05, 08), ``matrices`` (06, 07), ``anatomy`` (09),
``alignment`` (11), ``scale`` (12), ``quantization`` (13), ``attention`` (14), ``serving`` (15), ``parallel`` (16).
"""

from __future__ import annotations

from . import (alignment, anatomy, attention, matrices, parallel, quantization, scale, serving, text,  # noqa: F401
               training)  # (importing registers the exercises)
from .base import EXERCISES, Exercise

__all__ = ["check", "grade", "EXERCISES", "Exercise", "exercise_ids"]


def exercise_ids() -> list[str]:
    """The registered ids, sorted ("02.1" before "10.1")."""
    return sorted(EXERCISES, key=lambda i: tuple(int(p) for p in i.split(".")))


def _lookup(exercise_id) -> Exercise:
    if not isinstance(exercise_id, str) or exercise_id not in EXERCISES:
        raise ValueError(f"exercise_id {exercise_id!r} is not a known exercise id: known ids are {', '.join(exercise_ids())}")
    return EXERCISES[exercise_id]


def grade(exercise_id: str, answer) -> tuple[bool, str]:
    """``(passed, message)`` without printing; ``ValueError`` for an unknown id or a wrong kind of answer."""
    ex = _lookup(exercise_id)
    if answer is None or answer is Ellipsis:
        return False, f"no answer yet: set `answer` to {ex.expects} and run the cell again."
    if not ex.accepts(answer):
        raise ValueError(f"answer: exercise {exercise_id} expects {ex.expects}, got {type(answer).__name__}: {answer!s:.60}")
    return ex.grade(answer)


def check(exercise_id: str, answer) -> bool:
    """Grade ``answer`` to exercise ``exercise_id`` ("NN.k"), print ✓ or a hint, return whether it passed."""
    passed, message = grade(exercise_id, answer)
    mark = "✓" if passed else ("…" if answer is None or answer is Ellipsis else "✗")
    print(f"{mark} {exercise_id} {EXERCISES[exercise_id].title}: {message}")
    return passed
