"""Pipeline parallelism for real: the stages of :mod:`~llmlab.distributed.pipeline`'s schedules on gloo ranks.

:func:`run_pipelines` starts one process per stage (:func:`llmlab.distributed.run`); each runs its
stage's actions in order, receiving activations (forward) and gradients (backward) with ``recv`` and
sending with ``isend``, and counts what it sends, the micro-batches it holds and the bytes autograd saves.
Every message also carries the sender's *logical clock* (its finish time counting t_f per forward and
t_b per backward): the idle time is *computed* on that clock (it reproduces
:func:`~llmlab.distributed.simulate_schedule`, since each rank runs its schedule in order), not measured; the
wall-clock seconds each stage waited in ``recv`` are returned beside it (noisy on a shared CPU). With ``compare_torch`` the same processes run the step under PyTorch's own
``torch.distributed.pipelining`` (``ScheduleGPipe`` / ``Schedule1F1B``) on the same weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .._checks import check_bool, check_choice, check_float, check_int
from ..memory import SavedTensorTracker
from .launch import MAX_WORLD_SIZE, run
from .pipeline import MAX_MICRO_BATCHES, SCHEDULES, idle_times, schedule_actions

#: Entry points, input and result; make_pipeline_model / pipeline_data / single_process_step build the model,
#: the batch and the one-process reference from a PipelineSpec; pipeline_rank_steps / assemble_pipeline_run are
#: what a torchrun script calls in each process and on rank 0.
__all__ = ["PipelineSpec", "PipelineRun", "run_pipelines", "run_pipeline", "make_pipeline_model", "pipeline_data",
           "single_process_step"]

@dataclass(frozen=True)
class PipelineSpec:
    """The model and batch :func:`run_pipeline` trains one step of: ``layers`` residual MLP blocks of width
    ``hidden`` (seeded by ``seed``), a batch of ``batch`` rows split into ``micro_batches`` equal
    micro-batches, MSE loss against a seeded target; float64 so that pipelined and one-process
    results agree to rounding."""

    layers: int = 8
    hidden: int = 32
    batch: int = 16
    micro_batches: int = 4
    seed: int = 0


class _Block(nn.Module):
    """x + W₂ tanh(W₁ x): one residual MLP block."""

    def __init__(self, hidden: int):
        super().__init__()
        self.up = nn.Linear(hidden, 2 * hidden)
        self.down = nn.Linear(2 * hidden, hidden)

    def forward(self, x):
        return x + self.down(torch.tanh(self.up(x)))


def _check_spec(spec) -> PipelineSpec:
    if not isinstance(spec, PipelineSpec):
        raise TypeError(f"spec must be a PipelineSpec, got {type(spec).__name__}")
    check_int("spec.layers", spec.layers, low=1, high=1024)
    check_int("spec.hidden", spec.hidden, low=1, high=4096)
    check_int("spec.micro_batches", spec.micro_batches, low=1, high=MAX_MICRO_BATCHES)
    check_int("spec.batch", spec.batch, low=spec.micro_batches, high=2**20)
    check_int("spec.seed", spec.seed, low=0, high=2**62)
    if spec.batch % spec.micro_batches:
        raise ValueError(f"spec.batch must be a multiple of spec.micro_batches, got {spec.batch} and {spec.micro_batches}")
    return spec


def make_pipeline_model(spec: PipelineSpec) -> nn.Sequential:
    """``spec.layers`` residual MLP blocks (float64), the same weights on every call with the same seed."""
    _check_spec(spec)
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed)
        return nn.Sequential(*[_Block(spec.hidden) for _ in range(spec.layers)]).double()


def pipeline_data(spec: PipelineSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch ``(x, y)``, each ``(batch, hidden)`` float64, from a private generator."""
    _check_spec(spec)
    g = torch.Generator().manual_seed(spec.seed + 1)
    return (torch.randn(spec.batch, spec.hidden, generator=g, dtype=torch.float64),
            torch.randn(spec.batch, spec.hidden, generator=g, dtype=torch.float64))


