"""The one way llmlab times code: wall clock, CUDA-synchronised, repeated, and honest about noise.

* :func:`time_calls` runs ``fn`` ``repeat`` times after ``warmup`` runs and returns a
  :class:`Timing` (every run's seconds, with ``min``, ``median`` and ``spread``);
  :func:`timeit` is its median as a float.
* :func:`interleaved` times several contenders round by round (A, B, C, A, B, C, ...) so that a
  change in the machine's load hits them all alike: ratios between them then mean something.
* :class:`Stopwatch` times one block (a training step inside a loop).
* :data:`NOISE_LIMIT`: a :class:`Timing` whose ``spread`` exceeds it is too noisy to support a ratio.
* :func:`cpu_profile` runs a function once under ``torch.profiler`` (CPU activities, optionally
  every allocation of torch's CPU allocator) and returns the finished profiler.
* :func:`cpu_threads` runs a block with a given number of CPU threads (restored afterwards);
  :func:`verdict` says which of two interleaved timings was faster in every round, or that their
  ranges overlap and the comparison is inconclusive.

A GPU runs asynchronously: without ``torch.cuda.synchronize`` a timer measures only the kernel
launches. Every function here synchronises the device it is given before reading the clock.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

from ._checks import check_bool, check_callable, check_int
from ._torch import resolve_device

__all__ = ["Timing", "NOISE_LIMIT", "time_calls", "timeit", "interleaved", "Stopwatch", "synchronize", "cpu_profile",
           "cpu_threads", "verdict"]

#: A timing whose median/min spread exceeds this is too noisy to compare with another: the bench
#: withholds its ratio, a notebook says so instead of drawing a conclusion.
NOISE_LIMIT = 1.25


def synchronize(device=None) -> None:
    """Wait for ``device``'s queued work (CUDA only; a no-op elsewhere)."""
    if device is not None and resolve_device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """Seconds of each timed run of one piece of code.

    ``median`` is the typical cost; ``min`` the cost with the least interference (the best
    estimate of the code's own cost on a busy machine); ``spread = median / min`` (>= 1) says how
    noisy the runs were: 1.05 is steady, 1.5 means the machine was busy with something else.
    """

    times: tuple[float, ...]

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def max(self) -> float:
        return max(self.times)

    @property
    def spread(self) -> float:
        return self.median / self.min if self.min > 0 else float("inf")


def time_calls(fn: Callable[[], object], *, repeat: int = 5, warmup: int = 1, device=None) -> Timing:
    """Run ``fn()`` ``warmup`` times untimed, then ``repeat`` times timed; CUDA-synchronised.

    ``repeat`` <= 100000 and ``warmup`` <= 1000: enough for any median, and a typo (an extra
    zero or three) fails at once instead of running for hours."""
    check_callable("fn", fn, what="a callable taking no arguments")
    repeat = check_int("repeat", repeat, low=1, high=100_000)
    warmup = check_int("warmup", warmup, low=0, high=1000)
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return Timing(tuple(times))


def timeit(fn: Callable[[], object], *, repeat: int = 5, warmup: int = 1, device=None) -> float:
    """Median wall time of ``fn()`` in seconds (see :func:`time_calls`)."""
    return time_calls(fn, repeat=repeat, warmup=warmup, device=device).median


def interleaved(fns: dict[str, Callable[[], object]], *, rounds: int = 5, warmup: int = 1,
                device=None) -> dict[str, Timing]:
    """Time every contender once per round, alternating, for ``rounds`` rounds: name -> :class:`Timing`.

    Each contender first runs ``warmup`` times. The order within a round rotates, so no
    contender always runs right after the same neighbour.
    """
    if not isinstance(fns, dict) or not fns:
        raise TypeError("fns must be a non-empty dict name -> callable")
    rounds = check_int("rounds", rounds, low=1)
    warmup = check_int("warmup", warmup, low=0)
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            fns[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
    return {name: Timing(tuple(times[name])) for name in names}


class Stopwatch:
    """``with Stopwatch(device) as sw: step()`` then ``sw.seconds``: one CUDA-synchronised interval."""

    def __init__(self, device=None):
        self.device = resolve_device(device) if device is not None else None
        self.seconds: float | None = None
        self._t0 = 0.0

    def __enter__(self) -> "Stopwatch":
        synchronize(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._t0


@contextlib.contextmanager
def _stderr_silenced():
    """Send the process's stderr (file descriptor 2) to /dev/null for the block: the profiler's C++
    side prints a "profiler_start"/"profiler_stop" line there on every start and stop."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def cpu_profile(fn: Callable[[], object], *, profile_memory: bool = False) -> torch.profiler.profile:
    """Run ``fn()`` once under ``torch.profiler`` (CPU activities) and return the finished profiler
    (``.events()``, ``.key_averages()``, ``.profiler.kineto_results``). ``profile_memory=True`` also
    records every allocation and free of torch's CPU allocator. The log lines the profiler prints
    to stderr when it starts and stops are silenced; ``fn``'s own output is not."""
    check_callable("fn", fn, what="a callable taking no arguments")
    profile_memory = check_bool("profile_memory", profile_memory)
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=profile_memory)
    with _stderr_silenced():
        prof.start()
    try:
        fn()
    finally:
        with _stderr_silenced():
            prof.stop()
    return prof


def cpu_threads(threads: int | None, *, device=None) -> contextlib.AbstractContextManager:
    """Run the block with ``threads`` intra-op CPU threads (``torch.set_num_threads``), restored
    afterwards; ``None``, or a ``device`` that is not the CPU, changes nothing.

    One thread gives every contender of a CPU comparison the same budget, and keeps a timing
    meaningful on a machine whose cores are busy with other work: there, every multi-threaded
    operator waits at its end for its slowest thread, and code made of many small operators can
    take many times longer than on one thread."""
    if threads is not None:
        threads = check_int("threads", threads, low=1, high=4096)
    if device is not None:
        device = resolve_device(device)
    on_cpu = device is None or device.type == "cpu"
    return _threads(threads if on_cpu else None)


@contextlib.contextmanager
def _threads(threads: int | None):
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def verdict(a: Timing, b: Timing, *, names: tuple[str, str] = ("a", "b")) -> str:
    """One line comparing two timings taken side by side (:func:`interleaved`): which was faster in
    *every* run, with the ratio of the medians, or "inconclusive" when their ranges overlap.

    With r interleaved runs each and no real difference, all r runs of one falling below all r runs
    of the other happens by chance with probability 2 / C(2r, r) (0.10 for r = 3, 0.008 for 5)."""
    if not (isinstance(a, Timing) and isinstance(b, Timing)):
        raise TypeError(f"a and b must be Timing objects, got {type(a).__name__} and {type(b).__name__}")
    if not (isinstance(names, tuple) and len(names) == 2 and all(isinstance(n, str) for n in names)):
        raise TypeError(f"names must be a tuple of two strings, got {names!r}")
    (fast, slow), (tf, ts) = (names, (a, b)) if a.median <= b.median else (names[::-1], (b, a))
    ratio = ts.median / tf.median if tf.median > 0 else float("inf")
    if tf.max < ts.min:
        return f"{fast} faster than {slow} in every run ({ratio:.1f}x by the medians)"
    return f"{fast} vs {slow}: inconclusive, their ranges overlap (medians {ratio:.1f}x apart)"
