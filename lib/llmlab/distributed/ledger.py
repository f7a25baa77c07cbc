"""Model-state bytes per rank under DDP and the ZeRO stages, from the formulas (no process is started).

Training with AdamW keeps 16 bytes per parameter (notebook 08: fp32 4 + 4 + 8, or mixed precision
2 + 2 + 4 master + 8). Plain DDP keeps all of it on every rank; the ZeRO stages shard it over N ranks::

    stage          weights   gradients   optimizer states (+ fp32 master)   fp32 AdamW, bytes/param per rank
    ddp            full      full        full                               16
    zero1          full      full        / N                                8 + 8/N
    zero2          full      / N         / N                                4 + 12/N
    zero3 (FSDP)   / N       / N         / N                                16/N

:mod:`llmlab.distributed.sharding` measures ddp, zero1 and zero3 with PyTorch's implementations.
"""

from __future__ import annotations

import math

from .._checks import check_choice, check_int
from ..memory import StateLedger, memory_ledger

__all__ = ["STAGES", "STAGE_LABELS", "sharded_ledger"]

#: The stages :func:`sharded_ledger` knows.
STAGES = ("ddp", "zero1", "zero2", "zero3")
STAGE_LABELS = {"ddp": "DDP (replicated)", "zero1": "ZeRO-1 (ZeroRedundancyOptimizer)", "zero2": "ZeRO-2 (formula only)",
                "zero3": "ZeRO-3 (FSDP2 fully_shard)"}
#: The ledger components each stage divides by N (ZeRO counts fp32 master weights with the optimizer states).
_SHARDED = {"ddp": (), "zero1": ("master_weights", "optimizer_states"),
            "zero2": ("grads", "master_weights", "optimizer_states"),
            "zero3": ("weights", "grads", "master_weights", "optimizer_states")}


def sharded_ledger(model, world_size: int, stage: str, *, optimizer: str = "adamw",
                   precision: str = "fp32") -> StateLedger:
    """Bytes of the model states *per rank* for ``stage`` over ``world_size`` ranks, from the formulas.

    :func:`llmlab.memory.memory_ledger` (``model``: a module or a parameter count; ``optimizer``,
    ``precision`` as there, but fp32 by default) with the components ``stage`` shards divided by N,
    rounded up: ``"ddp"`` none, ``"zero1"`` the optimizer states and fp32 master weights,
    ``"zero2"`` also the gradients, ``"zero3"`` everything. The ideal split: real implementations
    partition whole parameters or rows and land a little above it.
    """
    world_size = check_int("world_size", world_size, low=1)
    check_choice("stage", stage, STAGES)
    full = memory_ledger(model, optimizer=optimizer, precision=precision)
    parts = {k: (math.ceil(v / world_size) if k in _SHARDED[stage] else v)
             for k, v in full.as_dict().items() if k != "total"}
    return StateLedger(**parts)