def _stage_layers(n_layers: int, stages: int, s: int) -> range:
    """Layers of stage s: contiguous, sizes differing by at most one (the first stages get the extra)."""
    base, extra = divmod(n_layers, stages)
    start = s * base + min(s, extra)
    return range(start, start + base + (s < extra))


def single_process_step(spec: PipelineSpec) -> tuple[float, dict[str, torch.Tensor]]:
    """The reference: the whole model on one process, the whole batch, mean-squared-error loss;
    returns the loss and the gradients by parameter name (``"3.up.weight"``: layer 3)."""
    _check_spec(spec)
    model = make_pipeline_model(spec)
    x, y = pipeline_data(spec)
    loss = F.mse_loss(model(x), y)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


@dataclass(frozen=True)
class PipelineRun:
    """One training step run as a pipeline of ``stages`` gloo ranks under schedule ``kind``.

    ``loss``: the batch's mean loss (the mean over micro-batches, on the last stage);
    ``grads``: every parameter's gradient by the reference's names, gathered from the stages;
    ``actions[s]``: stage s's ``(op, micro_batch, start, end)`` on the logical clock (t_forward per
    forward, t_backward per backward), as executed; ``makespan``, ``idle[s]``: from that clock;
    ``peak_held[s]``: the most micro-batches whose autograd graphs (saved activations) stage s held at
    once, counted as it ran; ``peak_saved_bytes[s]``: the most bytes autograd held saved for backward on
    stage s (``saved_tensors_hooks``, as notebook 05); ``bytes_sent[s]``: activation and gradient payload stage s sent
    (``isend``), the 8-byte clock of each message not counted; ``recv_wait_s[s]``: wall-clock seconds stage
    s spent blocked in ``recv`` (noisy on a shared CPU); ``torch_loss``/``torch_grads``: the same step
    under ``torch.distributed.pipelining`` (``ScheduleGPipe``/``Schedule1F1B``), or None."""

    kind: str
    stages: int
    micro_batches: int
    loss: float
    grads: dict[str, torch.Tensor]
    actions: tuple[tuple[tuple[str, int, float, float], ...], ...]
    makespan: float
    idle: tuple[float, ...]
    peak_held: tuple[int, ...]
    peak_saved_bytes: tuple[int, ...]
    bytes_sent: tuple[int, ...]
    recv_wait_s: tuple[float, ...]
    torch_loss: float | None = None
    torch_grads: dict[str, torch.Tensor] | None = None

    @property
    def bubble(self) -> float:
        return sum(self.idle) / (self.stages * self.makespan)


def _stage_module(spec: PipelineSpec, stages: int, s: int) -> tuple[nn.Sequential, list[str]]:
    """Stage s's layers (a fresh copy of the seeded model's) and its parameters' names in the full model."""
    model = make_pipeline_model(spec)
    idx = list(_stage_layers(spec.layers, stages, s))
    names = [f"{i}.{n}" for i in idx for n, _ in model[i].named_parameters()]
    return nn.Sequential(*[model[i] for i in idx]), names


def pipeline_rank_steps(rank: int, world_size: int, kinds: tuple[str, ...], spec: PipelineSpec,
                        t_forward: float = 1.0, t_backward: float = 2.0, compare_torch: bool = False) -> list[dict]:
    """What each rank runs (in a process group of ``world_size``, started by :func:`run` or ``torchrun``): stage
    ``rank`` of each schedule in ``kinds`` with real isend/recv, then, with ``compare_torch``, PyTorch's.
    Gather the ranks' results and hand them, per schedule, to :func:`assemble_pipeline_run`."""
    return [_pipeline_stage_step(rank, world_size, kind, spec, t_forward, t_backward, compare_torch) for kind in kinds]


