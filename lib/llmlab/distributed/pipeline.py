"""Pipeline parallelism: the layers split into p stages, micro-batches flowing through them.

Stage s holds layers [s·L/p, (s+1)·L/p) and runs, in order, the actions of its schedule:
``("F", i)`` (forward of micro-batch i: receive its activation from stage s − 1, run the layers,
send the output to stage s + 1) and ``("B", i)`` (backward of micro-batch i: receive the gradient
of the output from stage s + 1, backpropagate, send the gradient of the input to stage s − 1).

* **GPipe** (Huang et al. 2019): all m forwards, then all m backwards. Stage s holds the
  activations of all m micro-batches at once.
* **1F1B** (PipeDream-Flush, Narayanan et al. 2021): stage s runs min(p − s − 1, m) warm-up forwards,
  then alternates one forward and one backward, then drains the remaining backwards. It holds at most
  min(p − s, m) micro-batches' activations, with the same bubble as GPipe.

With a forward of t_f and a backward of t_b per stage, both schedules finish in (m + p − 1)(t_f + t_b),
of which every stage computes m(t_f + t_b): the *bubble* (idle) fraction is

    (p − 1) / (m + p − 1)                                   (:func:`bubble_fraction`)

:func:`pipeline_schedule` lists the actions and :func:`simulate_schedule` times them on paper;
:func:`llmlab.distributed.run_pipeline` (module :mod:`~llmlab.distributed.pipeline_run`) runs them for real
on gloo ranks with point-to-point ``isend``/``recv``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._checks import check_choice, check_float, check_int
from .launch import MAX_WORLD_SIZE

__all__ = ["SCHEDULES", "pipeline_schedule", "bubble_fraction", "peak_held_formula", "Timeline", "simulate_schedule"]

#: The schedules :func:`pipeline_schedule` knows.
SCHEDULES = ("gpipe", "1f1b")
#: Micro-batches a schedule may have: more is a mistake in a notebook (each is a Python loop step per stage).
MAX_MICRO_BATCHES = 4096


def _check_shape(kind, stages, micro_batches) -> tuple[str, int, int]:
    check_choice("kind", kind, SCHEDULES)
    stages = check_int("stages", stages, low=1, high=MAX_WORLD_SIZE)
    micro_batches = check_int("micro_batches", micro_batches, low=1, high=MAX_MICRO_BATCHES)
    return kind, stages, micro_batches


def schedule_actions(kind: str, p: int, m: int) -> list[list[tuple[str, int]]]:
    if kind == "gpipe":
        return [[("F", i) for i in range(m)] + [("B", i) for i in range(m)] for _ in range(p)]
    out = []
    for s in range(p):
        warmup = min(p - s - 1, m)
        actions = [("F", i) for i in range(warmup)]
        for i in range(m - warmup):                       # steady state: one forward, one backward
            actions += [("F", warmup + i), ("B", i)]
        actions += [("B", i) for i in range(m - warmup, m)]  # cool-down
        out.append(actions)
    return out


def pipeline_schedule(kind: str, stages: int, micro_batches: int) -> list[list[tuple[str, int]]]:
    """Per stage, the ordered actions ``("F", i)`` / ``("B", i)`` of schedule ``kind`` ("gpipe" or "1f1b")
    for ``stages`` stages (p, in [1, 32]) and ``micro_batches`` micro-batches (m >= 1).

    >>> pipeline_schedule("1f1b", 2, 3)
    [[('F', 0), ('F', 1), ('B', 0), ('F', 2), ('B', 1), ('B', 2)], [('F', 0), ('B', 0), ('F', 1), ('B', 1), ('F', 2), ('B', 2)]]
    """
    kind, p, m = _check_shape(kind, stages, micro_batches)
    return schedule_actions(kind, p, m)


def bubble_fraction(kind: str, stages: int, micro_batches: int) -> float:
    """The idle fraction of each stage: (p − 1) / (m + p − 1), the same for GPipe and 1F1B."""
    kind, p, m = _check_shape(kind, stages, micro_batches)
    return (p - 1) / (m + p - 1)


def peak_held_formula(kind: str, stages: int, micro_batches: int) -> list[int]:
    """Per stage, the most micro-batches whose activations are held at once: m under GPipe,
    min(p − s, m) at stage s under 1F1B."""
    kind, p, m = _check_shape(kind, stages, micro_batches)
    return [m if kind == "gpipe" else min(p - s, m) for s in range(p)]


@dataclass(frozen=True)
class Timeline:
    """A schedule in time. ``actions[s]``: stage s's ``(op, micro_batch, start, end)`` in the order run;
    ``makespan``: when the last action ends; ``idle[s]`` = makespan − stage s's busy time;
    ``peak_held[s]``: the most micro-batches with activations held at once on stage s."""

    kind: str
    stages: int
    micro_batches: int
    actions: tuple[tuple[tuple[str, int, float, float], ...], ...]
    makespan: float
    idle: tuple[float, ...]
    peak_held: tuple[int, ...]

    @property
    def bubble(self) -> float:
        """Idle time over all stages / (stages × makespan)."""
        return sum(self.idle) / (self.stages * self.makespan)


def idle_times(timed, makespan: float) -> tuple[float, ...]:
    """Per stage, the time in [0, makespan] it spent computing nothing, read off its executed actions."""
    return tuple(makespan - sum(end - start for *_, start, end in actions) for actions in timed)


def _peak_held(actions) -> int:
    held = peak = 0
    for op, *_ in actions:
        held += 1 if op == "F" else -1
        peak = max(peak, held)
    return peak


def simulate_schedule(kind: str, stages: int, micro_batches: int, *, t_forward: float = 1.0,
                      t_backward: float = 2.0) -> Timeline:
    """Time :func:`pipeline_schedule` on paper: every forward takes ``t_forward``, every backward
    ``t_backward`` (default 2: a backward computes two gradients per matmul), messages are instant.
    F(i) on stage s starts when stage s is free and F(i) on stage s − 1 has ended; B(i) when stage s
    is free and B(i) on stage s + 1 (on the last stage: F(i) itself) has ended."""
    kind, p, m = _check_shape(kind, stages, micro_batches)
    tf = check_float("t_forward", t_forward, low=0, low_open=True)
    tb = check_float("t_backward", t_backward, low=0, low_open=True)
    plan = schedule_actions(kind, p, m)
    done: dict[tuple[str, int, int], float] = {}     # (op, micro-batch, stage) -> end time
    clock, pos = [0.0] * p, [0] * p
    timed: list[list[tuple[str, int, float, float]]] = [[] for _ in range(p)]
    remaining = p * 2 * m
    while remaining:
        progressed = False
        for s in range(p):
            while pos[s] < len(plan[s]):
                op, i = plan[s][pos[s]]
                dep = (("F", i, s - 1) if s > 0 else None) if op == "F" else \
                      (("B", i, s + 1) if s < p - 1 else ("F", i, s))
                if dep is not None and dep not in done:
                    break
                start = max(clock[s], done[dep] if dep else 0.0)
                clock[s] = start + (tf if op == "F" else tb)
                done[(op, i, s)] = clock[s]
                timed[s].append((op, i, start, clock[s]))
                pos[s] += 1
                remaining -= 1
                progressed = True
        if not progressed:  # a schedule built by schedule_actions never deadlocks; guard against a future edit
            raise RuntimeError(f"schedule {kind!r} deadlocks at positions {pos}")
    makespan = max(clock)
    return Timeline(kind=kind, stages=p, micro_batches=m, actions=tuple(tuple(a) for a in timed), makespan=makespan,
                    idle=idle_times(timed, makespan), peak_held=tuple(_peak_held(a) for a in timed))
