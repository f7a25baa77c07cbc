"""llmlab.decoding.roofline: bytes and FLOPs of one decoded token, counted by hand on tiny models;
the GPU data-sheet table; the bandwidth measurement; DecodeRoofline's arithmetic."""

import copy
import dataclasses
import math

import pytest
import torch

from llmlab.decoding import GPU_PEAKS, DecodeRoofline, decode_roofline, known_gpu_peak, measure_bandwidth

# ---------------------------------------------------------------------------------------------
# decode_roofline, by hand
# ---------------------------------------------------------------------------------------------

# Tiny Llama of conftest: vocab 97, d 32, MLP 64, 2 layers, 4 heads of head_dim 8, 2 KV heads.
LLAMA_EMBED = 97 * 32  # 3104: the input embedding, and the LM head when tied
LLAMA_LAYER_MATMUL = 32 * 32 + 32 * 16 + 32 * 16 + 32 * 32 + 3 * 32 * 64  # q, k, v (2 KV heads), o, gate/up/down
LLAMA_LAYER_NORMS = 2 * 32
LLAMA_FINAL_NORM = 32


def _attention_flops(n_layers, n_heads, head_dim, context_len):
    return 4 * n_layers * n_heads * head_dim * context_len  # q.k and attention.v: 2 FLOPs per multiply-add


def _kv_elements(n_layers, n_kv_heads, head_dim, context_len):
    return 2 * n_layers * n_kv_heads * head_dim * context_len  # keys and values


def test_tiny_llama_tied_by_hand(tiny_llama):
    assert LLAMA_LAYER_MATMUL == 9216
    n_weights = LLAMA_EMBED + 2 * (LLAMA_LAYER_MATMUL + LLAMA_LAYER_NORMS) + LLAMA_FINAL_NORM
    assert n_weights == sum(p.numel() for p in tiny_llama.parameters()) == 21696
    roof = decode_roofline(tiny_llama, 10, bandwidth=1e9)
    assert roof.weight_bytes == 4 * 21696  # float32, the tied embedding/LM head counted once
    assert roof.kv_bytes == 4 * _kv_elements(2, 2, 8, 10) == 2560
    # Matmuls: the layers' projections and the LM head (the tied embedding, used as a matrix).
    assert roof.flops == 2 * (2 * LLAMA_LAYER_MATMUL + LLAMA_EMBED) + _attention_flops(2, 4, 8, 10) == 45632
    empty = decode_roofline(tiny_llama, 0, bandwidth=1e9)
    assert empty.kv_bytes == 0 and empty.flops == 2 * (2 * LLAMA_LAYER_MATMUL + LLAMA_EMBED)


def test_tiny_llama_untied_by_hand(make_tiny_llama):
    model = make_tiny_llama(tie_word_embeddings=False)
    assert sum(p.numel() for p in model.parameters()) == 21696 + LLAMA_EMBED
    roof = decode_roofline(model, 10, bandwidth=1e9)
    # The untied input embedding is a lookup: one row (32 numbers) is read per token, no FLOPs.
    assert roof.weight_bytes == 4 * (21696 + 32)
    assert roof.flops == 2 * (2 * LLAMA_LAYER_MATMUL + LLAMA_EMBED) + _attention_flops(2, 4, 8, 10)
    assert roof.kv_bytes == 2560


def test_tiny_gpt2_by_hand(tiny_gpt2):
    # vocab 97, 64 positions, d 32, MLP 128, 2 layers, 4 heads of head_dim 8 (no GQA), biases.
    layer_matmul = 32 * 96 + 32 * 32 + 32 * 128 + 128 * 32  # c_attn (q, k, v), c_proj, c_fc, mlp c_proj
    layer_other = 2 * 2 * 32 + 96 + 32 + 128 + 32  # two LayerNorms (weight, bias) and the four biases
    wte, wpe, ln_f = 97 * 32, 64 * 32, 2 * 32
    n_weights = wte + wpe + 2 * (layer_matmul + layer_other) + ln_f
    assert n_weights == sum(p.numel() for p in tiny_gpt2.parameters()) == 30624
    roof = decode_roofline(tiny_gpt2, 10, bandwidth=1e9)
    # The tied wte is the LM head (read whole, a matmul); the position table is a lookup (one row).
    assert roof.weight_bytes == 4 * (n_weights - wpe + 32)
    assert roof.flops == 2 * (2 * layer_matmul + wte) + _attention_flops(2, 4, 8, 10) == 57920
    assert roof.kv_bytes == 4 * _kv_elements(2, 4, 8, 10) == 5120


