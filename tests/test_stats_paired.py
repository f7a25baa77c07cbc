"""llmlab.stats.paired_test (issue 22, notebook 09 and 11): the exact McNemar test against scipy's binomial test.

(The Wilson interval's own tests are in tests/test_stats.py.)"""

import pytest
from scipy.stats import binomtest

from llmlab.stats import paired_test, wilson_interval


@pytest.mark.parametrize("b, c", [(0, 0), (1, 0), (0, 5), (3, 3), (8, 1), (1, 8), (10, 4), (25, 10), (40, 60)])
def test_matches_scipy_exact_binomial(b, c):
    both, neither = 7, 2
    first = [1] * both + [1] * b + [0] * c + [0] * neither
    second = [1] * both + [0] * b + [1] * c + [0] * neither
    result = paired_test(first, second)
    assert (result.n, result.only_first, result.only_second) == (both + b + c + neither, b, c)
    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert result.p_value == pytest.approx(expected, rel=1e-12)


def test_textbook_case_and_symmetry():
    # 8 discordant pairs all one way: p = 2 / 2**8 (exact McNemar)
    assert paired_test([1] * 8, [0] * 8).p_value == pytest.approx(2 / 256)
    a, b = [1, 1, 0, 1, 0, 1], [0, 1, 1, 0, 0, 0]
    assert paired_test(a, b).p_value == paired_test(b, a).p_value
    assert paired_test([True, False], [True, False]).p_value == 1.0   # agreement carries no evidence


def test_wilson_interval_is_importable_here_too():
    low, high = wilson_interval(16, 32)
    assert low < 0.5 < high


def test_bad_inputs():
    with pytest.raises(ValueError, match="equal length"):
        paired_test([1, 0], [1])
    with pytest.raises(ValueError, match="non-empty"):
        paired_test([], [])
    with pytest.raises(TypeError, match="strings"):
        paired_test("1010", "1100")
