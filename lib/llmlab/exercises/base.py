"""The exercise registry: what an exercise is, and the small helpers every check shares.

An :class:`Exercise` knows what kind of answer it takes (``accepts`` and its description
``expects``) and how to grade one (``grade(answer) -> (passed, message)``). Grades compare the
learner's answer with values llmlab computes at check time (never stored numbers), so they hold
on any device and size; the message on failure is a hint, never the solution.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import torch

from ..models import LLAMA_PRESETS

EXERCISES: dict[str, "Exercise"] = {}


@dataclass(frozen=True)
class Exercise:
    """One checkable exercise: id ``"NN.k"`` (notebook NN, exercise k), the answer's kind, the grader."""

    id: str
    title: str
    expects: str                           # "an int", "a function f(step, *, base_lr, ...)": for the ValueError
    accepts: Callable[[Any], bool]         # is the answer of the right kind?
    grade: Callable[[Any], tuple[bool, str]]  # (passed, message): a hint when not passed


def exercise(exercise_id: str, title: str, expects: str, accepts: Callable[[Any], bool]):
    """Decorator: register ``grade`` as the checker of ``exercise_id``."""
    def register(grade: Callable[[Any], tuple[bool, str]]):
        if exercise_id in EXERCISES:
            raise ValueError(f"exercise {exercise_id!r} registered twice")
        EXERCISES[exercise_id] = Exercise(exercise_id, title, expects, accepts, grade)
        return grade
    return register


# --- kinds of answers ------------------------------------------------------------------------

def is_int(x) -> bool:
    """An integer (Python, numpy or a one-element integer tensor), not a bool."""
    if isinstance(x, torch.Tensor):
        return x.numel() == 1 and not x.dtype.is_floating_point and not x.dtype.is_complex and x.dtype != torch.bool
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def is_number(x) -> bool:
    """A real number (int or float: Python, numpy or a one-element tensor), not a bool."""
    if isinstance(x, torch.Tensor):
        return x.numel() == 1 and not x.dtype.is_complex and x.dtype != torch.bool
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def is_callable(x) -> bool:
    return callable(x)


def dict_of(keys, value_ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """Accepts a dict holding exactly ``keys`` whose values pass ``value_ok``."""
    keys = set(keys)
    return lambda x: isinstance(x, dict) and set(x) == keys and all(value_ok(v) for v in x.values())


def pair_of(value_ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """Accepts a tuple or list of two values that pass ``value_ok``."""
    return lambda x: isinstance(x, (tuple, list)) and len(x) == 2 and all(value_ok(v) for v in x)


# --- comparisons -----------------------------------------------------------------------------

def close(answer, truth: float, rel: float = 1e-3) -> bool:
    """``answer`` within ``rel`` (relative) of ``truth``."""
    return math.isclose(float(answer), float(truth), rel_tol=rel, abs_tol=1e-12)


def direction(answer, truth) -> str:
    """'too high' / 'too low' (never the value itself)."""
    return "too high" if float(answer) > float(truth) else "too low"


def call_safely(fn: Callable, *args, **kwargs) -> tuple[Any, str | None]:
    """Call the learner's function; a crash becomes a hint instead of an exception."""
    try:
        return fn(*args, **kwargs), None
    except Exception as err:  # the learner's code may raise anything: report it, do not raise
        call = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
        return None, f"your function raised {type(err).__name__}: {err} (called with {call[:200]})"


@lru_cache(maxsize=1)
def smollm2_skeleton():
    """SmolLM2-135M's architecture on the meta device: shapes without weights (no memory, no init time)."""
    # transformers is slow to import: only the checks that need a model shape import it.
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        return LlamaForCausalLM(LlamaConfig(**LLAMA_PRESETS["smollm2-135m"]))