def _pipeline_stage_step(rank: int, world_size: int, kind: str, spec: PipelineSpec, t_forward: float,
                         t_backward: float, compare_torch: bool) -> dict:
    """One step of schedule ``kind`` on this rank's stage."""
    p, m, h = world_size, spec.micro_batches, spec.hidden
    stage, names = _stage_module(spec, p, rank)
    x, y = pipeline_data(spec)
    # Copies, not views: autograd would otherwise save (and the tracker count) the whole batch's storage.
    xs, ys = [c.clone() for c in x.chunk(m)], [c.clone() for c in y.chunk(m)]
    rows = spec.batch // m
    first, last = rank == 0, rank == p - 1
    clock, held, peak, sent, waited = 0.0, 0, 0, 0, 0.0
    saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}   # micro-batch -> (input, output or loss)
    pending, timed, loss_sum = [], [], 0.0

    def receive(src: int, tag: int) -> tuple[torch.Tensor, float]:
        nonlocal waited
        payload, stamp = torch.empty(rows, h, dtype=torch.float64), torch.empty(1, dtype=torch.float64)
        t0 = time.perf_counter()
        dist.recv(payload, src, tag=tag)
        dist.recv(stamp, src, tag=tag)
        waited += time.perf_counter() - t0
        return payload, float(stamp)  # the clock is the algorithm's own host value: one read per message

    def send(tensor: torch.Tensor, dst: int, tag: int, stamp: float) -> None:
        nonlocal sent
        tensor = tensor.detach().contiguous()
        stamp_t = torch.tensor([stamp], dtype=torch.float64)
        pending.extend([dist.isend(tensor, dst, tag=tag), dist.isend(stamp_t, dst, tag=tag)])
        pending.append((tensor, stamp_t))          # keep the buffers alive until the sends complete
        sent += tensor.numel() * tensor.element_size()

    tracker = SavedTensorTracker(stage.parameters())
    with tracker:                                   # bytes autograd saves for backward, live and peak
        for op, i in schedule_actions(kind, p, m)[rank]:
            if op == "F":
                if first:
                    inp, ready = xs[i], 0.0
                else:
                    inp, ready = receive(rank - 1, tag=i)
                    inp.requires_grad_(True)
                out = stage(inp)
                start = max(clock, ready)
                clock = start + t_forward
                if last:
                    out = F.mse_loss(out, ys[i]) / m      # mean over micro-batches = the batch's mean loss
                    loss_sum += out.item()
                else:
                    send(out, rank + 1, tag=i, stamp=clock)
                saved[i] = (inp, out)
                held += 1
                peak = max(peak, held)
            else:
                inp, out = saved.pop(i)
                if last:
                    out.backward()
                    ready = clock
                else:
                    grad, ready = receive(rank + 1, tag=m + i)
                    out.backward(grad)
                start = max(clock, ready)
                clock = start + t_backward
                if not first:
                    send(inp.grad, rank - 1, tag=m + i, stamp=clock)
                held -= 1
            timed.append((op, i, start, clock))
    for work in pending:
        if not isinstance(work, tuple):
            work.wait()
    grads = {n: prm.grad.clone() for n, prm in zip(names, stage.parameters())}
    result = {"loss": loss_sum if last else None, "grads": grads, "actions": tuple(timed), "clock": clock,
              "peak": peak, "sent": sent, "waited": waited,
              "saved": tracker.peak_bytes}
    if compare_torch:
        result.update(_torch_pipelining_rank(rank, world_size, kind, spec))
    return result



def _torch_pipelining_rank(rank: int, world_size: int, kind: str, spec: PipelineSpec) -> dict:
    """The same step under PyTorch's ``torch.distributed.pipelining`` (PipelineStage + ScheduleGPipe /
    Schedule1F1B, ``scale_grads=True``: each micro-batch's loss weighted 1/m, as ours)."""
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe  # loads its tracer: ~1 s per rank

    module, names = _stage_module(spec, world_size, rank)
    x, y = pipeline_data(spec)
    stage = PipelineStage(module, rank, world_size, torch.device("cpu"))
    schedule = (ScheduleGPipe if kind == "gpipe" else Schedule1F1B)(stage, spec.micro_batches, loss_fn=F.mse_loss)
    losses: list[torch.Tensor] = []
    if rank == 0 and rank == world_size - 1:
        schedule.step(x, target=y, losses=losses)
    elif rank == 0:
        schedule.step(x)
    elif rank == world_size - 1:
        schedule.step(target=y, losses=losses)
    else:
        schedule.step()
    loss = torch.stack(losses).mean().item() if losses else None
    return {"torch_loss": loss, "torch_grads": {n: prm.grad.clone() for n, prm in zip(names, module.parameters())}}


