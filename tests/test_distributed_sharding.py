"""llmlab.distributed.sharding: bytes per rank under DDP, ZeRO-1 and FSDP2, measured against the ledger.

Cases ported from PyTorch's own tests (re-derived, not copied): pytorch/pytorch
test/distributed/optim/test_zero_redundancy_optimizer.py ``test_sharding``, and
test/distributed/_composable/fsdp/test_fully_shard_init.py ``test_shard_tensor_parameters`` (odd
sizes, uneven shards = ``torch.chunk`` pieces). They run on the shared process group of
``conftest.shared_group``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.optim import ZeroRedundancyOptimizer

from llmlab.distributed.sharding import MEASURED_STAGES, make_transformer, sharding_table, storage_bytes
from llmlab.memory import count_parameters, memory_ledger

# ---- Workers (run in spawned processes) -----------------------------------------------------------


def sharding_ports(rank, world_size):
    """ZeRO ``test_sharding`` and FSDP2 ``test_shard_tensor_parameters`` (odd sizes)."""
    sizes = [9, 7, 5, 3]
    params = [torch.rand(s, 1) for s in sizes * world_size]
    zero = ZeroRedundancyOptimizer(params, optimizer_class=torch.optim.SGD, lr=0.01)
    zero_numel = sum(p.numel() for p in zero.optim.param_groups[0]["params"])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 9), nn.ReLU(), nn.Linear(9, 3))
    originals = [p.detach().clone() for p in model.parameters()]
    fully_shard(model)
    chunks_equal = all(torch.equal(p.to_local(), torch.chunk(o, world_size, dim=0)[rank])
                       for p, o in zip(model.parameters(), originals))
    return {"zero_numel": zero_numel, "fsdp_chunks_equal": chunks_equal}


def test_storage_bytes_counts_shared_storages_once():
    flat = torch.zeros(10)
    views = [flat[:4], flat[4:]]
    assert storage_bytes(views) == 40 and storage_bytes([torch.zeros(3), None, torch.zeros(2)]) == 20


def _greedy_partition(numels, world_size):
    """ZeroRedundancyOptimizer's documented rule: largest first, each to the least-loaded rank."""
    loads = [0] * world_size
    for n in sorted(numels, reverse=True):
        loads[loads.index(min(loads))] += n
    return loads


def test_zero_and_fsdp_shard_like_pytorch_says(shared_group):
    for o in shared_group("sharding"):
        assert o["zero_numel"] == 9 + 7 + 5 + 3
        assert o["fsdp_chunks_equal"]


def test_sharding_table_measures_what_the_ledger_predicts():
    model = make_transformer()
    P = count_parameters(model).total
    numels = {n: p.numel() for n, p in model.named_parameters()}
    rows = {(r.stage, r.world_size): r for r in sharding_table((1, 3), steps=2)}  # 3 processes, groups of 1 and 3
    assert set(rows) == {(s, n) for s in MEASURED_STAGES for n in (1, 3)}
    full = memory_ledger(model, precision="fp32")
    for stage in MEASURED_STAGES:  # one rank holds everything, whatever the stage
        (alone,) = rows[stage, 1].per_rank
        assert (alone.weights, alone.grads, alone.optimizer_states) == (full.weights, full.grads, full.optimizer_states)
    for led in rows["ddp", 3].per_rank:
        assert (led.weights, led.grads, led.optimizer_states) == (full.weights, full.grads, full.optimizer_states)
        assert led.other == 4 * len(numels)  # AdamW's step counters
    zero = rows["zero1", 3]
    assert [led.optimizer_states for led in zero.per_rank] == [8 * n for n in _greedy_partition(numels.values(), 3)]
    assert sum(led.optimizer_states for led in zero.per_rank) == 8 * P
    assert all(led.weights == 4 * P and led.grads == 4 * P for led in zero.per_rank)
    assert zero.max_rank_bytes > zero.formula.total  # whole parameters do not split evenly
    fsdp = rows["zero3", 3]
    padded = sum(math.ceil(p.shape[0] / 3) * (p.numel() // p.shape[0]) for p in model.parameters())
    assert all(led.weights == 4 * padded for led in fsdp.per_rank)  # equal padded pieces
    shard_numel = [sum(torch.chunk(p.detach(), 3)[r].numel() if r < len(torch.chunk(p.detach(), 3)) else 0
                       for p in model.parameters()) for r in range(3)]
    assert [led.optimizer_states for led in fsdp.per_rank] == [8 * n for n in shard_numel]
    assert sum(shard_numel) == P and fsdp.formula.total <= fsdp.max_rank_bytes < 1.05 * fsdp.formula.total
    # Sharding changes where the bytes live, not the training: same losses, same weights.
    for stage in ("zero1", "zero3"):
        assert max(abs(a - b) / b for a, b in zip(rows[stage, 3].losses, rows["ddp", 3].losses)) < 1e-5
        for name, p in rows["ddp", 3].params.items():
            torch.testing.assert_close(rows[stage, 3].params[name], p, atol=1e-3, rtol=1e-5)  # PyTorch's ZeRO parity tolerance


def test_sharding_table_rejects_bad_arguments():
    with pytest.raises(ValueError, match="stages"):
        sharding_table((2,), ("zero2",))
    with pytest.raises(ValueError, match="world_sizes"):
        sharding_table((0,))
    with pytest.raises(ValueError, match="empty"):
        sharding_table(())
    with pytest.raises(ValueError, match="distinct"):
        sharding_table((2, 2))
