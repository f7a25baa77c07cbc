"""Number formats and lost updates: why a half-precision weight cannot absorb a small update.

A float with ``p`` significand bits (fp16: p = 11, bf16: p = 8, counting the implicit leading 1)
spaces its values ``ulp(w) = 2^(e - p + 1)`` apart near ``w = m 2^e``. Round-to-nearest-even turns
``w + u`` back into ``w`` whenever ``u`` is at most half an ulp, so for ``w = 1`` any update up to
``2^-p`` (fp16: 2^-11 ~ 4.9e-4) vanishes. That is why mixed-precision training keeps an fp32
master copy of the weights (:mod:`llmlab.precision.mixed`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._checks import check_float
from .._torch import resolve_dtype

__all__ = ["FloatFormat", "float_format", "update_survives", "smallest_surviving_update"]

# Integer dtypes of the same width, to walk the representable floats in order.
_INT_OF = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32,
           torch.float64: torch.int64}


@dataclass(frozen=True)
class FloatFormat:
    """The layout of a floating-point format, read off ``torch.finfo``.

    ``mantissa_bits`` are the *stored* fraction bits (fp16: 10); the significand has one more,
    implicit bit. ``eps`` = 2^-mantissa_bits is the gap between 1 and the next float;
    ``min_normal`` = 2^(1 - bias); ``min_subnormal`` = min_normal * eps is the smallest positive value.
    """

    name: str
    bits: int
    exponent_bits: int
    mantissa_bits: int
    max: float
    min_normal: float
    min_subnormal: float
    eps: float


def float_format(dtype) -> FloatFormat:
    """Bits, range and precision of ``dtype`` (fp16, bf16, fp32 or fp64, or their names), from ``torch.finfo``."""
    dtype = resolve_dtype(dtype)
    fi = torch.finfo(dtype)
    mantissa_bits = round(-math.log2(fi.eps))
    return FloatFormat(
        name=str(dtype).replace("torch.", ""),
        bits=fi.bits,
        exponent_bits=fi.bits - 1 - mantissa_bits,
        mantissa_bits=mantissa_bits,
        max=float(fi.max),
        min_normal=float(fi.smallest_normal),
        min_subnormal=float(fi.smallest_normal) * float(fi.eps),
        eps=float(fi.eps),
    )


def update_survives(weight, update, dtype):
    """Whether ``weight + update``, computed in ``dtype``, differs from ``weight`` in ``dtype``.

    Both operands are first rounded to ``dtype`` (as in a training loop that stores weights and
    updates in that format), then added with one round-to-nearest-even. Numbers or tensors
    (broadcast); returns a Python ``bool`` for scalars and a bool tensor otherwise.
    Example: ``update_survives(1.0, 1e-4, torch.float16)`` is False (half an ulp at 1 is 2^-11).
    """
    dtype = resolve_dtype(dtype)
    scalar = not isinstance(weight, torch.Tensor) and not isinstance(update, torch.Tensor)
    for name, value in (("weight", weight), ("update", update)):
        if not isinstance(value, torch.Tensor):
            check_float(name, value, finite=False)  # a number (not a bool, not NaN); inf is caught below
    w = torch.as_tensor(weight).to(dtype)
    u = torch.as_tensor(update, device=w.device).to(dtype)
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"weight must be finite in {dtype}, got {weight!r}")
    changed = (w + u) != w
    return bool(changed.item()) if scalar or changed.dim() == 0 else changed


def smallest_surviving_update(dtype, weight: float = 1.0) -> float:
    """The smallest *relative* update ``u / weight`` that survives, for a positive ``weight``.

    Precisely: the smallest positive ``u`` representable in ``dtype`` with
    ``fl(w + u) != w`` (w = weight rounded to ``dtype``), divided by ``w``. Found exactly by
    bisection over the bit patterns of ``dtype`` (survival is monotone in ``u``).

    With round-to-nearest-even an update of exactly half an ulp ties, and the tie goes to the
    even neighbour; for ``w = 1`` (even significand) that is ``w`` itself, so the answer is the
    next float *above* half an ulp: fp16 2^-11 (1 + 2^-10) ~ 4.88e-4, bf16 2^-8 (1 + 2^-7),
    fp32 2^-24 (1 + 2^-23). For a weight with an odd significand the half-ulp tie rounds up and
    the answer is exactly half an ulp / w.
    """
    dtype = resolve_dtype(dtype)
    weight = check_float("weight", weight, low=0, low_open=True)
    w = torch.tensor(weight).to(dtype)
    if not (math.isfinite(float(w)) and float(w) > 0):
        raise ValueError(f"weight must be positive and finite in {dtype}, got {weight!r}")
    int_dtype = _INT_OF[dtype]

    def as_float(bits: int) -> torch.Tensor:
        return torch.tensor(bits, dtype=int_dtype).view(dtype)

    # Positive floats sorted by value have increasing bit patterns: 1 is the smallest subnormal,
    # the pattern of +inf is one past the largest finite value.
    lo, hi = 0, int(torch.tensor(float("inf"), dtype=dtype).view(int_dtype))
    while hi - lo > 1:  # invariant: pattern lo does not survive (or is 0), pattern hi does
        mid = (lo + hi) // 2
        if bool((w + as_float(mid)) != w):
            hi = mid
        else:
            lo = mid
    return float(as_float(hi)) / float(w)
