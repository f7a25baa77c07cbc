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
(tested) the two agree to 1e-12 relative everywhere, and on the first descent for every
``t_max`` tested (up to 5000); past the trough of longer schedules with ``eta_min > 0`` PyTorch
drifts by ``c * eps * t_max**2`` relative, with ``c`` erratic, between about 0.003 and 0.15
over the cases measured (torch 2.13; e.g. 1.0e-12 at t_max = 300 and 5.8e-11 at 2000 with
eta_min = base_lr / 2, 1.9e-10 at 5000 with eta_min = 0.999 base_lr), while the closed form
stays within 8 eps * base_lr of the exact cosine.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ._checks import check_choice, check_float, check_int, check_sequence
from ._torch import isolated_rng, resolve_device

__all__ = [
    "cosine_annealing",
    "cosine_with_restarts",
    "warmup_cosine",
    "torch_trace",
    "ScheduleRun",
    "ScheduleComparison",
    "compare_schedules",
]


# ----------------------------------------------------------------------------- validation


def _check_lr(name: str, value, *, maximum: float | None = None) -> float:
    """A learning rate: a finite number in ``[0, maximum]`` (TypeError / ValueError naming it)."""
    return check_float(name, value, low=0.0, high=maximum)


def _check_step(step, base_lr, floor_name: str, floor) -> tuple[int, float, float]:
    """What every closed-form schedule takes: a ``step`` >= 0, a ``base_lr`` and a floor (``eta_min`` /
    ``min_lr``) >= 0; returns them as ``(int, float, float)``. A floor above ``base_lr`` is what PyTorch
    accepts too (the cosine then runs upside down, rising to the "floor"): allowed, with a warning, since
    it is usually swapped arguments."""
    base_lr = _check_lr("base_lr", base_lr)
    floor = _check_lr(floor_name, floor)
    if floor > base_lr:
        warnings.warn(f"{floor_name}={floor:g} is above base_lr={base_lr:g}: the schedule rises from base_lr "
                      f"towards {floor_name} (as PyTorch computes it); swapped arguments?", stacklevel=3)
    return check_int("step", step, low=0), base_lr, floor


# ----------------------------------------------------------------------------- schedules


def cosine_annealing(step: int, *, base_lr: float, t_max: int, eta_min: float = 0.0) -> float:
    """The learning rate of PyTorch's ``CosineAnnealingLR`` after ``step`` scheduler steps.

    eta(t) = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / t_max)) / 2

    It falls from ``base_lr`` (t = 0) to ``eta_min`` (t = t_max) and, because nothing stops the
    cosine, *rises again* past ``t_max``: back at ``base_lr`` at ``2 * t_max``, period
    ``2 * t_max``. That is what PyTorch does too; it is not a restart (see
    :func:`cosine_with_restarts`). ``eta_min > base_lr`` gives the upside-down cosine PyTorch computes
    too, with a warning (usually swapped arguments).
    """
    step, base_lr, eta_min = _check_step(step, base_lr, "eta_min", eta_min)
    t_max = check_int("t_max", t_max, low=1)
    # Same operation order as PyTorch's closed form, so the two agree to the last bit or two.
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * step / t_max)) / 2


