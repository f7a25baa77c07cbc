"""One argument-checking policy for every public function of llmlab.

A wrong *type* raises ``TypeError``, a wrong *value* raises ``ValueError``; both messages name
the argument and say what is allowed, e.g. ``"k must be an int in [1, 512], got 0"``. A ``bool``
is never accepted where a number is expected (``True`` is an ``int`` to Python, not to us).
Each checker returns the value it accepted (converted where that is lossless: an integral
NumPy scalar becomes an ``int``), so call sites read ``k = check_int("k", k, low=1)``.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

__all__ = [
    "check_int",
    "check_float",
    "check_bool",
    "check_choice",
    "check_str",
    "check_tensor",
    "check_module",
    "check_same_length",
    "check_finite_tensor",
    "check_prompt_ids",
    "check_eos_token_id",
    "check_callable",
    "check_sequence",
    "check_path",
    "check_optimizer",
    "check_batch_plan",
    "check_length_range",
    "check_world_size",
    "describe_range",
]


def _num(x) -> str:
    """1.0 -> "1", 0.5 -> "0.5", 2**63 - 1 -> its digits: bounds as a person writes them."""
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return str(x)


def describe_range(low=None, high=None, *, low_open: bool = False, high_open: bool = False) -> str:
    """``"in [1, 10]"``, ``"> 0"``, ``"<= 5"`` ... the allowed range as the messages write it."""
    check_bool("low_open", low_open)
    check_bool("high_open", high_open)
    low = _num(low) if low is not None else None
    high = _num(high) if high is not None else None
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


def _type_name(value) -> str:
    return type(value).__name__


def check_int(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an ``int`` in ``[low, high]`` (either bound may be None).

    Accepts Python and NumPy integers and 0-d integer tensors; refuses ``bool`` and floats
    (``3.0`` included) with ``TypeError``, out-of-range values with ``ValueError``.
    """
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point() \
            and not value.is_complex() and value.dtype != torch.bool:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        where = f" {describe_range(low, high)}" if (low is not None or high is not None) else ""
        raise TypeError(f"{name} must be an int{where}, got {value!r} ({_type_name(value)})")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be an int {describe_range(low, high)}, got {value}")
    return value


def check_float(name: str, value, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False, finite: bool = True) -> float:
    """``value`` as a ``float`` in the given range; NaN is always refused, inf unless ``finite=False``.

    Accepts ints, floats, NumPy numbers and 0-d real tensors; refuses ``bool`` and everything
    else with ``TypeError``.
    """
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_complex() and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({_type_name(value)})")
    value = float(value)
    allowed = describe_range(low, high, low_open=low_open, high_open=high_open)
    if math.isnan(value) or (finite and math.isinf(value)):
        raise ValueError(f"{name} must be a finite number{' ' + allowed if allowed else ''}, got {value}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ValueError(f"{name} must be a number {allowed}, got {value!r}")
    return value


def check_bool(name: str, value) -> bool:
    """``value`` must be a real ``bool`` (not 0/1, not a string such as ``"yes"``)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({_type_name(value)})")
    return value


def check_choice(name: str, value, choices: Iterable):
    """``value`` must be one of ``choices`` (compared with ``==``); ``ValueError`` lists them."""
    choices = tuple(choices)
    try:
        ok = value in choices
    except TypeError:  # an unhashable or incomparable value
        ok = False
    if not ok:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_str(name: str, value, *, allow_empty: bool = False) -> str:
    """``value`` must be a ``str`` (non-empty unless ``allow_empty``)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {value!r} ({_type_name(value)})")
    if not allow_empty and not value:
        raise ValueError(f"{name} must be a non-empty str")
    return value


def check_tensor(name: str, value, *, dim: int | tuple[int, ...] | None = None, floating: bool | None = None,
                 integer: bool | None = None, min_numel: int = 0) -> torch.Tensor:
    """``value`` must be a ``torch.Tensor``; optionally of ``dim`` dimensions (an int or a tuple of
    allowed ints), floating point or integer dtype, and holding at least ``min_numel`` elements."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {_type_name(value)}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if integer and (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        raise TypeError(f"{name} must hold integers (e.g. torch.long), got dtype {value.dtype}")
    if dim is not None:
        dims = (dim,) if isinstance(dim, int) else tuple(dim)
        if value.dim() not in dims:
            want = " or ".join(f"{d}-D" for d in dims)
            raise ValueError(f"{name} must be {want}, got shape {tuple(value.shape)}")
    if value.numel() < min_numel:
        raise ValueError(f"{name} must hold at least {min_numel} element(s), got shape {tuple(value.shape)}")
    return value


def check_finite_tensor(name: str, value: torch.Tensor) -> torch.Tensor:
    """``value`` (a tensor) must hold no NaN or inf."""
    check_tensor(name, value)
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} must be finite: it contains NaN or inf values")
    return value


def check_prompt_ids(name: str, value) -> torch.Tensor:
    """``value`` must be one prompt of token ids: a ``(1, prompt_len)`` tensor, prompt_len >= 1, of
    int64 or int32 (what an embedding lookup accepts). Every decoder and server checks its prompt here."""
    check_tensor(name, value, integer=True, dim=2)
    if value.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must hold token ids as torch.long (or int32), got dtype {value.dtype}")
    if value.shape[0] != 1 or value.shape[1] < 1:
        raise ValueError(f"{name} must have shape (1, prompt_len) with prompt_len >= 1, got {tuple(value.shape)}")
    return value


def check_eos_token_id(value) -> int | None:
    """``eos_token_id``: None (never stop early) or a token id, an int >= 0. Every decoder and server
    checks its EOS id here."""
    return None if value is None else check_int("eos_token_id", value, low=0)


def check_callable(name: str, value, *, what: str = "a callable"):
    """``value`` must be callable (a function, a lambda, a class); ``what`` says what it should be."""
    if not callable(value):
        raise TypeError(f"{name} must be {what}, got {value!r} ({_type_name(value)})")
    return value


def check_module(name: str, value) -> nn.Module:
    """``value`` must be a ``torch.nn.Module``."""
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {_type_name(value)}")
    return value


def check_same_length(**sequences) -> int:
    """All keyword sequences must have the same length; returns it (``ValueError`` names them)."""
    for name, seq in sequences.items():
        if not hasattr(seq, "__len__"):
            raise TypeError(f"{name} must be a sequence (a list, tuple or tensor), got {_type_name(seq)}")
    lengths = {name: len(seq) for name, seq in sequences.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"{' and '.join(lengths)} must have the same length: {listed}")
    return next(iter(lengths.values()), 0)


def check_sequence(name: str, value, *, what: str = "items", non_empty: bool = True) -> list:
    """``value`` as a list: a list, tuple or other sequence (never a ``str`` or a single dict, which
    would be iterated by character or key), non-empty unless ``non_empty=False``."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list of {what}, got {value!r:.60} ({_type_name(value)})")
    if non_empty and len(value) == 0:
        raise ValueError(f"{name} must be a non-empty list of {what}")
    return list(value)


