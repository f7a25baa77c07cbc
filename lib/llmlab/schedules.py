"""Learning-rate schedules as plain functions of the step number, and PyTorch's for comparison.

A scheduler is nothing more than a function ``step -> learning rate``. PyTorch hides that
function behind an object that mutates the optimizer each time ``scheduler.step()`` is called;
here each schedule is written down as the formula on the slide, so it can be plotted, tested
and reasoned about on its own. :func:`torch_trace` runs a real PyTorch scheduler to compare:

    cosine_annealing(t, base_lr=b, t_max=T)  ==  torch_trace(
        lambda opt: CosineAnnealingLR(opt, T_max=T), t + 1, base_lr=b)[t]

Convention: ``step`` counts optimizer steps already taken, so ``lr(0)`` is the learning rate
of the very first update (PyTorch's ``scheduler.step()`` is called after ``optimizer.step()``).

Numerics (see ``tests/test_schedules.py``): :func:`cosine_annealing` uses the same closed form
as PyTorch's ``CosineAnnealingLR._get_closed_form_lr``. ``CosineAnnealingLR.step()`` instead
*recurses*: it stores ``lr = eta_min + x`` and updates ``x`` by the ratio of two cosines. Right
after the trough (step ``t_max``) ``x`` is tiny next to ``eta_min``, so recovering it as
``lr - eta_min`` loses relative precision of about ``eps * eta_min / x ~ eps * t_max**2``, and
the ratio recursion carries that error through the whole rising half. Up to ``t_max = 100``
(tested) the two agree to 1e-12 relative everywhere, and on the first descent for any
``t_max``; past the trough of longer schedules with ``eta_min > 0`` PyTorch drifts by up to
``~0.15 * eps * t_max**2`` relative (1e-12 near t_max = 300, 2e-10 at 5000), while the closed
form stays within 8 eps * base_lr of the exact cosine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ._checks import check_float, check_int
from ._torch import isolated_rng, resolve_device

__all__ = [
    "cosine_annealing",
    "cosine_with_restarts",
    "warmup_cosine",
    "torch_trace",
    "ScheduleRun",
    "train_regression",
]


# ----------------------------------------------------------------------------- validation


def _check_lr(name: str, value, *, maximum: float | None = None) -> float:
    """A learning rate: a finite number in ``[0, maximum]`` (TypeError / ValueError naming it)."""
    return check_float(name, value, low=0.0, high=maximum)


# ----------------------------------------------------------------------------- schedules


def cosine_annealing(step: int, *, base_lr: float, t_max: int, eta_min: float = 0.0) -> float:
    """The learning rate of PyTorch's ``CosineAnnealingLR`` after ``step`` scheduler steps.

    eta(t) = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / t_max)) / 2

    It falls from ``base_lr`` (t = 0) to ``eta_min`` (t = t_max) and, because nothing stops the
    cosine, *rises again* past ``t_max``: back at ``base_lr`` at ``2 * t_max``, period
    ``2 * t_max``. That is what PyTorch does too; it is not a restart (see
    :func:`cosine_with_restarts`). ``eta_min > base_lr`` (an upside-down cosine that PyTorch
    accepts) is rejected as almost certainly swapped arguments.
    """
    step = check_int("step", step, low=0)
    t_max = check_int("t_max", t_max, low=1)
    base_lr = _check_lr("base_lr", base_lr)
    eta_min = _check_lr("eta_min", eta_min, maximum=base_lr)
    # Same operation order as PyTorch's closed form, so the two agree to the last bit or two.
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * step / t_max)) / 2


def cosine_with_restarts(step: int, *, base_lr: float, t_0: int, t_mult: int = 1, eta_min: float = 0.0) -> float:
    """The learning rate of PyTorch's ``CosineAnnealingWarmRestarts`` after ``step`` steps (SGDR).

    Cycle i lasts T_i = t_0 * t_mult**i steps; with t_cur the steps since the cycle began,

    eta(t) = eta_min + (base_lr - eta_min) * (1 + cos(pi * t_cur / T_i)) / 2

    so the rate jumps straight back to ``base_lr`` at each restart (steps t_0, t_0 + t_0*t_mult, ...).
    """
    step = check_int("step", step, low=0)
    t_0 = check_int("t_0", t_0, low=1)
    t_mult = check_int("t_mult", t_mult, low=1)
    base_lr = _check_lr("base_lr", base_lr)
    eta_min = _check_lr("eta_min", eta_min, maximum=base_lr)
    if t_mult == 1:
        t_i, t_cur = t_0, step % t_0
    else:
        # Walk the cycles in integers (exact; PyTorch's epoch= path uses a log instead).
        cycle_start, t_i = 0, t_0
        while step >= cycle_start + t_i:
            cycle_start += t_i
            t_i *= t_mult
        t_cur = step - cycle_start
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t_cur / t_i)) / 2


def warmup_cosine(step: int, *, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    """Linear warm-up from 0, cosine decay to ``min_lr``, then flat: the usual LLM schedule.

    Warm-up (step < warmup_steps):   eta(t) = base_lr * t / warmup_steps
    Decay (warmup_steps <= t <= total_steps), with p = (t - warmup_steps) / (total_steps - warmup_steps):
                                     eta(t) = min_lr + (base_lr - min_lr) * (1 + cos(pi * p)) / 2
    After total_steps:               eta(t) = min_lr

    Edge convention (the one of Hugging Face's ``get_cosine_schedule_with_warmup``): lr(0) = 0,
    so the first update is a no-op; lr(warmup_steps) = base_lr is the peak; lr(total_steps) =
    min_lr. ``warmup_steps = 0`` gives a pure cosine from step 0. ``warmup_steps = total_steps``
    is allowed (warm-up straight into the floor). Unlike Hugging Face's version, which keeps
    following the cosine and climbs back up if you train past ``total_steps``, this one stays at
    ``min_lr``. LLaMA used 2,000 warm-up steps and ``min_lr = 0.1 * base_lr``.
    """
    step = check_int("step", step, low=0)
    total_steps = check_int("total_steps", total_steps, low=1)
    warmup_steps = check_int("warmup_steps", warmup_steps, low=0)
    if warmup_steps > total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    base_lr = _check_lr("base_lr", base_lr)
    min_lr = _check_lr("min_lr", min_lr, maximum=base_lr)
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * progress)) / 2


def torch_trace(make_scheduler: Callable[[torch.optim.Optimizer], object], steps: int, *, base_lr: float) -> list[float]:
    """The learning rate a PyTorch scheduler gives at each of ``steps`` steps.

    Builds a one-parameter SGD optimizer with ``lr=base_lr``, calls ``make_scheduler(optimizer)``
    and records ``optimizer.param_groups[0]["lr"]`` before each of ``steps`` rounds of
    ``optimizer.step(); scheduler.step()``. Entry ``t`` is the rate used by update ``t``, the
    same convention as the functions above. Returns a list of ``steps`` floats.
    """
    if not callable(make_scheduler):
        raise TypeError(f"make_scheduler must be a callable optimizer -> scheduler, got {type(make_scheduler).__name__}")
    steps = check_int("steps", steps, low=0, high=10**6)  # a million optimizer steps: ~10 s
    base_lr = _check_lr("base_lr", base_lr)
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    optimizer = torch.optim.SGD([param], lr=base_lr)
    scheduler = make_scheduler(optimizer)
    if not hasattr(scheduler, "step"):
        raise TypeError(f"make_scheduler must return a scheduler with .step(), got {type(scheduler).__name__}")
    lrs = []
    for _ in range(steps):
        lrs.append(float(optimizer.param_groups[0]["lr"]))
        optimizer.step()  # no gradient, so a no-op; keeps PyTorch's "step order" check quiet
        scheduler.step()
    return lrs


# ----------------------------------------------------------------------------- a tiny training run


@dataclass(frozen=True)
class ScheduleRun:
    """One training run: ``losses[t]`` is the full-data training loss after ``t`` updates
    (length ``len(lrs) + 1``), ``lrs`` the learning rates used, ``final_loss = losses[-1]``."""

    losses: list[float]
    lrs: list[float]

    @property
    def final_loss(self) -> float:
        return self.losses[-1]


def train_regression(
    lrs: Sequence[float],
    *,
    seed: int = 0,
    n_samples: int = 512,
    n_features: int = 8,
    width: int = 64,
    batch_size: int = 16,
    noise: float = 0.3,
    device: torch.device | str | None = None,
) -> ScheduleRun:
    """Train a small MLP with Adam for ``len(lrs)`` steps, update t using learning rate ``lrs[t]``.

    The task is a seeded teacher-student regression: x ~ N(0, I) of shape
    ``(n_samples, n_features)``, y = teacher(x) + noise * N(0, 1) with a random 2-layer tanh
    teacher, and a 2-hidden-layer ``width``-wide student fit by mini-batches of ``batch_size``
    under the mean-squared error. Mini-batch noise keeps a constant-LR run bouncing above the
    minimum (Adam's step is about ``lr`` in size whatever the gradient); a schedule that ends
    small lets it settle. ``losses`` are measured on all ``n_samples`` points, so they are
    smooth. Same seed, same numbers.
    """
    if isinstance(lrs, (str, bytes)) or not hasattr(lrs, "__len__"):
        raise TypeError(f"lrs must be a sequence of learning rates, got {type(lrs).__name__}")
    if not 1 <= len(lrs) <= 100_000:
        raise ValueError(f"lrs must hold between 1 and 100000 learning rates (one per step), got {len(lrs)}")
    lrs = [_check_lr(f"lrs[{i}]", lr) for i, lr in enumerate(lrs)]
    seed = check_int("seed", seed, low=0)
    n_samples = check_int("n_samples", n_samples, low=1)
    n_features = check_int("n_features", n_features, low=1)
    width = check_int("width", width, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    noise = _check_lr("noise", noise)
    device = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_samples, n_features, generator=gen)
    w1 = torch.randn(n_features, 16, generator=gen) / math.sqrt(n_features)
    w2 = torch.randn(16, 1, generator=gen) / math.sqrt(16)
    y = torch.tanh(2 * x @ w1) @ w2 * 2 + noise * torch.randn(n_samples, 1, generator=gen)
    x, y = x.to(device), y.to(device)

    # A model this small is faster on one CPU thread than on several (every op is too small to
    # split), and on a busy machine several threads can be 20x slower; restored afterwards.
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        with isolated_rng(seed):  # seeded init without touching the caller's RNG
            model = torch.nn.Sequential(
                torch.nn.Linear(n_features, width), torch.nn.Tanh(),
                torch.nn.Linear(width, width), torch.nn.Tanh(),
                torch.nn.Linear(width, 1),
            ).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=lrs[0] if lrs else 0.0)
        loss_fn = torch.nn.MSELoss()

        def full_loss() -> float:
            with torch.no_grad():
                return float(loss_fn(model(x), y))

        losses = [full_loss()]
        for lr in lrs:
            batch = torch.randint(0, n_samples, (batch_size,), generator=gen).to(device)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x[batch]), y[batch]).backward()
            optimizer.step()
            losses.append(full_loss())
    finally:
        torch.set_num_threads(threads)
    return ScheduleRun(losses=losses, lrs=lrs)
