"""llmlab.widgets.lora: the notebook-07 rank slider: what rank r costs and what it can express."""

from __future__ import annotations

import pytest
import torch

from llmlab.lora import truncation_error
from llmlab.memory import memory_ledger
from llmlab.widgets import LoRARankExplorer, lora_rank_explorer


@pytest.fixture()
def delta():
    g = torch.Generator().manual_seed(0)
    return torch.randn(12, 4, generator=g) @ torch.randn(4, 8, generator=g)  # a rank-4 "update"


def test_readout_follows_the_slider(delta):
    explorer = lora_rank_explorer(delta, [(12, 8), (8, 8)], r=1)
    assert isinstance(explorer, LoRARankExplorer) and explorer.plot is None
    first = explorer.readout.value
    assert "r(m+n) = 20 vs mn = 96" in first and explorer.last == explorer.numbers(1)
    explorer.r.value = 4
    assert explorer.readout.value != first and explorer.last["r"] == 4 and "r(m+n) = 80" in explorer.readout.value
    x = explorer.numbers(4)
    assert explorer.last == x
    assert x["trainable"] == 4 * (12 + 8) + 4 * (8 + 8) and x["adam_bytes"] == 8 * x["trainable"]
    assert x["error"] < 1e-6 and explorer.numbers(1)["error"] > 0.1
    assert x["error"] == truncation_error(delta, [4]).item()
    assert x["saves"] == (4 < 96 / 20) and not explorer.numbers(5)["saves"]
    assert "NOT fewer" in explorer.readout_for(5)


def test_adam_bytes_agree_with_the_memory_ledger(delta):
    explorer = lora_rank_explorer(delta, r=2)  # one layer: delta's own
    x = explorer.numbers(2)
    assert explorer.layer_shapes == [(12, 8)] and x["full"] == 96
    assert x["adam_bytes"] == memory_ledger(x["trainable"], optimizer="adamw", precision="fp32").optimizer_states
    assert x["adam_bytes_full"] == memory_ledger(96, optimizer="adamw", precision="fp32").optimizer_states


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((torch.ones(3),), {}, ValueError, "delta_W must be 2-D"),
    (([[1.0, 2.0]],), {}, TypeError, "delta_W must be a torch.Tensor"),
    ((torch.ones(2, 2, dtype=torch.long),), {}, TypeError, "delta_W must be a floating-point tensor"),
    ((torch.ones(12, 8),), {"max_r": 9}, ValueError, r"max_r must be an int in \[1, 8\]"),
    ((torch.ones(12, 8),), {"r": 0}, ValueError, r"r must be an int in \[1, 8\]"),
    ((torch.ones(12, 8),), {"r": 5, "max_r": 4}, ValueError, r"r must be an int in \[1, 4\]"),
    ((torch.ones(12, 8), [(12, 0)]), {}, ValueError, "layer_shapes n must be an int >= 1"),
    ((torch.ones(12, 8), [(12, 8, 1)]), {}, ValueError, r"layer_shapes must be a non-empty list of \(m, n\) pairs"),
    ((torch.ones(12, 8), []), {}, ValueError, "layer_shapes must be a non-empty list"),
    ((torch.ones(12, 8), [3]), {}, TypeError, "layer_shapes must be a list of"),
    ((torch.ones(12, 8),), {"bytes_per_float": 0}, ValueError, "bytes_per_float must be an int >= 1"),
])
def test_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        lora_rank_explorer(*args, **kwargs)
