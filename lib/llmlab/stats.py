"""Intervals for the comparisons the notebooks make, so that an ordering is claimed only when the
sample supports it (a shared helper: topic modules and notebooks import it).

:func:`wilson_interval` is the Wilson score interval of a proportion — an accuracy of ``k``
correct answers out of ``n`` — the interval ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``
gives (``tests/test_stats.py`` holds the two side by side). Unlike the textbook ``p ± z√(p(1-p)/n)``
it stays inside [0, 1] and does not shrink to a point at 0/n or n/n, which is where small
evaluation sets usually land. :func:`sign_test` asks whether one model beats another on more paired
examples than chance would give (``scipy.stats.binomtest(k, n, 0.5)``'s p-value). :func:`paired_test`
is the same question for two classifiers scored on the same examples: only the examples where they
disagree carry information, and it is the two-sided sign test on those (the exact McNemar test, as
``statsmodels``' ``mcnemar(exact=True)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from ._checks import check_choice, check_float, check_int

__all__ = ["wilson_interval", "sign_test", "PairedTest", "paired_test", "paired_t_interval"]

#: Student-t 97.5 % quantiles for 1 ... 30 degrees of freedom (scipy.stats.t.ppf(0.975, df), to 3 decimals).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131,
         2.12, 2.11, 2.101, 2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042)


def _check_count(name: str, count, n) -> tuple[int, int]:
    """``count`` of ``n`` trials, as both tests take them: ``n`` >= 1, ``count`` in [0, n]."""
    n = check_int("n", n, low=1)
    return check_int(name, count, low=0, high=n), n


def wilson_interval(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval ``(low, high)`` for a proportion of ``successes`` out of ``n`` trials.

    With p̂ = k/n and z the two-sided normal quantile of ``confidence`` (1.96 for 0.95):

        centre = (p̂ + z²/2n) / (1 + z²/n),   half-width = z √(p̂(1-p̂)/n + z²/4n²) / (1 + z²/n)

    (Wilson, 1927). ``successes`` in [0, n], ``n`` >= 1, ``confidence`` in (0, 1).
    """
    successes, n = _check_count("successes", successes, n)
    confidence = check_float("confidence", confidence, low=0, high=1, low_open=True, high_open=True)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)   # exactly 0 at k = 0 (rounding would leave 1e-17)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def sign_test(wins: int, n: int, *, alternative: str = "greater") -> float:
    """The sign test's p-value: ``wins`` of ``n`` paired comparisons went one way; under "no difference"
    each goes either way with probability 1/2.

    ``alternative="greater"``: P(X >= wins) for X ~ Binomial(n, 1/2); ``"two-sided"``: twice the smaller
    tail, at most 1. ``wins`` in [0, n], ``n`` >= 1 (drop ties before counting).
    """
    wins, n = _check_count("wins", wins, n)
    alternative = check_choice("alternative", alternative, ("greater", "two-sided"))
    upper = sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n
    if alternative == "greater":
        return upper
    lower = sum(math.comb(n, k) for k in range(0, wins + 1)) / 2**n
    return min(1.0, 2 * min(upper, lower))


@dataclass(frozen=True)
class PairedTest:
    """Two classifiers on the same ``n`` examples: ``only_first`` examples only the first gets right,
    ``only_second`` only the second, and the exact two-sided McNemar ``p_value`` for "equally accurate"."""

    n: int
    only_first: int
    only_second: int
    p_value: float


def paired_test(first_correct, second_correct) -> PairedTest:
    """Exact McNemar test of two classifiers from their per-example correctness (two equal-length
    sequences of bools, or 0/1): :func:`sign_test` (two-sided) on the b examples only the first gets
    right against the c only the second does (p = 1 when b = c = 0)."""
    if isinstance(first_correct, (str, bytes)) or isinstance(second_correct, (str, bytes)):
        raise TypeError("first_correct and second_correct must be sequences of bools, not strings")
    first, second = [bool(x) for x in first_correct], [bool(x) for x in second_correct]
    if len(first) != len(second) or not first:
        raise ValueError(f"first_correct and second_correct must be non-empty and of equal length, got {len(first)} "
                         f"and {len(second)}")
    b = sum(f and not s for f, s in zip(first, second))
    c = sum(s and not f for f, s in zip(first, second))
    p = 1.0 if b + c == 0 else sign_test(b, b + c, alternative="two-sided")
    return PairedTest(len(first), b, c, p)


def paired_t_interval(differences) -> tuple[float, float, float]:
    """Mean of paired ``differences`` (e.g. loss of method A minus method B, one per seed or data stream)
    and its two-sided 95 % Student-t interval: ``(mean, low, high)`` with half-width t₀.₉₇₅(n−1)·s/√n.
    Needs 2 to 31 differences (the t quantiles are tabulated to 3 decimals)."""
    d = [float(v) for v in differences]
    n = check_int("len(differences)", len(d), low=2, high=len(_T975) + 1)
    mean = sum(d) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1))
    half = _T975[n - 2] * sd / math.sqrt(n)
    return mean, mean - half, mean + half