def _check_run(spec, stages, t_forward, t_backward, compare_torch) -> tuple[PipelineSpec, int, float, float]:
    spec = _check_spec(PipelineSpec() if spec is None else spec)
    stages = check_int("stages", stages, low=1, high=min(spec.layers, MAX_WORLD_SIZE))
    tf = check_float("t_forward", t_forward, low=0, low_open=True)
    tb = check_float("t_backward", t_backward, low=0, low_open=True)
    check_bool("compare_torch", compare_torch)
    return spec, stages, tf, tb


def assemble_pipeline_run(kind: str, spec: PipelineSpec, ranks: list[dict], compare_torch: bool = False) -> PipelineRun:
    """The :class:`PipelineRun` of one schedule from the stages' results (in rank order)."""
    makespan = max(r["clock"] for r in ranks)
    return PipelineRun(
        kind=kind, stages=len(ranks), micro_batches=spec.micro_batches, loss=ranks[-1]["loss"],
        grads={n: g for r in ranks for n, g in r["grads"].items()},
        actions=tuple(r["actions"] for r in ranks), makespan=makespan,
        idle=idle_times([r["actions"] for r in ranks], makespan), peak_held=tuple(r["peak"] for r in ranks),
        peak_saved_bytes=tuple(r["saved"] for r in ranks),
        bytes_sent=tuple(r["sent"] for r in ranks), recv_wait_s=tuple(r["waited"] for r in ranks),
        torch_loss=ranks[-1]["torch_loss"] if compare_torch else None,
        torch_grads={n: g for r in ranks for n, g in r["torch_grads"].items()} if compare_torch else None)


def run_pipelines(kinds=SCHEDULES, spec: PipelineSpec | None = None, *, stages: int = 4, t_forward: float = 1.0,
                  t_backward: float = 2.0, compare_torch: bool = False, timeout: float = 120) -> dict[str, PipelineRun]:
    """One training step of ``spec``'s model as a pipeline over ``stages`` gloo ranks (one process per
    stage, :func:`llmlab.distributed.run`) under each schedule of ``kinds`` in turn, in the same processes;
    returns ``{kind: PipelineRun}``.

    ``stages`` in [1, min(spec.layers, 32)]; ``spec.batch`` must split into ``spec.micro_batches`` equal
    micro-batches. ``t_forward``/``t_backward`` (> 0) set the logical clock. With ``compare_torch`` the same
    processes also run each step under ``torch.distributed.pipelining`` on the same weights.
    """
    if isinstance(kinds, str) or not hasattr(kinds, "__iter__"):
        raise TypeError(f"kinds must be a sequence of schedule names from {SCHEDULES}, got {kinds!r}")
    kinds = tuple(kinds)
    if not kinds:
        raise ValueError(f"kinds must hold at least one of {SCHEDULES}")
    for kind in kinds:
        check_choice("kinds", kind, SCHEDULES)
    spec, stages, tf, tb = _check_run(spec, stages, t_forward, t_backward, compare_torch)
    ranks = run(pipeline_rank_steps, stages, kinds, spec, tf, tb, compare_torch, timeout=timeout)
    return {kind: assemble_pipeline_run(kind, spec, [r[k] for r in ranks], compare_torch) for k, kind in enumerate(kinds)}


def run_pipeline(kind: str, spec: PipelineSpec | None = None, *, stages: int = 4, t_forward: float = 1.0,
                 t_backward: float = 2.0, compare_torch: bool = False, timeout: float = 120) -> PipelineRun:
    """:func:`run_pipelines` for one schedule ``kind`` ("gpipe" or "1f1b")."""
    check_choice("kind", kind, SCHEDULES)
    return run_pipelines((kind,), spec, stages=stages, t_forward=t_forward, t_backward=t_backward,
                         compare_torch=compare_torch, timeout=timeout)[kind]