def cosine_with_restarts(step: int, *, base_lr: float, t_0: int, t_mult: int = 1, eta_min: float = 0.0) -> float:
    """The learning rate of PyTorch's ``CosineAnnealingWarmRestarts`` after ``step`` steps (SGDR).

    Cycle i lasts T_i = t_0 * t_mult**i steps; with t_cur the steps since the cycle began,

    eta(t) = eta_min + (base_lr - eta_min) * (1 + cos(pi * t_cur / T_i)) / 2

    so the rate jumps straight back to ``base_lr`` at each restart (steps t_0, t_0 + t_0*t_mult, ...).
    """
    step, base_lr, eta_min = _check_step(step, base_lr, "eta_min", eta_min)
    t_0 = check_int("t_0", t_0, low=1)
    t_mult = check_int("t_mult", t_mult, low=1)
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
    so the first update leaves the weights unchanged (a no-op for the weights only: Adam still
    folds that gradient into its moments and advances its step counter); lr(warmup_steps) = base_lr is the peak; lr(total_steps) =
    min_lr. ``warmup_steps = 0`` gives a pure cosine from step 0. ``warmup_steps = total_steps``
    is allowed (warm-up straight into the floor). Unlike Hugging Face's version, which keeps
    following the cosine and climbs back up if you train past ``total_steps``, this one stays at
    ``min_lr``. LLaMA used 2,000 warm-up steps and ``min_lr = 0.1 * base_lr``.
    """
    step, base_lr, min_lr = _check_step(step, base_lr, "min_lr", min_lr)
    total_steps = check_int("total_steps", total_steps, low=1)
    warmup_steps = check_int("warmup_steps", warmup_steps, low=0)
    if warmup_steps > total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
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
#
# The task: a seeded teacher-student regression. x ~ N(0, I) (n_samples, n_features); the targets
# are y = teacher(x) + noise * N(0, 1) with a random 2-layer tanh teacher; a 2-hidden-layer
# width-wide tanh MLP learns them with Adam on mini-batches under the mean-squared error. A second,
# held-out set of n_test points from the same teacher and noise measures what was learnt: on it no
# model can beat, on average, the teacher itself, whose MSE there is the *noise floor* (≈ noise²).
# A training MSE below that floor is memorised noise, not learning.
#
# Several schedules and seeds train at once, as one batch of independent models: a model's
# parameters are one slice of a stacked tensor, its loss is one term of a sum, and Adam is
# element-wise, so every slice gets exactly the update a separate run would (tests/test_schedules.py
# holds it against one ``nn.Sequential`` trained with ``torch.optim.Adam``).


@dataclass(frozen=True)
class ScheduleRun:
    """One training run. ``losses[i]`` and ``test_losses[i]`` are the training-set and held-out MSE
    after ``eval_steps[i]`` updates (every update by default, so ``losses[t]`` is after t updates);
    ``lrs`` the learning rates used; ``noise_floor`` the held-out MSE of the teacher itself."""

    losses: list[float]
    lrs: list[float]
    test_losses: list[float]
    eval_steps: list[int]
    noise_floor: float

    @property
    def final_loss(self) -> float:
        """Training-set MSE after the last update."""
        return self.losses[-1]

    @property
    def final_test_loss(self) -> float:
        """Held-out MSE after the last update: the number to judge a schedule by."""
        return self.test_losses[-1]


@dataclass(frozen=True)
class ScheduleComparison:
    """Several schedules trained on the same seeds: ``train[g, s, i]`` / ``test[g, s, i]`` is the
    training / held-out MSE of schedule ``names[g]``, seed ``seeds[s]``, after ``eval_steps[i]``
    updates (CPU float64 tensors); ``noise_floor[s]`` the held-out MSE of seed s's teacher."""

    names: tuple[str, ...]
    seeds: tuple[int, ...]
    lrs: dict[str, list[float]]
    eval_steps: list[int]
    train: torch.Tensor
    test: torch.Tensor
    noise_floor: torch.Tensor

    def final(self, name: str, split: str = "test") -> torch.Tensor:
        """The final MSE of schedule ``name`` on every seed, shape ``(n_seeds,)``; split "test" or "train"."""
        name = check_choice("name", name, self.names)
        split = check_choice("split", split, ("test", "train"))
        return (self.test if split == "test" else self.train)[self.names.index(name), :, -1]

    def run(self, name: str, seed: int) -> ScheduleRun:
        """One (schedule, seed) as a :class:`ScheduleRun`."""
        name = check_choice("name", name, self.names)
        seed = check_choice("seed", seed, self.seeds)
        g, s = self.names.index(name), self.seeds.index(seed)
        return ScheduleRun(losses=self.train[g, s].tolist(), lrs=list(self.lrs[name]),
                           test_losses=self.test[g, s].tolist(), eval_steps=list(self.eval_steps),
                           noise_floor=float(self.noise_floor[s]))


