"""llmlab.distributed.comm: the ring all-reduce by hand, gloo's all_reduce measured, the paper model of
communication against compute."""

from __future__ import annotations

import pytest
import torch

from llmlab.distributed import (crossover_tokens, measure_all_reduce, ring_allreduce_bytes, simulate_ring_all_reduce,
                                step_estimate)
from llmlab.fitting import fit_scaling


def test_ring_all_reduce_by_hand_sends_2_n_minus_1_over_n():
    for n in (1, 2, 3, 4, 8):
        buffers = [torch.randn(24, generator=torch.Generator().manual_seed(r), dtype=torch.float64) for r in range(n)]
        ring = simulate_ring_all_reduce(buffers)
        for result in ring.results:
            torch.testing.assert_close(result, sum(buffers))
        assert ring.bytes_sent == [ring_allreduce_bytes(24 * 8, n)] * n
    assert ring_allreduce_bytes(100, 1) == 0 and ring_allreduce_bytes(100, 2) == 100
    with pytest.raises(ValueError, match="same length"):
        simulate_ring_all_reduce([torch.zeros(3), torch.zeros(4)])
    with pytest.raises(TypeError):
        simulate_ring_all_reduce([])


def test_measure_all_reduce_on_gloo():
    timing = measure_all_reduce(2, (2**12, 2**16, 2**20), repeat=3)
    assert timing.nbytes == (2**12, 2**16, 2**20) and timing.bytes_sent == tuple(float(b) for b in timing.nbytes)
    # Structure only: which size takes longer is a timing, and timings belong to the benchmarks
    # (a 4 KiB and a 1 MiB all_reduce swap places on a loaded 2-core machine).
    assert len(timing.seconds) == 3 and all(s > 0 for s in timing.seconds)
    assert timing.fit == fit_scaling(timing.bytes_sent, timing.seconds, "n")  # the fit is of what was measured
    assert timing.bandwidth > 0
    with pytest.raises(ValueError, match="world_size"):
        measure_all_reduce(1)
    with pytest.raises(ValueError, match="distinct"):
        measure_all_reduce(2, (64, 64))


def test_step_estimate_for_a_7b_model_on_8_gpus():
    est = step_estimate(7e9, 8, link_gbit_s=400, flops_per_s=400e12, tokens_per_rank=32768)
    assert est.grad_bytes == 14e9 and est.bytes_sent == pytest.approx(24.5e9)
    assert est.comm_seconds == pytest.approx(24.5e9 / 50e9)
    assert est.compute_seconds == pytest.approx(6 * 7e9 * 32768 / 400e12)
    t_star = crossover_tokens(8, link_gbit_s=400, flops_per_s=400e12)
    assert t_star == pytest.approx(2 * 7 / 8 * 2 * 400e12 / (6 * 50e9))
    at = step_estimate(13e9, 8, tokens_per_rank=t_star)  # the crossover does not depend on the model size
    assert at.ratio == pytest.approx(1.0)
    with pytest.raises(ValueError, match="link_gbit_s"):
        step_estimate(7e9, 8, link_gbit_s=0)
