"""llmlab.distributed.traffic: what each parallelism axis sends per step, the formulas against the bytes counted
on real runs (DDP's gradient buckets through a comm hook; the tensor-parallel and pipeline runs count their
own collectives and sends in their tests)."""

from __future__ import annotations

import pytest

from llmlab.distributed import (PipelineSpec, ddp_gradient_bytes, dp_bytes_per_step, make_pipeline_model,
                                pp_bytes_per_step, ring_allreduce_bytes, tp_payload_per_step)


def test_ddp_all_reduces_every_gradient_byte_once_per_step():
    spec = PipelineSpec(layers=4, hidden=16, batch=8, micro_batches=1)
    grad_bytes = sum(p.numel() * p.element_size() for p in make_pipeline_model(spec).parameters())
    buckets = ddp_gradient_bytes(spec, 2, timeout=120)
    assert sum(buckets) == grad_bytes            # float64 gradients of every parameter, in DDP's buckets
    assert dp_bytes_per_step(grad_bytes, 2) == ring_allreduce_bytes(grad_bytes, 2) == grad_bytes


def test_formulas():
    # TP: two all-reduces of the activations per block per step; PP: activations and gradients at p - 1 boundaries.
    assert tp_payload_per_step(1000, 3) == 6000
    assert pp_bytes_per_step(1000, 4) == 6000
    assert pp_bytes_per_step(1000, 1) == 0
    assert dp_bytes_per_step(8e9, 8) == pytest.approx(2 * 7 / 8 * 8e9)


def test_bad_arguments():
    with pytest.raises(ValueError, match="spec.batch must be divisible by world_size"):
        ddp_gradient_bytes(PipelineSpec(batch=9, micro_batches=1), 2)
    with pytest.raises(TypeError, match="spec must be a PipelineSpec"):
        ddp_gradient_bytes("spec", 2)
    with pytest.raises(ValueError, match="stages"):
        pp_bytes_per_step(10, 0)
    with pytest.raises(ValueError, match="activation_bytes"):
        tp_payload_per_step(-1, 2)
