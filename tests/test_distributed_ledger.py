"""llmlab.distributed.ledger: model-state bytes per rank of DDP and ZeRO-1/2/3 from the formulas."""

from __future__ import annotations

import math

import pytest

from llmlab.distributed import sharded_ledger
from llmlab.memory import memory_ledger


def test_sharded_ledger_formulas():
    P = 1000
    full = memory_ledger(P, precision="fp32")
    assert sharded_ledger(P, 4, "ddp") == full and full.total == 16 * P
    assert sharded_ledger(P, 4, "zero1").total == 8 * P + 8 * P // 4
    assert sharded_ledger(P, 4, "zero2").total == 4 * P + 12 * P // 4
    assert sharded_ledger(P, 4, "zero3").total == 16 * P // 4
    assert sharded_ledger(P, 3, "zero3").weights == math.ceil(4 * P / 3)
    mixed = sharded_ledger(P, 8, "zero1", precision="mixed")  # ZeRO's K = 12: fp32 master + m + v, sharded
    assert (mixed.weights, mixed.grads, mixed.master_weights + mixed.optimizer_states) == (2 * P, 2 * P, 12 * P // 8)
    assert all(sharded_ledger(P, 1, s) == full for s in ("ddp", "zero1", "zero2", "zero3"))
    with pytest.raises(ValueError, match="stage"):
        sharded_ledger(P, 2, "zero4")
    with pytest.raises(ValueError, match="world_size"):
        sharded_ledger(P, 0, "ddp")
