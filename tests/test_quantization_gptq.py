"""llmlab.quantization.gptq against a direct implementation of Optimal Brain Quantization's update.

The reference below re-derives the algorithm without GPTQ's two tricks (the Cholesky rows of H^-1 and lazy block
updates): after rounding column i it applies err / [H^-1]_ii * [H^-1]_ij to every later column j and removes i from
H^-1 by one step of Gaussian elimination, exactly as in Frantar et al. 2023, eq. (2)-(3) (the same as
IST-DASLab/gptq gptq.py GPTQ.fasterquant with act_order off). Expected values come from running it.
"""

from __future__ import annotations

import pytest
import torch

from llmlab.quantization import calibration_hessian, fake_quantize, gptq_quantize, layer_output_error
from llmlab.quantization.gptq import _fit_grid, _round_to_grid


def obq_reference(W, H, bits, group_size, symmetric=False, damp=0.01):
    W, H = W.double().clone(), H.double().clone()
    n = H.shape[0]
    H += damp * torch.diag(H).mean() * torch.eye(n, dtype=H.dtype)
    Hinv, Q = torch.linalg.inv(H), torch.zeros_like(W)
    for i in range(n):
        if i % group_size == 0:
            scale, minimum = _fit_grid(W[:, i:i + group_size], bits, symmetric)
        Q[:, i] = _round_to_grid(W[:, i], scale, minimum, bits)
        err = (W[:, i] - Q[:, i]) / Hinv[i, i]
        W[:, i + 1:] -= err[:, None] * Hinv[i, i + 1:][None, :]
        Hinv = Hinv - Hinv[:, i:i + 1] @ Hinv[i:i + 1, :] / Hinv[i, i]
    return Q


@pytest.fixture(scope="module")
def layer():
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(80, 80, generator=gen, dtype=torch.float64)
    X = torch.randn(400, 80, generator=gen, dtype=torch.float64) @ mix * 0.3   # correlated inputs
    X[:, 5] *= 20                                                               # an outlier dimension
    W = torch.randn(24, 80, generator=gen, dtype=torch.float64)
    return W, X, calibration_hessian(X)


@pytest.mark.parametrize("bits, group_size, symmetric", [(3, 32, False), (4, 80, True), (2, 16, False), (3, 48, False)])
def test_matches_the_direct_obq_update(layer, bits, group_size, symmetric):
    W, _, H = layer
    ref = obq_reference(W, H, bits, group_size, symmetric)
    for block_size in (1, 7, 32, 128):  # lazy batching must not change the result
        got = gptq_quantize(W, H, bits=bits, group_size=group_size, symmetric=symmetric, block_size=block_size)
        torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-5)


def test_identity_hessian_is_round_to_nearest(layer):
    W, _, _ = layer
    got = gptq_quantize(W, torch.eye(80, dtype=torch.float64), bits=3, group_size=32)
    assert torch.equal(got, fake_quantize(W.float(), bits=3, granularity=32, symmetric=False))


def test_lower_output_error_than_rtn_on_the_calibration_inputs(layer):
    W, X, H = layer
    gptq = gptq_quantize(W, H, bits=3, group_size=32)
    rtn = fake_quantize(W.float(), bits=3, granularity=32, symmetric=False)
    assert layer_output_error(W, gptq, X) < 0.8 * layer_output_error(W, rtn, X)


def test_dead_inputs_give_zero_columns(layer):
    W, X, _ = layer
    X = X.clone()
    X[:, 3] = 0
    got = gptq_quantize(W, calibration_hessian(X), bits=4, group_size=80, symmetric=True)  # 0 is on the grid
    assert torch.equal(got[:, 3], torch.zeros(24)) and torch.isfinite(got).all()


def test_hessian_formula():
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    rows = x.reshape(-1, 4)
    torch.testing.assert_close(calibration_hessian(x), 2 * rows.T @ rows / 10)
