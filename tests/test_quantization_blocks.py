"""llmlab.quantization.blocks: GGUF's Q8_0 / Q4_0 / Q4_1 / Q5_0 against the gguf package's reference, byte for byte.

The reference is ``gguf.quants.quantize`` / ``dequantize`` (the NumPy port of ggml-quants.c that llama.cpp checks
against the C code). Cases ported from llama.cpp's gguf-py/tests/test_quants.py (``do_test``): a 3-D random tensor
(there 8 x 1024 x 1024, here smaller), quantize and dequantize of a single all-zero block; plus the cases that break
from-scratch versions: exact halves (each format's own tie rule), roundf's 0.49999997, outliers, equal values,
negative extremes, values near fp16's limit, and every tensor of the default model (slow).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as ref_dequantize
from gguf.quants import quantize as ref_quantize

from llmlab.quantization import GGUF_TYPES, dequantize_gguf, gguf_type_name, quantize_gguf

TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0"]


def _same(ours: np.ndarray, ref: np.ndarray, name: str) -> None:
    """Equal bytes; on failure, name the first differing block (as test_quants.compare_tensors does)."""
    assert ours.dtype == ref.dtype and ours.shape == ref.shape, (ours.dtype, ours.shape, ref.dtype, ref.shape)
    if not np.array_equal(ours, ref, equal_nan=ours.dtype.kind == "f"):
        size = GGUF_TYPES[name].type_size if ours.dtype == np.uint8 else 32
        bad = np.nonzero((ours.reshape(-1, size) != ref.reshape(-1, size)).any(-1))[0]
        raise AssertionError(f"{name}: {bad.size} blocks differ, first {bad[0]}: {ours.reshape(-1, size)[bad[0]]} "
                             f"vs {ref.reshape(-1, size)[bad[0]]}")


def _both_ways(x: np.ndarray, name: str) -> None:
    qtype = GGMLQuantizationType[name]
    ref = ref_quantize(x, qtype)
    _same(quantize_gguf(x, name), ref, name)
    _same(quantize_gguf(torch.from_numpy(x), name), ref, name)  # a tensor gives the same bytes
    _same(dequantize_gguf(ref, name).numpy(), ref_dequantize(ref, qtype), name)


@pytest.mark.parametrize("name", TYPES)
def test_format_sizes_match_ggml(name):
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[name]]
    assert (GGUF_TYPES[name].block_size, GGUF_TYPES[name].type_size) == (block, size)
    assert GGUF_TYPES[name].bits_per_weight == {"Q8_0": 8.5, "Q4_0": 4.5, "Q4_1": 5.0, "Q5_0": 5.5}[name]


@pytest.mark.parametrize("name", TYPES)
def test_random_3d_tensor(name):  # test_quants.do_test: np.random.randn(8, 1024, 1024)
    x = np.random.default_rng(0).standard_normal((4, 64, 256)).astype(np.float32)
    _both_ways(x, name)


@pytest.mark.parametrize("name", TYPES)
def test_single_zero_block(name):  # test_quants.do_test probes each type with one zero block
    _both_ways(np.zeros(32, dtype=np.float32), name)
    raw = np.zeros(GGUF_TYPES[name].type_size, dtype=np.uint8)
    _same(dequantize_gguf(raw, name).numpy(), ref_dequantize(raw, GGMLQuantizationType[name]), name)


def _hard_rows() -> np.ndarray:
    rng = np.random.default_rng(1)
    rows = [
        np.arange(32) - 15.5,                                   # halves after scaling
        np.r_[127.0, np.arange(-15, 16) + 0.5][:32],             # Q8_0: d = 1, exact halves
        np.r_[-8.0, [2.5, -2.5, 1.5, -1.5, 0.5, -0.5] * 5, 0.0],  # Q4_0: d = 1, exact halves
        np.r_[-16.0, [2.5, -2.5, 1.5, -1.5, 0.5, -0.5] * 5, 0.0],  # Q5_0: d = 1
        np.r_[127.0, 0.49999997, -0.49999997, 1.4999999, [0.0] * 28],  # roundf vs floor(x + 0.5)
        np.full(32, -3.0),                                      # all equal (Q4_1: d = 0)
        np.full(32, 7.0),
        np.r_[1e4, rng.standard_normal(31)],                    # one outlier
        np.r_[-1e4, rng.standard_normal(31)],                   # a negative outlier: Q4_0's signed max
        np.r_[5.0, -5.0, rng.standard_normal(30)],              # a tie for the largest magnitude
        np.linspace(-65000, 65000, 32),                         # near fp16's largest number
        rng.standard_normal(32) * 1e-6,                         # tiny: fp16 scales go subnormal
        rng.standard_normal(32) * 1e-9,                         # tinier: the scale rounds to 0 in fp16
        -np.abs(rng.standard_normal(32)),                       # all negative
        np.abs(rng.standard_normal(32)),                        # all positive
    ]
    return np.stack(rows).astype(np.float32)


@pytest.mark.parametrize("name", TYPES)
def test_hard_blocks(name):
    _both_ways(_hard_rows(), name)


@pytest.mark.parametrize("name", TYPES)
def test_random_scales_per_block(name):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((64, 128)) * np.exp(rng.uniform(-12, 8, size=(64, 4))).repeat(32, 1)).astype(np.float32)
    _both_ways(x, name)


def test_codes_and_layout_by_hand():
    x = torch.tensor([127.0, 2.5, -2.5] + [0.0] * 29)
    raw = quantize_gguf(x, "Q8_0")
    assert raw[:2].view(np.float16)[0] == 1.0 and raw.view(np.int8)[2:5].tolist() == [127, 3, -3]
    raw = quantize_gguf(torch.tensor([-8.0, 2.5] + [0.0] * 30), "Q4_0")
    assert raw[:2].view(np.float16)[0] == 1.0            # d = -8 / -8
    assert raw[2] == (0 | (8 << 4)) and raw[3] == (11 | (8 << 4))  # codes 0 (=-8), 11 (=3); code 16 and 17 are 8 (=0)


def test_accepts_the_gguf_enum_and_any_case():
    x = np.random.default_rng(3).standard_normal((2, 64)).astype(np.float32)
    assert np.array_equal(quantize_gguf(x, GGMLQuantizationType.Q4_1), quantize_gguf(x, "q4_1"))
    assert gguf_type_name(GGMLQuantizationType.Q5_0) == "Q5_0"


def test_device_and_dtype_of_outputs():
    x = torch.randn(3, 64, dtype=torch.float64)
    raw = quantize_gguf(x, "Q4_0")
    assert isinstance(raw, np.ndarray) and raw.dtype == np.uint8 and raw.shape == (3, 36)
    out = dequantize_gguf(torch.from_numpy(raw), "Q4_0")
    assert out.dtype == torch.float32 and out.shape == (3, 64)


def test_finite_input_gives_finite_output():
    x = torch.tensor([[6e4, -6e4] + [1.0] * 30, [1e-45] * 32, [0.0] * 31 + [-1e-30]])
    for name in TYPES:
        assert torch.isfinite(dequantize_gguf(quantize_gguf(x, name), name)).all(), name


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference warns about the overflow
def test_scale_past_fp16_overflows_like_the_reference():
    x = np.r_[3e38, [1.0] * 31].astype(np.float32)[None]  # d = 3e38 / 127 is inf in fp16, as in ggml
    for name in TYPES:
        _both_ways(x, name)


@pytest.mark.slow
def test_every_tensor_of_the_default_model():
    """Every quantized tensor of the default model's file: our decode = gguf's, and re-quantizing it in its own
    format = gguf's bytes (= the file's bytes); one layer also through all four formats."""
    from llmlab.quantization import gguf_tensors, read_gguf_tensor

    n = 0
    for t in gguf_tensors():
        if t.qtype not in GGUF_TYPES:
            continue
        raw, qtype = read_gguf_tensor(t.name)
        raw = np.array(raw)
        ours = dequantize_gguf(raw, qtype)
        decoded = ref_dequantize(raw, GGMLQuantizationType[qtype])
        _same(ours.numpy(), decoded, qtype)
        requant = quantize_gguf(ours, qtype)
        _same(requant, ref_quantize(decoded, GGMLQuantizationType[qtype]), qtype)
        assert np.array_equal(requant, raw), t.name
        if t.name.startswith("blk.7."):
            for other in TYPES:
                _same(quantize_gguf(ours, other), ref_quantize(decoded, GGMLQuantizationType[other]), other)
        n += 1
    assert n == 211