def test_dtype_override_scales_bytes_not_flops(tiny_llama):
    fp32 = decode_roofline(tiny_llama, 16, bandwidth=1e9)
    for dtype in (torch.bfloat16, "bf16", "float16"):
        half = decode_roofline(tiny_llama, 16, bandwidth=1e9, dtype=dtype)
        assert 2 * half.weight_bytes == fp32.weight_bytes and 2 * half.kv_bytes == fp32.kv_bytes
        assert half.flops == fp32.flops
    bf16_model = decode_roofline(copy.deepcopy(tiny_llama).to(torch.bfloat16), 16, bandwidth=1e9)
    assert bf16_model.weight_bytes == fp32.weight_bytes // 2  # the model's own dtype by default


def test_decode_roofline_bad_input(tiny_llama):
    for kwargs, error, match in [
        (dict(context_len=-1, bandwidth=1e9), ValueError, "context_len"),
        (dict(context_len=1.5, bandwidth=1e9), TypeError, "context_len"),
        (dict(context_len=8, bandwidth=0), ValueError, "bandwidth"),
        (dict(context_len=8, bandwidth=-1e9), ValueError, "bandwidth"),
        (dict(context_len=8, bandwidth="fast"), TypeError, "bandwidth"),
        (dict(context_len=8, bandwidth=1e9, peak_flops=0), ValueError, "peak_flops"),
        (dict(context_len=8, bandwidth=1e9, peak_flops=-1.0), ValueError, "peak_flops"),
        (dict(context_len=8, bandwidth=1e9, peak_flops=math.inf), ValueError, "peak_flops"),
        (dict(context_len=8, bandwidth=1e9, dtype="int8"), ValueError, "dtype"),
    ]:
        with pytest.raises(error, match=match):
            decode_roofline(tiny_llama, **kwargs)
    with pytest.raises(TypeError, match="model"):
        decode_roofline("SmolLM2", 8, bandwidth=1e9)


# ---------------------------------------------------------------------------------------------
# DecodeRoofline
# ---------------------------------------------------------------------------------------------


def test_decode_roofline_properties():
    roof = DecodeRoofline(weight_bytes=1000, kv_bytes=200, flops=2400.0, bandwidth=1200.0, peak_flops=4800.0)
    assert roof.bytes_per_token == 1200
    assert roof.intensity == 2.0
    assert roof.t_memory == 1.0 and roof.t_compute == 0.5
    assert roof.floor_tokens_per_s == 1.0  # memory-bound: the slower roof sets the floor
    compute_bound = dataclasses.replace(roof, peak_flops=1200.0)
    assert compute_bound.t_compute == 2.0 and compute_bound.floor_tokens_per_s == 0.5
    no_peak = dataclasses.replace(roof, peak_flops=None)
    assert no_peak.t_compute is None and no_peak.floor_tokens_per_s == 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        roof.bandwidth = 1.0


# ---------------------------------------------------------------------------------------------
# known_gpu_peak, measure_bandwidth
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,key", [
    ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H100 80GB HBM3", "H100"),
    ("NVIDIA H100 NVL", "H100 NVL"),
    ("NVIDIA H200", "H200"),
    ("NVIDIA A100-PCIE-40GB", "A100-PCIE-40GB"),
    ("NVIDIA A100-SXM4-80GB", "A100"),
    ("NVIDIA A10", "A10"),
    ("NVIDIA L40S", "L40S"),
    ("NVIDIA L4", "L4"),
    ("Tesla T4", "T4"),
    ("tesla v100-sxm2-16gb", "V100"),  # case-insensitive
])
def test_known_gpu_peak_matches_the_most_specific_name(name, key):
    assert known_gpu_peak(name) == GPU_PEAKS[key]


