"""llmlab.precision.formats: lost updates and float formats, against NumPy's float16 and torch.finfo."""

import numpy as np
import pytest
import torch

from llmlab.precision import FloatFormat, float_format, smallest_surviving_update, update_survives

FP16, BF16, FP32 = torch.float16, torch.bfloat16, torch.float32


@pytest.mark.parametrize("dtype, expected", [(FP16, False), (BF16, False), (FP32, True), ("fp16", False),
                                             ("half", False), ("bfloat16", False), ("float32", True)])
def test_one_plus_1e4(dtype, expected):
    assert update_survives(1.0, 1e-4, dtype) is expected


def test_round_half_to_even_cases():
    # fp16: ulp(1) = 2^-10. Exactly half an ulp ties to the even neighbour, which is 1 itself.
    assert not update_survives(1.0, 2**-11, FP16)
    assert update_survives(1.0, 2**-11 * (1 + 2**-10), FP16)
    # 1 + 2^-10 has an odd significand: the same tie now rounds *up* (to 1 + 2^-9).
    assert update_survives(1 + 2**-10, 2**-11, FP16)
    assert not update_survives(1.0, 2**-8, BF16)
    assert update_survives(1.0, 2**-8 * (1 + 2**-7), BF16)
    assert update_survives(1.0, 1e-3, FP16) and not update_survives(1.0, 1e-3, BF16)
    # Below 1 the ulp halves: a downward update of 2^-12 ties, just above it survives.
    assert not update_survives(1.0, -(2**-12), FP16)
    assert update_survives(1.0, -(2**-12) * (1 + 2**-10), FP16)


def test_update_survives_matches_numpy_float16():
    rng = np.random.default_rng(0)
    weights = rng.uniform(-4, 4, 500)
    updates = weights * 10 ** rng.uniform(-5, -2, 500) * rng.choice([-1, 1], 500)
    ours = update_survives(torch.tensor(weights), torch.tensor(updates), FP16)
    w16, u16 = weights.astype(np.float16), updates.astype(np.float16)
    reference = (w16 + u16) != w16
    assert ours.dtype == torch.bool and ours.shape == (500,)
    assert ours.numpy().tolist() == reference.tolist()
    assert 0.1 < reference.mean() < 0.9  # both outcomes are exercised


def test_update_survives_broadcasts_a_number_against_a_tensor():
    out = update_survives(torch.ones(3), torch.tensor([1e-4, 1e-3, 1e-2]), FP16)
    assert out.tolist() == [False, True, True]
    assert update_survives(torch.tensor(1.0), 1e-3, FP16) is True  # 0-d: a Python bool


@pytest.mark.parametrize("dtype, bits", [(FP16, 10), (BF16, 7), (FP32, 23)])
def test_smallest_surviving_update_at_one(dtype, bits):
    r = smallest_surviving_update(dtype)
    # The next float above half an ulp: 2^-(bits+1) (1 + 2^-bits), not 2^-(bits+1) itself.
    assert r == 2.0 ** -(bits + 1) * (1 + 2.0**-bits)
    assert update_survives(1.0, r, dtype) and not update_survives(1.0, 2.0 ** -(bits + 1), dtype)


def test_smallest_surviving_update_odd_significand_and_random_weights():
    w = 1 + 2**-10
    assert smallest_surviving_update(FP16, w) == pytest.approx(2**-11 / w, rel=1e-12)
    rng = np.random.default_rng(1)
    for w in rng.uniform(0.01, 100, 25):
        w16 = np.float16(w)
        u = np.float16(smallest_surviving_update(FP16, float(w)) * float(w16))
        below = np.nextafter(u, np.float16(0))
        assert w16 + u != w16 and w16 + below == w16
        assert 2**-12 <= float(u) / float(w16) <= 2**-10


def test_float_format_table():
    f16, b16, f32 = float_format(FP16), float_format("bf16"), float_format(FP32)
    assert isinstance(f16, FloatFormat) and f16.name == "float16" and f16.bits == 16
    assert (f16.exponent_bits, f16.mantissa_bits, f16.max, f16.min_normal, f16.min_subnormal, f16.eps) == (
        5, 10, 65504.0, 2.0**-14, 2.0**-24, 2.0**-10)
    assert (b16.exponent_bits, b16.mantissa_bits, b16.min_normal, b16.eps) == (8, 7, 2.0**-126, 2.0**-7)
    assert b16.max == pytest.approx(3.3895e38, rel=1e-4) and b16.min_subnormal == 2.0**-133
    assert (f32.exponent_bits, f32.mantissa_bits, f32.eps) == (8, 23, 2.0**-23)
    assert float(torch.tensor(f16.min_subnormal, dtype=FP16)) == f16.min_subnormal
    assert float(torch.tensor(f16.min_subnormal / 2, dtype=FP16)) == 0.0  # ties to even: flushed
    f64 = float_format("fp64")
    assert (f64.bits, f64.exponent_bits, f64.mantissa_bits) == (64, 11, 52)
    assert f64.min_subnormal == float(np.finfo(np.float64).smallest_subnormal)


def test_float_format_is_frozen():
    with pytest.raises(AttributeError):
        float_format(FP16).eps = 1.0


# --- bad inputs --------------------------------------------------------------------------------


@pytest.mark.parametrize("call, match", [
    (lambda: update_survives(1.0, 1e-4, torch.int32), "dtype"),
    (lambda: update_survives(1.0, 1e-4, "fp8"), "dtype"),
    (lambda: update_survives(float("inf"), 1e-4, FP16), "weight"),
    (lambda: update_survives(1e6, 1e-4, FP16), "weight"),  # inf in fp16
    (lambda: update_survives(float("nan"), 1e-4, FP16), "weight"),
    (lambda: update_survives(1.0, float("nan"), FP16), "update"),
    (lambda: smallest_surviving_update(FP16, -1.0), "weight"),
    (lambda: smallest_surviving_update(FP16, 0.0), "weight"),
    (lambda: smallest_surviving_update(FP16, 1e6), "weight"),  # inf in fp16
    (lambda: smallest_surviving_update(FP16, 1e-30), "weight"),  # 0 in fp16
    (lambda: smallest_surviving_update("int8"), "dtype"),
    (lambda: float_format(torch.int32), "dtype"),
])
def test_bad_values_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call, match", [
    (lambda: update_survives("1", 1e-4, FP16), "weight"),
    (lambda: update_survives(True, 1e-4, FP16), "weight"),
    (lambda: update_survives(1.0, [1e-4], FP16), "update"),
    (lambda: smallest_surviving_update(FP16, "1"), "weight"),
    (lambda: smallest_surviving_update(FP16, True), "weight"),
    (lambda: float_format(16), "dtype"),
])
def test_bad_types_raise_type_error(call, match):
    with pytest.raises(TypeError, match=match):
        call()
