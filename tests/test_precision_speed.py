"""llmlab.precision.speed: one training step of a transformer block in fp32 / tf32 / bf16 (no speed claims here)."""

import pytest
import torch

import llmlab.precision.speed as speed
from conftest import requires_cuda
from llmlab.precision import STEP_MODES, block_step, block_step_seconds, block_step_timings

TINY = dict(d_model=32, n_heads=2, batch=2, seq=8)


def test_block_step_seconds_on_cpu_restores_matmul_precision():
    before = torch.get_float32_matmul_precision()
    for mode in ("fp32", "bf16"):
        seconds = block_step_seconds(mode, repeat=1, warmup=1, **TINY)
        assert 0 < seconds < 60
    assert torch.get_float32_matmul_precision() == before
    with pytest.raises(ValueError, match="tf32"):
        block_step_seconds("tf32")


def test_block_step_seconds_times_through_llmlab_timing(monkeypatch):
    calls = []

    def fake_timeit(fn, *, repeat, warmup, device):
        calls.append((repeat, warmup, device))
        fn()  # one real training step runs
        return 0.25

    monkeypatch.setattr(speed, "timeit", fake_timeit)
    assert block_step_seconds("bf16", repeat=3, warmup=0, **TINY) == 0.25
    assert calls == [(3, 0, torch.device("cpu"))]


def test_block_step_seconds_leaves_the_callers_random_stream():
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    block_step_seconds("fp32", repeat=1, warmup=0, **TINY)
    assert torch.equal(torch.rand(4), expected)


def test_matmul_precision_is_restored_after_an_error(monkeypatch):
    def failing(fn, **kwargs):
        assert torch.get_float32_matmul_precision() == "highest"
        raise RuntimeError("boom")

    monkeypatch.setattr(speed, "timeit", failing)
    before = torch.get_float32_matmul_precision()
    with pytest.raises(RuntimeError, match="boom"):
        block_step_seconds("fp32", **TINY)
    assert torch.get_float32_matmul_precision() == before


@requires_cuda
def test_block_step_seconds_on_cuda():
    for mode in STEP_MODES:
        assert block_step_seconds(mode, device="cuda", repeat=2) > 0


@pytest.mark.parametrize("call, match", [
    (lambda: block_step_seconds("fp16"), "mode"),
    (lambda: block_step_seconds("fp32", d_model=30, n_heads=4), "d_model"),
    (lambda: block_step_seconds("fp32", repeat=0), "repeat"),
    (lambda: block_step_seconds("fp32", warmup=-1), "warmup"),
    (lambda: block_step_seconds("fp32", batch=0), "batch"),
    (lambda: block_step_seconds("fp32", device="nonsense"), "device"),
])
def test_bad_inputs_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call, match", [
    (lambda: block_step_seconds("fp32", seq=8.0), "seq"),
    (lambda: block_step_seconds("fp32", n_heads=True), "n_heads"),
])
def test_bad_types_raise_type_error(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_block_step_timings_interleave_the_modes():
    timings = block_step_timings(("fp32", "bf16"), rounds=3, warmup=1, **TINY)
    assert list(timings) == ["fp32", "bf16"]
    assert all(len(t.times) == 3 and t.min > 0 for t in timings.values())
    assert torch.get_float32_matmul_precision() == "highest"


def test_a_step_restores_the_matmul_precision_even_between_modes():
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        block_step("fp32", **TINY)()
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(previous)