def _teacher_data(seed: int, n_samples: int, n_test: int, n_features: int, noise: float, steps: int, batch_size: int):
    """Seed ``seed``'s data: training and held-out points, the teacher's noise floor, the mini-batch indices."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_samples, n_features, generator=gen, dtype=torch.float64)
    w1 = torch.randn(n_features, 16, generator=gen, dtype=torch.float64) / math.sqrt(n_features)
    w2 = torch.randn(16, 1, generator=gen, dtype=torch.float64) / math.sqrt(16)

    def teacher(inputs):
        return torch.tanh(2 * inputs @ w1) @ w2 * 2

    y = teacher(x) + noise * torch.randn(n_samples, 1, generator=gen, dtype=torch.float64)
    x_test = torch.randn(n_test, n_features, generator=gen, dtype=torch.float64)
    clean = teacher(x_test)
    y_test = clean + noise * torch.randn(n_test, 1, generator=gen, dtype=torch.float64)
    floor = float(((y_test - clean) ** 2).mean())
    batches = torch.randint(0, n_samples, (steps, batch_size), generator=gen)
    return x.float(), y.float(), x_test.float(), y_test.float(), floor, batches


def _student_init(seed: int, n_features: int, width: int) -> list[torch.Tensor]:
    """Seed ``seed``'s initial student, as (in, out) weight matrices and (1, out) biases."""
    with isolated_rng(seed):  # PyTorch's default Linear init, without touching the caller's RNG
        layers = [torch.nn.Linear(n_features, width), torch.nn.Linear(width, width), torch.nn.Linear(width, 1)]
    return [t.detach() for layer in layers for t in (layer.weight.T, layer.bias[None])]


