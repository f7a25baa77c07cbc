"""llmlab.attention.cost: measured bytes and FLOPs of the attention methods, the traffic model.

The saved bytes are checked to the byte against what each method must keep (plain: q, k, v and
the n×n probabilities; flash and SDPA's CPU kernel: q, k, v, the output and the log-sum-exp); the
peak allocation against its growth with n (n² vs n); the FLOP counts against 4n²d forward and
8n²d (plain) or 10n²d (flash: the scores are recomputed) backward.
"""

from __future__ import annotations

import math

import pytest
import torch

from llmlab.attention import (ATTENTION_METHODS, L2_CACHE_BYTES, attention_flops, attention_function, attention_inputs,
                              attention_memory, attention_timings, attention_traffic, op_profile)
from llmlab.attention import cost
from llmlab.timing import Timing


@pytest.mark.parametrize("causal", [False, True])
def test_the_methods_compute_the_same_attention(causal):
    q, k, v, _ = attention_inputs(70, d=8, dtype=torch.float64)
    outs = {m: attention_function(m, causal=causal, block_size=16)(q, k, v) for m in ATTENTION_METHODS}
    for m, out in outs.items():
        assert (out - outs["sdpa"]).abs().max() < 1e-12, m


def test_saved_bytes_are_what_each_method_must_keep():
    n, d = 512, 64
    mem = {m: attention_memory(n, method=m, d=d) for m in ATTENTION_METHODS}
    qkv = 3 * n * d * 4
    assert mem["plain"].saved_bytes == qkv + n * n * 4                 # q, k, v and the probabilities P
    assert mem["flash"].saved_bytes == qkv + n * d * 4 + n * 4         # q, k, v, output, lse
    assert mem["sdpa"].saved_bytes == mem["flash"].saved_bytes         # torch's CPU kernel: the same
    assert mem["sdpa_math"].saved_bytes >= mem["plain"].saved_bytes    # math backend: P and a scaled q


def test_peak_grows_as_n_squared_for_plain_and_as_n_for_flash():
    small, large = ({m: attention_memory(n, method=m).peak_bytes for m in ("plain", "flash")} for n in (512, 1024))
    assert 3.5 < large["plain"] / small["plain"] < 4.5
    assert 1.7 < large["flash"] / small["flash"] < 2.3
    assert large["flash"] < 0.25 * large["plain"]
    # flash's peak: the gradients (3nd) plus O(n·block) temporaries, well under one n×n matrix
    assert large["flash"] < 1024 * 1024 * 4


def test_flops_forward_4n2d_backward_8_or_10_n2d():
    n, d = 256, 32
    plain = attention_flops(n, method="plain", d=d)
    flash = attention_flops(n, method="flash", d=d, block_size=64)
    unit = n * n * d
    assert (plain.forward, plain.backward) == (4 * unit, 8 * unit)
    assert (flash.forward, flash.backward) == (4 * unit, 10 * unit)    # + the recomputed q kᵀ
    assert flash.total / plain.total == pytest.approx(14 / 12)
    causal = attention_flops(n, method="flash", d=d, block_size=64, causal=True)
    blocks = n // 64   # key block j meets the n - 64 j query rows at or below it
    rows = sum(n - 64 * j for j in range(blocks))
    assert causal.forward == 2 * 2 * rows * 64 * d
    assert attention_flops(n, method="sdpa", d=d).total == 0           # a fused op FlopCounterMode cannot see


def test_traffic_model():
    t = attention_traffic(4096, 64, 64, dtype=torch.bfloat16)
    n, d, e = 4096, 64, 2
    assert t.plain_bytes == e * (4 * n * n + 4 * n * d)
    assert t.kv_read_bytes == e * 2 * n * d * (n // 64)
    assert t.flash_bytes == e * 2 * n * d + t.kv_read_bytes + 4 * n
    assert t.sram_bytes == e * 3 * 64 * d + 4 * (64 * 64 + 64 * d + 2 * 64)
    assert t.ratio == pytest.approx(t.plain_bytes / t.flash_bytes)
    traffic = [attention_traffic(4096, 64, b).flash_bytes for b in (16, 32, 64, 128, 256)]
    sram = [attention_traffic(4096, 64, b).sram_bytes for b in (16, 32, 64, 128, 256)]
    assert traffic == sorted(traffic, reverse=True) and sram == sorted(sram)
    # roughly 1/B: doubling the block halves the K/V re-reads
    assert attention_traffic(4096, 64, 128).kv_read_bytes * 2 == attention_traffic(4096, 64, 64).kv_read_bytes
    # a ragged last block still reads all of K and V once more
    assert attention_traffic(100, 8, 64, dtype=torch.float32).kv_read_bytes == 4 * 2 * 100 * 8 * math.ceil(100 / 64)
    # one head's K and V, the bytes to hold against a GPU's L2 cache: 1 MiB at n = 4,096, d = 64, bf16
    assert t.kv_bytes == e * 2 * n * d == 2**20 < min(L2_CACHE_BYTES.values())
    # the ratio is about 2B/d once n is much larger than B and d, and does not move with n
    ratios = [attention_traffic(n, 64, 64).ratio for n in (1024, 8192, 131072)]
    assert max(ratios) / min(ratios) < 1.01 and ratios[-1] == pytest.approx(2 * 64 / 64, rel=0.01)


def test_timings_and_op_profile(monkeypatch):
    t = attention_timings(128, methods=("flash", "sdpa"), d=16, rounds=1)
    assert set(t) == {"flash", "sdpa"} and all(isinstance(x, Timing) and len(x.times) == 1 for x in t.values())
    before, seen = torch.get_num_threads(), []
    monkeypatch.setattr(cost, "interleaved", lambda fns, **kw: seen.append(torch.get_num_threads()) or
                        {m: Timing((1.0,)) for m in fns})
    attention_timings(64, methods=("plain",), d=8, rounds=1, threads=1)
    assert seen == [1] and torch.get_num_threads() == before          # timed on one thread, then restored
    monkeypatch.undo()
    q, k, v, d_out = attention_inputs(128, d=16)
    flash = op_profile(lambda: attention_function("flash", block_size=64)(q, k, v).backward(d_out))
    sdpa = op_profile(lambda: attention_function("sdpa")(q, k, v).backward(d_out))
    assert flash.n_ops > 2 * 2 * 8 > sdpa.n_ops              # 2 key blocks, several ops each, forward and backward
    assert flash.matmul_seconds > 0 and 0 < flash.matmul_share < 1
    assert flash.seconds >= flash.matmul_seconds + flash.other_seconds - 1e-3 and flash.outside_seconds >= 0
    # SDPA's CPU kernel calls BLAS itself: no matrix-product operator for the profiler to see
    assert sdpa.matmul_seconds == 0 and sdpa.other_seconds > 0
