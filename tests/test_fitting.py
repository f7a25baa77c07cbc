"""llmlab.fitting: scaling-law fits and log-log slopes, against the closed forms and numpy.polyfit."""

import dataclasses
import math

import numpy as np
import pytest

from llmlab.fitting import LAWS, ScalingFit, fit_scaling, loglog_slope

NS = [1, 2, 4, 8, 16, 32]


@pytest.mark.parametrize("law, f", [("sqrt", math.sqrt), ("n", float), ("n^2", lambda n: float(n) ** 2)])
def test_exact_fit_recovers_c_and_d(law, f):
    values = [3.5 * f(n) - 2.0 for n in NS]
    fit = fit_scaling(NS, values, law)
    assert isinstance(fit, ScalingFit) and fit.law == law
    assert fit.c == pytest.approx(3.5, rel=1e-9) and fit.d == pytest.approx(-2.0, abs=1e-9)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit(64) == pytest.approx(3.5 * f(64) - 2.0, rel=1e-9)
    assert fit([1, 4]) == pytest.approx([values[0], values[2]], rel=1e-9)


def test_constant_law_fits_the_mean():
    fit = fit_scaling(NS, [7.0] * len(NS), "1")
    assert (fit.c, fit.d, fit.r2) == (0.0, 7.0, 1.0)
    assert fit(1000) == 7.0
    varying = fit_scaling([1, 2, 3], [1.0, 2.0, 6.0], "1")
    assert varying.d == pytest.approx(3.0) and varying.r2 == pytest.approx(0.0, abs=1e-12)


def test_noisy_fit_equals_numpy_polyfit_and_r2_formula():
    rng = np.random.default_rng(0)
    ns = np.arange(1, 21)
    values = 2.0 * ns + 5.0 + rng.normal(0, 3.0, ns.size)
    fit = fit_scaling(ns.tolist(), values.tolist(), "n")
    c, d = np.polyfit(ns, values, 1)
    assert fit.c == pytest.approx(c, rel=1e-9) and fit.d == pytest.approx(d, rel=1e-9)
    predicted = c * ns + d
    r2 = 1 - ((values - predicted) ** 2).sum() / ((values - values.mean()) ** 2).sum()
    assert fit.r2 == pytest.approx(r2, rel=1e-9) and 0.5 < fit.r2 < 1.0


def test_the_wrong_law_fits_worse():
    values = [float(n) for n in NS]
    assert fit_scaling(NS, values, "n").r2 > fit_scaling(NS, values, "sqrt").r2 > fit_scaling(NS, values, "1").r2


def test_scaling_fit_is_frozen_and_laws_are_listed():
    assert set(LAWS) == {"1", "sqrt", "n", "n^2"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit_scaling(NS, NS, "n").c = 0.0


@pytest.mark.parametrize("values, slope", [
    ([3.0 * n for n in NS], 1.0), ([3.0 * math.sqrt(n) for n in NS], 0.5), ([2.5] * len(NS), 0.0),
    ([0.1 * n * n for n in NS], 2.0),
])
def test_loglog_slope(values, slope):
    assert loglog_slope(NS, values) == pytest.approx(slope, abs=1e-12)


def test_loglog_slope_equals_polyfit_on_noisy_data():
    rng = np.random.default_rng(1)
    ns = np.array([2.0, 3.0, 5.0, 9.0, 17.0])
    values = ns**0.7 * np.exp(rng.normal(0, 0.1, ns.size))
    assert loglog_slope(ns.tolist(), values.tolist()) == pytest.approx(np.polyfit(np.log(ns), np.log(values), 1)[0])


@pytest.mark.parametrize("call, match", [
    (lambda: fit_scaling([1, 2, 3], [1.0, 2.0], "n"), "same length"),
    (lambda: fit_scaling([4], [1.0], "n"), "2 distinct"),
    (lambda: fit_scaling([4, 4, 4], [1.0, 2.0, 3.0], "n"), "2 distinct"),
    (lambda: fit_scaling([0, 1, 2], [1.0, 2.0, 3.0], "n"), "positive"),
    (lambda: fit_scaling([-1, 1, 2], [1.0, 2.0, 3.0], "sqrt"), "positive"),
    (lambda: fit_scaling([1, 2, 3], [1.0, float("nan"), 3.0], "n"), "finite"),
    (lambda: fit_scaling([1, 2, float("inf")], [1.0, 2.0, 3.0], "n"), "finite"),
    (lambda: fit_scaling([1, 2, 3], [1.0, 2.0, 3.0], "n^3"), "law"),
    (lambda: loglog_slope([1, 2, 3], [1.0, 2.0]), "same length"),
    (lambda: loglog_slope([2], [1.0]), "2 distinct"),
    (lambda: loglog_slope([2, 2], [1.0, 2.0]), "2 distinct"),
    (lambda: loglog_slope([0, 1, 2], [1.0, 2.0, 3.0]), "positive"),
    (lambda: loglog_slope([1, 2, 3], [1.0, 0.0, 3.0]), "positive"),
    (lambda: loglog_slope([1, 2, 3], [1.0, -2.0, 3.0]), "positive"),
    (lambda: loglog_slope([1, 2, 3], [1.0, float("nan"), 3.0]), "finite"),
])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call, match", [
    (lambda: fit_scaling([1, 2], ["a", "b"], "n"), "values"),
    (lambda: fit_scaling(3, [1.0], "n"), "ns"),
    (lambda: loglog_slope([1, 2], None), "values"),
])
def test_bad_types_raise_type_error(call, match):
    with pytest.raises(TypeError, match=match):
        call()
