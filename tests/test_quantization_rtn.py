"""llmlab.quantization.rtn: round-to-nearest with scales, against torch's own quantizers and by-hand formulas.

Peer: ``torch.fake_quantize_per_tensor_affine`` / ``torch.fake_quantize_per_channel_affine`` (PyTorch's quantization
simulation, used by QAT): with the same scale, a symmetric quantizer must give the same values (up to torch's
half-to-even rounding, which both use). Cases from pytorch/pytorch test/quantization/core/test_workflow_ops.py
(TestFakeQuantizeOps: per-tensor and per-channel forward against a reference, zero point, quant_min/max clamping).
"""

from __future__ import annotations

import math

import pytest
import torch

from llmlab.quantization import fake_quantize, pack_bits, quantize_rtn, rtn_bits_per_weight, unpack_bits


def test_symmetric_per_tensor_matches_torch_fake_quantize():
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(0))
    for bits in (2, 3, 4, 8):
        qt = quantize_rtn(w, bits=bits, granularity="tensor")
        q_max = 2 ** (bits - 1) - 1
        scale = float(qt.scale.float())
        ref = torch.fake_quantize_per_tensor_affine(w, scale, 0, -q_max, q_max)
        assert torch.equal(qt.dequantize(), ref), bits


def test_symmetric_per_channel_matches_torch_fake_quantize():
    w = torch.randn(8, 96, generator=torch.Generator().manual_seed(1)) * torch.logspace(-3, 1, 8)[:, None]
    qt = quantize_rtn(w, bits=4, granularity="channel")
    ref = torch.fake_quantize_per_channel_affine(w, qt.scale.float()[:, 0], torch.zeros(8, dtype=torch.int32), 0, -7, 7)
    assert torch.equal(qt.dequantize(), ref)


def test_asymmetric_matches_torch_with_a_float_minimum():
    # torch's affine quantizer with an integer zero point z: x_hat = (clamp(round(x/s) + z) - z) * s; with m = -z*s
    # exactly representable the two grids coincide.
    w = torch.rand(4, 32, generator=torch.Generator().manual_seed(2)) * 15 - 6  # values in [-6, 9]
    w[:, 0], w[:, 1] = -6.0, 9.0                                                 # s = 1, m = -6, z = 6
    qt = quantize_rtn(w, bits=4, granularity=32, symmetric=False)
    assert torch.equal(qt.scale.float(), torch.ones(4, 1)) and torch.equal(qt.minimum.float(), torch.full((4, 1), -6.0))
    ref = torch.fake_quantize_per_tensor_affine(w, 1.0, 6, 0, 15)
    assert torch.equal(qt.dequantize(), ref)


def test_error_bounded_by_half_a_step():
    w = torch.randn(32, 200, generator=torch.Generator().manual_seed(3))
    for sym in (True, False):
        for g in (7, 32, 64, "channel"):
            qt = quantize_rtn(w, bits=3, granularity=g, symmetric=sym)
            n = qt.group_size
            err = (qt.dequantize() - w).abs()
            pad = -200 % n
            err = torch.cat([err, err[:, -1:].expand(-1, pad)], 1).reshape(-1, n)
            groups = torch.cat([w, w[:, -1:].expand(-1, pad)], 1).reshape(-1, n)
            # fp16 storage of the scale and minimum may move the grid by ~2^-11 of the group's range
            slack = 2.0 ** -10 * groups.abs().amax(-1, keepdim=True)
            assert (err <= qt.scale.float() / 2 + slack).all(), (sym, g)


def test_group_padding_and_shapes():
    w = torch.randn(3, 100)
    qt = quantize_rtn(w, bits=4, granularity=32)
    assert qt.codes.shape == (3 * 4, 32) and qt.dequantize().shape == (3, 100)
    assert qt.bits_per_weight == pytest.approx(4 + 16 * 12 / 300)
    assert qt.bits_per_weight == pytest.approx(rtn_bits_per_weight(4, 32, (3, 100)))
    # a short last group is padded with its last weight: it equals quantizing that group alone
    alone = quantize_rtn(w[:, 96:], bits=4, granularity=4)
    assert torch.equal(qt.dequantize()[:, 96:], alone.dequantize())
    assert quantize_rtn(torch.randn(5), bits=8, granularity="tensor").dequantize().shape == (5,)


def test_bits_per_weight_formula():
    assert rtn_bits_per_weight(4, 32, (10, 64)) == 4.5
    assert rtn_bits_per_weight(4, 32, (10, 64), symmetric=False) == 5.0
    assert rtn_bits_per_weight(3, 128, (1536, 576), symmetric=False) == pytest.approx(3 + 32 * 5 / 576)
    assert rtn_bits_per_weight(8, "channel", (576, 576)) == pytest.approx(8 + 16 / 576)
    assert rtn_bits_per_weight(4, "tensor", (100, 100)) == pytest.approx(4 + 16 / 10000)


def test_zero_and_constant_groups():
    w = torch.zeros(2, 32)
    w[1] = 5.0
    for sym in (True, False):
        out = fake_quantize(w, bits=2, granularity=32, symmetric=sym)
        assert torch.isfinite(out).all() and torch.equal(out, w)


def test_outlier_stretches_only_its_group():
    w = torch.randn(1, 128, generator=torch.Generator().manual_seed(4)) * 0.1
    w_out = w.clone()
    w_out[0, 0] = 10.0
    err = lambda a: (fake_quantize(a, bits=4, granularity=32) - a).abs()[0]
    base, spiked = err(w), err(w_out)
    assert spiked[1:32].mean() > 5 * base[1:32].mean()
    assert torch.equal(spiked[32:], base[32:])


def test_dtype_is_kept():
    w = torch.randn(4, 32, dtype=torch.float64)
    assert fake_quantize(w, bits=4).dtype == torch.float64


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_unpack_round_trip(bits):
    codes = torch.randint(0, 2 ** bits, (101,), generator=torch.Generator().manual_seed(bits))
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(101 * bits / 8)
    assert torch.equal(unpack_bits(packed, bits, 101), codes)


def test_pack_layout_is_little_endian():
    assert pack_bits(torch.tensor([1, 2]), 4).tolist() == [0x21]        # code 0 low nibble, code 1 high
    assert pack_bits(torch.tensor([5, 3, 1]), 3).tolist() == [0b01011101, 0b0]  # 101 | 011 | 001 -> bits 0..8
    assert pack_bits(torch.tensor([255, 0]), 8).tolist() == [255, 0]


def test_nbytes():
    qt = quantize_rtn(torch.randn(2, 96), bits=3, granularity=32, symmetric=False)
    assert qt.nbytes == math.ceil(3 * 192 / 8) + 2 * 6 * 2
