"""What each parallelism axis sends per training step, from the formulas and counted on real runs.

Per rank and per step, with B sequences of s tokens, width h, L layers, b-byte numbers and P parameters:

* **data parallel** over d ranks: the gradients, G = b·P bytes, in one ring all-reduce (notebook 12):
  each rank sends 2 (d − 1)/d · G — once per step, whatever B is.
* **tensor parallel** over t ranks: every block (attention, MLP) all-reduces its output in forward and its
  input gradient in backward, each B·s·h·b bytes: a payload of 2·B·s·h·b per block per step, of which
  each rank sends 2 (t − 1)/t — every layer, and it grows with the batch.
* **pipeline parallel**: at each stage boundary the activations go forward and their gradients come back,
  B·s·h·b bytes each way, point to point (no ring): 2·B·s·h·b per boundary per step, split into
  m micro-batches.

:func:`ddp_gradient_bytes` counts what ``DistributedDataParallel`` really all-reduces (a comm hook sees
every bucket); :func:`llmlab.distributed.tensor_parallel_step` and :func:`llmlab.distributed.run_pipeline`
count their own collectives and sends.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from .._checks import check_float, check_int, check_world_size
from .comm import ring_allreduce_bytes
from .launch import MAX_WORLD_SIZE, run
from .pipeline_run import PipelineSpec, make_pipeline_model, pipeline_data

__all__ = ["dp_bytes_per_step", "tp_payload_per_step", "pp_bytes_per_step", "ddp_gradient_bytes"]


def dp_bytes_per_step(grad_bytes: float, world_size: int) -> float:
    """Bytes each data-parallel rank sends per step: the ring all-reduce of ``grad_bytes``."""
    return ring_allreduce_bytes(grad_bytes, world_size)


def tp_payload_per_step(activation_bytes: float, blocks: int) -> float:
    """Bytes all-reduced per step by tensor parallelism: 2 (forward output, backward input gradient) ×
    ``activation_bytes`` (B·s·h·b) per block; each rank sends 2 (t − 1)/t of it (``ring_allreduce_bytes``)."""
    activation_bytes = check_float("activation_bytes", activation_bytes, low=0)
    return 2 * activation_bytes * check_int("blocks", blocks, low=0)


def pp_bytes_per_step(activation_bytes: float, stages: int) -> float:
    """Bytes sent per step over all stage boundaries: activations forward plus their gradients backward,
    ``activation_bytes`` (B·s·h·b) each way at each of the ``stages`` − 1 boundaries."""
    activation_bytes = check_float("activation_bytes", activation_bytes, low=0)
    return 2 * activation_bytes * (check_int("stages", stages, low=1) - 1)


def _ddp_rank(rank: int, world_size: int, spec: PipelineSpec) -> list[int]:
    """What each rank runs: one DDP step of the pipeline model on its shard, recording every bucket's bytes."""
    model = DistributedDataParallel(make_pipeline_model(spec))
    buckets: list[int] = []

    def counting_hook(state, bucket):
        buffer = bucket.buffer()
        buckets.append(buffer.numel() * buffer.element_size())
        return default_hooks.allreduce_hook(state, bucket)

    model.register_comm_hook(None, counting_hook)
    x, y = pipeline_data(spec)
    shard = slice(rank * spec.batch // world_size, (rank + 1) * spec.batch // world_size)
    F.mse_loss(model(x[shard]), y[shard]).backward()
    return buckets


def ddp_gradient_bytes(spec: PipelineSpec | None = None, world_size: int = 2, *, timeout: float = 120) -> list[int]:
    """The bytes of each gradient bucket ``DistributedDataParallel`` all-reduced in one step of ``spec``'s
    model on ``world_size`` gloo ranks (``spec.batch`` divisible by it), counted by a comm hook on rank 0."""
    spec = PipelineSpec() if spec is None else spec
    make_pipeline_model(spec)           # checks spec (TypeError / ValueError naming the field); cheap
    world_size = check_world_size(world_size, high=MAX_WORLD_SIZE, divides={"spec.batch": spec.batch})
    return run(_ddp_rank, world_size, spec, timeout=timeout)[0]
