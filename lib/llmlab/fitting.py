"""Scaling-law fits the notebooks use to say "this grows like n, that like sqrt n".

* :func:`fit_scaling` fits ``value ~= c * f(n) + d`` for a law ``f`` in :data:`LAWS`
  (``"1"``, ``"sqrt"``, ``"n"``, ``"n^2"``) by least squares and reports R².
* :func:`loglog_slope`: the slope of log(value) against log(n), 1 for O(n), 0.5 for O(sqrt n).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._checks import check_choice, check_same_length

__all__ = ["LAWS", "ScalingFit", "fit_scaling", "loglog_slope"]

LAWS = {"1": lambda n: 0.0 * n, "sqrt": math.sqrt, "n": lambda n: float(n), "n^2": lambda n: float(n) ** 2}


@dataclass(frozen=True)
class ScalingFit:
    """``value ~= c * f(n) + d`` for the law ``f`` (``"1"``, ``"sqrt"``, ``"n"``, ``"n^2"``).

    ``r2`` is the coefficient of determination (1 when the fit is exact, including a constant
    fitted to constant data). Call it on a depth (or a list of depths) to evaluate the fit.
    """

    law: str
    c: float
    d: float
    r2: float

    def __call__(self, n):
        f = LAWS[self.law]
        return [self.c * f(k) + self.d for k in n] if hasattr(n, "__iter__") else self.c * f(n) + self.d


def _finite_floats(name: str, values) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a sequence of numbers") from e
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must hold finite numbers, got {out}")
    return out


def _check_series(ns, values, *, positive_values: bool = False) -> tuple[list[float], list[float]]:
    """What both fits take: ``ns`` and ``values`` finite numbers of one length, ``ns`` at least two distinct
    positive sizes (and ``values`` positive too with ``positive_values``: their logarithms are taken)."""
    ns, values = _finite_floats("ns", ns), _finite_floats("values", values)
    check_same_length(ns=ns, values=values)
    if any(n <= 0 for n in ns) or (positive_values and any(v <= 0 for v in values)):
        which = "ns and values" if positive_values else "ns"
        raise ValueError(f"{which} must be positive, got ns={ns}, values={values}")
    if len(set(ns)) < 2:
        raise ValueError(f"ns must hold at least 2 distinct sizes, got {ns}")
    return ns, values


def fit_scaling(ns, values, law: str) -> ScalingFit:
    """Least-squares fit of ``values ~= c * f(n) + d`` over the sizes ``ns`` (``"1"``: d only).

    ``ns`` must hold at least two distinct positive sizes, ``values`` as many finite numbers.
    """
    check_choice("law", law, LAWS)
    ns, values = _check_series(ns, values)
    y = torch.tensor(values, dtype=torch.float64)
    if law == "1":
        c, d = 0.0, y.mean().item()
    else:
        f = torch.tensor([LAWS[law](n) for n in ns], dtype=torch.float64)
        A = torch.stack([f, torch.ones_like(f)], dim=1)
        c, d = torch.linalg.lstsq(A, y[:, None]).solution[:, 0].tolist()
    predicted = torch.tensor([c * LAWS[law](n) + d for n in ns], dtype=torch.float64)
    residual = ((y - predicted) ** 2).sum().item()
    total = ((y - y.mean()) ** 2).sum().item()
    r2 = 1.0 - residual / total if total > 0 else (1.0 if residual < 1e-12 * max(1.0, y.abs().max().item()) else 0.0)
    return ScalingFit(law, c, d, r2)


def loglog_slope(ns, values) -> float:
    """Least-squares slope of ``log(value)`` against ``log(n)``: 1 for O(n), 0.5 for O(sqrt n), 0 for O(1).

    ``ns`` and ``values`` must be positive and of the same length, with at least two distinct ``ns``.
    """
    ns, values = _check_series(ns, values, positive_values=True)
    x = torch.log(torch.tensor(ns, dtype=torch.float64))
    y = torch.log(torch.tensor(values, dtype=torch.float64))
    x, y = x - x.mean(), y - y.mean()
    return ((x * y).sum() / (x * x).sum()).item()
