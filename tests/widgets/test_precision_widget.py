"""llmlab.widgets.precision: the notebook-08 sliders for lost updates and the model-state ledger."""

from __future__ import annotations

import pytest
import torch

from llmlab.memory import memory_ledger
from llmlab.precision import smallest_surviving_update, update_survives
from llmlab.widgets import PrecisionWidget, precision_widget


def test_builds_with_the_librarys_answers():
    pw = precision_widget()
    assert isinstance(pw, PrecisionWidget) and pw.plot is None
    assert pw.last["survives"] == {"float16": False, "bfloat16": False, "float32": True}  # 1 + 1e-4
    assert pw.last["smallest_surviving"]["float16"] == smallest_surviving_update(torch.float16, 1.0)
    assert pw.last["ledgers"]["fp32"] == memory_ledger(135_000_000, optimizer="adamw", precision="fp32")
    assert pw.last["ledgers"]["mixed"].total == pw.last["ledgers"]["fp32"].total == 16 * 135_000_000
    assert "<td>float16</td><td>LOST: w + u == w</td>" in pw.readout_text
    assert "<td>float32</td><td>kept: w + u != w</td>" in pw.readout_text
    assert "<td>mixed</td>" in pw.ledger.value and "<td>16</td>" in pw.ledger.value  # bytes per parameter


def test_refresh_follows_every_control():
    pw = precision_widget()
    text = pw.readout.value
    pw.update.value = 1e-3  # fp16 now keeps the update, bf16 still loses it
    assert pw.readout.value != text
    assert pw.last["survives"] == {"float16": True, "bfloat16": False, "float32": True}
    pw.weight.value = 10 ** 2.5  # a bigger weight: the same relative update, other thresholds
    w = pw.weight.value
    assert pw.last["survives"] == {name: update_survives(w, w * 1e-3, dtype) for name, dtype in
                                   (("float16", torch.float16), ("bfloat16", torch.bfloat16),
                                    ("float32", torch.float32))}
    assert pw.last["smallest_surviving"]["bfloat16"] == smallest_surviving_update(torch.bfloat16, w)
    ledger = pw.ledger.value
    pw.optimizer.value = "sgd"
    assert pw.ledger.value != ledger and pw.last["ledgers"]["fp32"].optimizer_states == 0
    assert pw.last["ledgers"]["mixed"].total == 8 * 135_000_000  # 2 + 2 + 4 bytes per parameter
    pw.params_m.value = 1000.0
    assert pw.last["ledgers"]["fp32"] == memory_ledger(10**9, optimizer="sgd", precision="fp32")
    assert "1000 M parameters, sgd" in pw.ledger.value


@pytest.mark.parametrize("kwargs, error, match", [
    ({"update": 0.0}, ValueError, r"update must be a number in \[1e-08, 1\]"),
    ({"update": "big"}, TypeError, "update must be a number"),
    ({"weight": 0.0}, ValueError, r"weight must be a number in \[0.01, 1000\]"),
    ({"params_m": 0.5}, ValueError, r"params_m must be a number in \[1, 100000\]"),
    ({"optimizer": "lion"}, ValueError, "optimizer must be one of"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        precision_widget(**kwargs)