def check_path(name: str, value):
    """``value`` must be a path: a ``str`` or an ``os.PathLike`` (e.g. ``pathlib.Path``)."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or a pathlib.Path, got {value!r:.60} ({_type_name(value)})")
    return value


def check_optimizer(name: str, value):
    """``value`` must work as an optimizer: a ``torch.optim.Optimizer`` or anything with ``step`` and
    ``zero_grad`` (a wrapper such as llmlab's master-weights optimizer)."""
    if not (callable(getattr(value, "step", None)) and callable(getattr(value, "zero_grad", None))):
        raise TypeError(f"{name} must be a torch.optim.Optimizer (with step and zero_grad), got {_type_name(value)}")
    return value


def check_batch_plan(batch_size, steps, seed, *, max_batch_size: int | None = None,
                     max_steps: int | None = None) -> tuple[int, int, int]:
    """``(batch_size, steps, seed)`` of a batch maker or trainer (``make_batches``, ``train_tiny_lm``, ...):
    ints with ``batch_size`` in [1, max_batch_size], ``steps`` in [1, max_steps], ``seed`` >= 0."""
    return (check_int("batch_size", batch_size, low=1, high=max_batch_size),
            check_int("steps", steps, low=1, high=max_steps),
            check_int("seed", seed, low=0))


def check_length_range(batch_size, min_len, max_len, seed, *, high: int) -> tuple[int, int, int, int]:
    """``(batch_size, min_len, max_len, seed)`` of a batch of variable-length token rows (lengths drawn in
    [min_len, max_len]): ``batch_size`` in [1, high], 2 <= ``min_len`` <= ``max_len`` <= high, ``seed`` >= 0."""
    batch_size = check_int("batch_size", batch_size, low=1, high=high)
    max_len = check_int("max_len", max_len, low=2, high=high)
    min_len = check_int("min_len", min_len, low=2)
    if min_len > max_len:
        raise ValueError(f"need 2 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    return batch_size, min_len, max_len, check_int("seed", seed, low=0)


def check_world_size(world_size, *, high: int, low: int = 1, divides: Mapping[str, int] | None = None) -> int:
    """``world_size`` (processes of a distributed run) as an int in [low, high]; each ``divides`` entry
    ``{what: n}`` must split into ``world_size`` equal shards (``ValueError`` naming ``what`` and world_size)."""
    world_size = check_int("world_size", world_size, low=low, high=high)
    for what, n in (divides or {}).items():
        if n % world_size:
            raise ValueError(f"{what} must be divisible by world_size, got {n} and {world_size}")
    return world_size