def test_known_gpu_peak_table_order_and_unknown_names():
    keys = [k.lower() for k in GPU_PEAKS]
    for i, general in enumerate(keys):  # a name contained in another must come after it
        for specific in keys[i + 1 :]:
            assert general not in specific, f"{specific!r} must come before {general!r} in GPU_PEAKS"
    assert known_gpu_peak("NVIDIA H100 PCIe")[0] < known_gpu_peak("NVIDIA H100 80GB HBM3")[0]
    assert known_gpu_peak("Apple M2") is None and known_gpu_peak("") is None
    for bandwidth, flops in GPU_PEAKS.values():
        assert 1e11 < bandwidth < 1e13 and 1e13 < flops < 1e16  # bytes/s and FLOP/s, not GB/s or TFLOP/s
    with pytest.raises(TypeError, match="device_name"):
        known_gpu_peak(None)


def test_measure_bandwidth_small_copy():
    bandwidth = measure_bandwidth("cpu", n_bytes=2**16, repeat=3)
    assert math.isfinite(bandwidth) and bandwidth > 0
    assert measure_bandwidth(torch.device("cpu"), n_bytes=4, repeat=1) > 0  # one float32


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(n_bytes=0), ValueError, "n_bytes"),
    (dict(n_bytes=3), ValueError, "n_bytes"),
    (dict(n_bytes=2.0**16), TypeError, "n_bytes"),
    (dict(repeat=0), ValueError, "repeat"),
    (dict(repeat=True), TypeError, "repeat"),
])
def test_measure_bandwidth_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        measure_bandwidth("cpu", **kwargs)


# ---------------------------------------------------------------------------------------------
# count_step_ops: the operators (about one GPU kernel launch each) of one cached decode step
# ---------------------------------------------------------------------------------------------


def test_step_ops_grow_by_the_same_count_per_layer(make_tiny_llama):
    """A decode step runs a fixed number of operators per decoder layer plus a fixed rest (embedding,
    final norm, LM head): the count is linear in the number of layers, and does not depend on the
    prompt's length (the cache only grows)."""
    from llmlab.decoding import count_step_ops

    prompt = torch.tensor([[1, 5, 9, 4]])
    counts = {n: count_step_ops(make_tiny_llama(num_hidden_layers=n), prompt) for n in (1, 2, 4)}
    per_layer = counts[2] - counts[1]
    assert per_layer > 20 and counts[4] == counts[2] + 2 * per_layer
    assert counts[1] - per_layer > 3                                       # the embedding, final norm, head ...
    assert count_step_ops(make_tiny_llama(num_hidden_layers=2), torch.tensor([[1, 5, 9, 4, 7, 8, 2, 3]])) == counts[2]


def test_step_ops_leave_out_views_and_count_in_place_ops():
    from llmlab.decoding.roofline import _OpCounter

    x = torch.ones(4, 4)
    with _OpCounter() as counter:
        y = x.view(16)                                 # a view: no kernel
        z = x.transpose(0, 1)                          # a view
        x.add_(1.0)                                    # in place: a kernel
        w = x @ x                                      # a kernel
    assert counter.n_ops == 2 and y.shape == (16,) and z.shape == (4, 4) and w.shape == (4, 4)


def test_step_ops_rejects_bad_input(tiny_llama):
    from llmlab.decoding import count_step_ops

    with pytest.raises(TypeError, match="model"):
        count_step_ops("model", torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match="input_ids"):
        count_step_ops(tiny_llama, torch.tensor([[1, 200]]))   # id beyond the vocabulary of 97
