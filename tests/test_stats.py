"""llmlab.stats: the Wilson interval against scipy's, and its textbook properties."""

import pytest
from scipy.stats import binomtest

from llmlab.stats import sign_test, wilson_interval


@pytest.mark.parametrize("k, n", [(0, 1), (1, 1), (0, 8), (2, 8), (6, 8), (8, 8), (3, 16), (12, 16), (50, 100),
                                  (1, 1000), (999, 1000)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_matches_scipy_wilson(k, n, confidence):
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    low, high = wilson_interval(k, n, confidence=confidence)
    assert low == pytest.approx(ci.low, abs=1e-12) and high == pytest.approx(ci.high, abs=1e-12)


def test_textbook_values_and_properties():
    # Wilson's interval for 6/8 at 95 %: about (0.41, 0.93) (Newcombe 1998, method 3)
    low, high = wilson_interval(6, 8)
    assert low == pytest.approx(0.4093, abs=1e-4) and high == pytest.approx(0.9285, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 10)[1] > 0.2   # never a point at 0/n
    a, b = wilson_interval(3, 10), wilson_interval(7, 10)
    assert a[0] == pytest.approx(1 - b[1]) and a[1] == pytest.approx(1 - b[0])   # symmetric in k <-> n - k
    assert wilson_interval(30, 100)[1] - wilson_interval(30, 100)[0] < a[1] - a[0]  # more data, narrower
    assert wilson_interval(3, 10, confidence=0.99)[1] > a[1]                       # more confidence, wider


def test_bad_inputs():
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(9, 8)
    with pytest.raises(ValueError, match="n"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 2, confidence=1.0)
    with pytest.raises(TypeError, match="successes"):
        wilson_interval(1.5, 2)


@pytest.mark.parametrize("k, n", [(0, 1), (1, 1), (12, 12), (11, 12), (6, 12), (3, 12), (0, 12), (30, 40)])
def test_sign_test_matches_scipy_binomtest(k, n):
    assert sign_test(k, n) == pytest.approx(binomtest(k, n, 0.5, alternative="greater").pvalue, rel=1e-12)
    assert sign_test(k, n, alternative="two-sided") == pytest.approx(binomtest(k, n, 0.5).pvalue, rel=1e-12)


def test_sign_test_bad_inputs():
    with pytest.raises(ValueError, match="wins"):
        sign_test(5, 4)
    with pytest.raises(ValueError, match="alternative"):
        sign_test(1, 4, alternative="less")


def test_paired_t_interval_matches_scipy():
    from scipy import stats as sps

    from llmlab.stats import paired_t_interval
    for d in ([0.04, 0.042, 0.064, 0.05, 0.06], [1.0, -2.0], [0.3, 0.1, -0.2, 0.5, 0.0, 0.2, 0.1, 0.4] * 3):
        mean, low, high = paired_t_interval(d)
        ci = sps.ttest_1samp(d, 0).confidence_interval(0.95)
        assert mean == pytest.approx(sum(d) / len(d)) and low == pytest.approx(ci.low, abs=2e-3 * (high - low))
        assert high == pytest.approx(ci.high, abs=2e-3 * (high - low))
    with pytest.raises(ValueError, match="len\\(differences\\)"):
        paired_t_interval([1.0])