def _mlp(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The student for a stack of models: x (models, n, features) -> (models, n, 1)."""
    w1, b1, w2, b2, w3, b3 = params
    h = torch.tanh(torch.baddbmm(b1, x, w1))
    h = torch.tanh(torch.baddbmm(b2, h, w2))
    return torch.baddbmm(b3, h, w3)


def _train_stacked(lr_table: list[list[float]], seeds: list[int], *, n_samples: int, n_test: int, n_features: int,
                   width: int, batch_size: int, noise: float, eval_every: int, device: torch.device):
    """Train ``len(lr_table)`` schedules x ``len(seeds)`` seeds at once; returns (eval_steps, train, test, floors)."""
    steps = len(lr_table[0])
    data = [_teacher_data(s, n_samples, n_test, n_features, noise, steps, batch_size) for s in seeds]
    x, y, x_test, y_test = (torch.stack([d[i] for d in data]).to(device) for i in range(4))  # (S, n, ...)
    floors = torch.tensor([d[4] for d in data], dtype=torch.float64)
    batches = torch.stack([d[5] for d in data]).to(device)                                    # (S, steps, batch)
    init = [torch.stack(ts).to(device) for ts in zip(*(_student_init(s, n_features, width) for s in seeds))]
    groups = [[t.clone().requires_grad_(True) for t in init] for _ in lr_table]  # one stacked model set per schedule
    optimizer = torch.optim.Adam([{"params": params, "lr": lrs[0]} for params, lrs in zip(groups, lr_table)])
    rows = torch.arange(len(seeds), device=device)[:, None]

    eval_steps = sorted(set(range(0, steps + 1, eval_every)) | {steps})
    train_curve, test_curve = [], []

    def evaluate():  # stays on the device: no host sync inside the training loop
        with torch.no_grad():
            train_curve.append(torch.stack([((_mlp(p, x) - y) ** 2).mean(dim=(1, 2)) for p in groups]))
            test_curve.append(torch.stack([((_mlp(p, x_test) - y_test) ** 2).mean(dim=(1, 2)) for p in groups]))

    evaluate()
    for t in range(steps):
        for group, lrs in zip(optimizer.param_groups, lr_table):
            group["lr"] = lrs[t]
        idx = batches[:, t]                                      # (S, batch): this step's examples, per seed
        xb, yb = x[rows, idx], y[rows, idx]
        optimizer.zero_grad(set_to_none=True)
        # Each model's loss is its own mini-batch mean; summing them keeps every gradient separate.
        sum(((_mlp(p, xb) - yb) ** 2).mean(dim=(1, 2)).sum() for p in groups).backward()
        optimizer.step()
        if t + 1 in eval_steps:
            evaluate()
    train = torch.stack(train_curve, dim=-1).double().cpu()   # (G, S, len(eval_steps))
    test = torch.stack(test_curve, dim=-1).double().cpu()
    return eval_steps, train, test, floors


def _check_lrs(name: str, lrs) -> list[float]:
    if isinstance(lrs, (str, bytes)) or not hasattr(lrs, "__len__"):
        raise TypeError(f"{name} must be a sequence of learning rates, got {type(lrs).__name__}")
    if not 1 <= len(lrs) <= 100_000:
        raise ValueError(f"{name} must hold between 1 and 100000 learning rates (one per step), got {len(lrs)}")
    return [_check_lr(f"{name}[{i}]", lr) for i, lr in enumerate(lrs)]


def _check_task(n_samples, n_test, n_features, width, batch_size, noise, eval_every, device):
    return dict(n_samples=check_int("n_samples", n_samples, low=1), n_test=check_int("n_test", n_test, low=1),
                n_features=check_int("n_features", n_features, low=1), width=check_int("width", width, low=1),
                batch_size=check_int("batch_size", batch_size, low=1), noise=_check_lr("noise", noise),
                eval_every=check_int("eval_every", eval_every, low=1), device=resolve_device(device))


def _run_single_threaded(device: torch.device, fn):
    # Models this small are faster on one CPU thread than on several (every op is too small to
    # split), and on a busy machine several threads can be 20x slower; restored afterwards.
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


def compare_schedules(
    schedules: dict[str, Sequence[float]],
    *,
    seeds: Sequence[int] = tuple(range(8)),
    n_samples: int = 512,
    n_test: int = 2048,
    n_features: int = 8,
    width: int = 64,
    batch_size: int = 16,
    noise: float = 0.3,
    eval_every: int = 1,
    device: torch.device | str | None = None,
) -> ScheduleComparison:
    """Train the student once per (schedule, seed) on the same data and mini-batches; the task is ``_train_regression``'s.

    ``schedules`` maps a name to a list of learning rates, one per update (all of one length).
    Every schedule sees, for a given seed, the same data, the same initial model and the same
    sequence of mini-batches: the only difference between two runs of one seed is the schedule,
    and the spread over ``seeds`` says how far a difference between schedules is from noise.
    """
    if not isinstance(schedules, dict) or not schedules:
        raise TypeError(f"schedules must be a non-empty dict name -> learning rates, got {type(schedules).__name__}")
    table = {str(name): _check_lrs(f"schedules[{name!r}]", lrs) for name, lrs in schedules.items()}
    if len({len(lrs) for lrs in table.values()}) != 1:
        raise ValueError(f"schedules must all have the same number of steps, got {[len(v) for v in table.values()]}")
    seeds = [check_int(f"seeds[{i}]", s, low=0) for i, s in enumerate(check_sequence("seeds", seeds, what="seeds"))]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    task = _check_task(n_samples, n_test, n_features, width, batch_size, noise, eval_every, device)
    eval_steps, train, test, floors = _run_single_threaded(
        task["device"], lambda: _train_stacked(list(table.values()), seeds, **task))
    return ScheduleComparison(names=tuple(table), seeds=tuple(seeds), lrs=table, eval_steps=eval_steps,
                              train=train, test=test, noise_floor=floors)


def _train_regression(
    lrs: Sequence[float],
    *,
    seed: int = 0,
    n_samples: int = 512,
    n_test: int = 2048,
    n_features: int = 8,
    width: int = 64,
    batch_size: int = 16,
    noise: float = 0.3,
    eval_every: int = 1,
    device: torch.device | str | None = None,
) -> ScheduleRun:
    """Train a small MLP with Adam for ``len(lrs)`` steps, update t using learning rate ``lrs[t]``.

    The task is a seeded teacher-student regression: x ~ N(0, I) of shape
    ``(n_samples, n_features)``, y = teacher(x) + noise * N(0, 1) with a random 2-layer tanh
    teacher, and a 2-hidden-layer ``width``-wide student fit by mini-batches of ``batch_size``
    under the mean-squared error. Mini-batch noise keeps a constant-LR run bouncing above the
    minimum (Adam's step is about ``lr`` in size whatever the gradient); a schedule that ends
    small lets it settle. ``losses`` are measured on all ``n_samples`` training points,
    ``test_losses`` on ``n_test`` held-out points of the same teacher and noise, every
    ``eval_every`` updates (and after the last). Same seed, same numbers.
    """
    return compare_schedules({"run": lrs}, seeds=[seed], n_samples=n_samples, n_test=n_test, n_features=n_features,
                             width=width, batch_size=batch_size, noise=noise, eval_every=eval_every,
                             device=device).run("run", seed)
