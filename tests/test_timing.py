"""llmlab.timing: the one timing loop. A fake clock makes every duration exact, so nothing here is a speed claim."""

import dataclasses
import math
import types

import pytest
import torch

import llmlab.timing as timing
from conftest import requires_cuda
from llmlab.timing import Stopwatch, Timing, cpu_threads, interleaved, synchronize, time_calls, timeit, verdict


class FakeClock:
    """Stands in for ``time`` inside llmlab.timing: the clock moves only when a timed function runs."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def work(self, seconds, log=None, name=None):
        """A function that 'takes' ``seconds`` (a number, or a list consumed one call at a time)."""
        def fn():
            self.now += seconds.pop(0) if isinstance(seconds, list) else seconds
            if log is not None:
                log.append(name)
        return fn


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=fake.perf_counter))
    return fake


def test_measure_times_repeat_calls_after_untimed_warmup(clock):
    calls = []
    # The two warmup calls "take" 100 s each: none of that may show up in the timings.
    result = time_calls(clock.work([100.0, 100.0, 1.0, 3.0, 2.0], calls, "f"), repeat=3, warmup=2)
    assert len(calls) == 5
    assert result == Timing((1.0, 3.0, 2.0))
    assert (result.min, result.median, result.max, result.spread) == (1.0, 2.0, 3.0, 2.0)


def test_measure_without_warmup_and_timeit_is_the_median(clock):
    calls = []
    assert time_calls(clock.work([5.0], calls, "f"), repeat=1, warmup=0).times == (5.0,)
    assert timeit(clock.work([9.0, 1.0, 2.0, 4.0, 8.0, 3.0]), repeat=5, warmup=1) == 3.0
    assert len(calls) == 1


def test_interleaved_rotates_the_order_each_round(clock):
    order = []
    fns = {name: clock.work(seconds, order, name) for name, seconds in (("a", 1.0), ("b", 2.0), ("c", 4.0))}
    result = interleaved(fns, rounds=4, warmup=1)
    warmup, rounds = order[:3], [order[3 + 3 * r: 6 + 3 * r] for r in range(4)]
    assert warmup == ["a", "b", "c"]
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert list(result) == ["a", "b", "c"]
    assert result["a"].times == (1.0,) * 4 and result["b"].times == (2.0,) * 4 and result["c"].times == (4.0,) * 4


def test_interleaved_without_warmup(clock):
    order = []
    result = interleaved({"x": clock.work(1.0, order, "x"), "y": clock.work(1.0, order, "y")}, rounds=2, warmup=0)
    assert order == ["x", "y", "y", "x"] and result["y"].median == 1.0


def test_stopwatch_times_one_block(clock):
    watch = Stopwatch()
    assert watch.seconds is None
    with watch as same:
        clock.now += 0.25
    assert same is watch and watch.seconds == 0.25
    with pytest.raises(RuntimeError):
        with watch:
            clock.now += 0.5
            raise RuntimeError("inside")
    assert watch.seconds == 0.5  # the interval is recorded even when the block raises


def test_timing_properties_and_frozen():
    t = Timing((4.0, 1.0, 2.0, 3.0))
    assert (t.min, t.max, t.median, t.spread) == (1.0, 4.0, 2.5, 2.5)
    assert Timing((0.0, 1.0)).spread == math.inf
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.times = (1.0,)


def test_real_clock_on_real_work():
    x = torch.randn(64, 64)
    t = time_calls(lambda: x @ x, repeat=3, warmup=1, device="cpu")
    assert len(t.times) == 3 and all(s > 0 for s in t.times) and t.spread >= 1.0
    synchronize(None)
    synchronize("cpu")  # no-ops off CUDA


@requires_cuda
def test_cuda_is_synchronised():
    x = torch.randn(2048, 2048, device="cuda")
    assert timeit(lambda: x @ x, repeat=3, device="cuda") > 0
    with Stopwatch("cuda") as watch:
        x @ x
    assert watch.seconds > 0


def test_cpu_threads_sets_and_restores_the_thread_count():
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):          # restored on an exception too
        with cpu_threads(1):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with cpu_threads(None):                    # None, or a device that is not the CPU: nothing changes
        assert torch.get_num_threads() == before
    with cpu_threads(1, device="meta"):
        assert torch.get_num_threads() == before
    with cpu_threads(1, device="cpu"):
        assert torch.get_num_threads() == 1


def test_verdict_calls_a_winner_only_when_every_run_beats_every_run():
    fast, slow = Timing((1.0, 1.1, 1.2)), Timing((1.3, 2.2, 3.0))
    assert verdict(fast, slow, names=("x", "y")) == "x faster than y in every run (2.0x by the medians)"
    assert verdict(slow, fast, names=("x", "y")) == "y faster than x in every run (2.0x by the medians)"
    overlap = Timing((1.15, 2.0, 2.2))          # its fastest run beats fast's slowest: no verdict
    assert verdict(fast, overlap, names=("x", "y")) == "x vs y: inconclusive, their ranges overlap (medians 1.8x apart)"
    assert "inconclusive" in verdict(fast, fast)  # a tie is never a winner


@pytest.mark.parametrize("call, error, match", [
    (lambda: cpu_threads(0), ValueError, "threads"),
    (lambda: cpu_threads(1.5), TypeError, "threads"),
    (lambda: cpu_threads(1, device="bogus"), ValueError, "device"),
    (lambda: verdict(1.0, Timing((1.0,))), TypeError, "a and b"),
    (lambda: verdict(Timing((1.0,)), Timing((1.0,)), names=["a", "b"]), TypeError, "names"),
    (lambda: time_calls(lambda: None, repeat=0), ValueError, "repeat"),
    (lambda: time_calls(lambda: None, repeat=1.5), TypeError, "repeat"),
    (lambda: time_calls(lambda: None, warmup=-1), ValueError, "warmup"),
    (lambda: timeit(lambda: None, repeat=True), TypeError, "repeat"),
    (lambda: interleaved({}), TypeError, "fns"),
    (lambda: interleaved([lambda: None]), TypeError, "fns"),
    (lambda: interleaved({"a": lambda: None}, rounds=0), ValueError, "rounds"),
    (lambda: interleaved({"a": lambda: None}, warmup=-2), ValueError, "warmup"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
