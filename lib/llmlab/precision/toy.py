"""The toy run of notebook 08: lost updates and gradient underflow on a linear regression.

:func:`train_toy` trains 16 weights with plain SGD in one of four modes (:data:`TOY_MODES`), each
a small step function (``_STEPS``): fp32 (the reference), half-precision weights alone (every
update is rounded away), a half model with an fp32 master copy (learns until the per-example
gradients flush to zero in fp16), and the same with dynamic loss scaling (learns to the best loss
a half model can hold).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import nn

from .._checks import check_choice, check_float, check_int
from .._torch import resolve_device, resolve_dtype
from .mixed import HALF_DTYPES, DynamicLossScaler, MasterWeightsOptimizer

__all__ = ["ToyRun", "TOY_MODES", "toy_problem", "train_toy"]

TOY_MODES = ("fp32", "fp16_weights", "fp16_master", "fp16_master_scaled")


@dataclass(frozen=True)
class ToyRun:
    """One :func:`train_toy` run. ``losses`` has ``steps + 1`` entries (index 0: before training),
    ``underflow`` and ``scales`` one per step.

    ``dtype``: the precision of the model's weights (float32 for mode "fp32").
    ``losses``: the training loss of the weights the model holds (mean squared error of the
    predictions X w against y, evaluated in fp32).
    ``underflow``: per step, the fraction of the gradient w.r.t. the model output that was
    non-zero in fp32 but flushed to zero when stored in the low-precision dtype.
    ``scales``: loss scale used at each step (1.0 without scaling); ``skipped``: steps skipped
    because the scaled gradients overflowed.
    """

    mode: str
    dtype: torch.dtype
    losses: tuple[float, ...]
    underflow: tuple[float, ...]
    scales: tuple[float, ...] = ()
    skipped: int = 0


def toy_problem(n: int = 4096, d: int = 16, *, seed: int = 0):
    """The regression of :func:`train_toy`: returns ``(X, y, w_star, w0)`` on the CPU.

    Inputs X (n, d) with exactly orthogonal ±1 columns (X^T X = n I; n a power of two >= 2d),
    targets ``y = X w_star`` (n,) with w* (d,) in [1.05, 1.95), and a start ``w0 = w* + delta`` with
    |delta| in [0.004, 0.012], so every weight stays in [1, 2), where the fp16 spacing is 2^-10.
    """
    d = check_int("d", d, low=1, high=4096)
    n = check_int("n", n, low=2 * d, high=2**24)
    seed = check_int("seed", seed, low=0)
    if n & (n - 1):
        raise ValueError(f"n must be a power of two >= 2 d = {2 * d}, got {n}")
    gen = torch.Generator().manual_seed(seed)
    rows = torch.arange(n)
    cols = torch.arange(1, d + 1)
    # Columns of a Sylvester-Hadamard matrix, H[i, j] = (-1)^popcount(i & j), rows signed at random.
    and_bits = rows[:, None] & cols[None, :]
    popcount = sum(((and_bits >> b) & 1) for b in range(int(n).bit_length()))
    row_sign = torch.randint(0, 2, (n, 1), generator=gen) * 2 - 1
    X = ((1 - 2 * (popcount % 2)) * row_sign).to(torch.float32)
    w_star = 1.05 + 0.9 * torch.rand(d, generator=gen)
    sign = torch.randint(0, 2, (d,), generator=gen) * 2 - 1
    delta = sign * (0.004 + 0.008 * torch.rand(d, generator=gen))
    return X, X @ w_star, w_star, w_star + delta


# ---------------------------------------------------------------------------------------------
# Loss scalers behind one interface: the current scale, scale the loss, a (possibly skipped) step
# ---------------------------------------------------------------------------------------------


class _OurScaling:
    """:class:`DynamicLossScaler`: unscale the fp32 grads, step unless one overflowed, update."""

    def __init__(self, device_type: str, init_scale: float, growth_interval: int):
        self.scaler = DynamicLossScaler(init_scale=init_scale, growth_interval=growth_interval)

    def current(self) -> float:
        return self.scaler.scale

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        return self.scaler.scale_loss(loss)

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        found_inf = self.scaler.unscale_([p.grad for p in params])
        if not found_inf:
            optimizer.step()
        self.scaler.update(found_inf)
        return found_inf


class _TorchScaling:
    """``torch.amp.GradScaler``; a step was skipped exactly when the scale went down."""

    def __init__(self, device_type: str, init_scale: float, growth_interval: int):
        self.scaler = torch.amp.GradScaler(device_type, init_scale=init_scale, growth_interval=growth_interval)

    def current(self) -> float:
        return float(self.scaler.get_scale())

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        return self.scaler.scale(loss)

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        before = self.current()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.current() < before


_SCALERS = {"llmlab": _OurScaling, "torch": _TorchScaling}


# ---------------------------------------------------------------------------------------------
# One training step per mode
# ---------------------------------------------------------------------------------------------


@dataclass
class _Toy:
    """Everything a step function needs. ``w`` is the weight the model holds (fp32, or ``dtype``
    in the explicit half modes); ``optimizer`` is the torch SGD that updates (a master copy of) it;
    ``master`` is set when an explicit fp32 master copy exists; ``autocast`` names the device type
    whose ``torch.autocast`` runs the forward (then ``w`` itself is the fp32 master)."""

    X: torch.Tensor
    X_lp: torch.Tensor
    y: torch.Tensor
    w: nn.Parameter
    dtype: torch.dtype
    global_batch: int
    optimizer: torch.optim.Optimizer
    master: MasterWeightsOptimizer | None = None
    scaler: _OurScaling | _TorchScaling | None = None
    autocast: str | None = None

    def loss(self, pred: torch.Tensor) -> torch.Tensor:
        """Our n examples are one micro-batch of ``global_batch``: sum((pred - y)^2) / global_batch."""
        return ((pred - self.y) ** 2).sum() / self.global_batch

    def mse(self) -> float:
        """Mean squared error of the weights the forward sees, in fp32."""
        held = self.w.detach()
        if self.autocast is not None:
            held = held.to(self.dtype)  # autocast rounds the fp32 master to dtype for the forward
        return float(((self.X @ held.float() - self.y) ** 2).mean())

    def grads_to_master(self) -> None:
        if self.master is not None:
            self.master.grads_to_master()

    def master_to_model(self) -> None:
        if self.master is not None:
            self.master.master_to_model()


class _Step(NamedTuple):
    underflow: float  # fraction of output gradients flushed to zero in dtype
    scale: float      # the loss scale this step used
    skipped: bool     # the step was skipped (scaled gradients overflowed)


def _half_forward(toy: _Toy) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The prediction of the half model, upcast to fp32 for the loss (as autocast does), and a dict
    that backward fills with the gradient w.r.t. the prediction in ``dtype`` ("half") and fp32."""
    seen: dict[str, torch.Tensor] = {}
    if toy.autocast is not None:
        with torch.autocast(toy.autocast, dtype=toy.dtype):
            pred = toy.X @ toy.w  # half GEMM, half output
    else:
        # A half GEMM with fp32 accumulation: exact products, one rounding of the output.
        pred = (toy.X_lp @ toy.w.float()).to(toy.dtype)
    pred.register_hook(lambda g: seen.__setitem__("half", g))
    pred = pred.float()
    pred.register_hook(lambda g: seen.__setitem__("fp32", g))
    return pred, seen


def _flushed(seen: dict[str, torch.Tensor]) -> float:
    """Fraction of output gradients that are non-zero in fp32 but zero in half precision."""
    return float(((seen["half"] == 0) & (seen["fp32"] != 0)).float().mean())


def _step_fp32(toy: _Toy) -> _Step:
    toy.loss(toy.X @ toy.w).backward()
    toy.optimizer.step()
    return _Step(0.0, 1.0, False)


def _step_half_weights(toy: _Toy) -> _Step:
    pred, seen = _half_forward(toy)
    toy.loss(pred).backward()
    underflow = _flushed(seen)
    toy.optimizer.step()  # the update lr * g is computed and added in dtype: it rounds away
    return _Step(underflow, 1.0, False)


def _step_master(toy: _Toy) -> _Step:
    pred, seen = _half_forward(toy)
    toy.loss(pred).backward()
    underflow = _flushed(seen)
    toy.grads_to_master()
    toy.optimizer.step()  # in fp32, on the master copy
    toy.master_to_model()
    return _Step(underflow, 1.0, False)


def _step_master_scaled(toy: _Toy) -> _Step:
    pred, seen = _half_forward(toy)
    scale = toy.scaler.current()
    toy.scaler.scale_loss(toy.loss(pred)).backward()
    underflow = _flushed(seen)
    toy.grads_to_master()  # still multiplied by the scale: the scaler divides them in fp32
    skipped = toy.scaler.step(toy.optimizer)
    toy.master_to_model()
    return _Step(underflow, scale, skipped)


_STEPS: dict[str, Callable[[_Toy], _Step]] = {
    "fp32": _step_fp32,
    "fp16_weights": _step_half_weights,
    "fp16_master": _step_master,
    "fp16_master_scaled": _step_master_scaled,
}


def train_toy(mode: str, *, dtype=torch.float16, steps: int = 200, lr: float = 4.0, n: int = 4096, d: int = 16,
              global_batch: int = 2**20, init_scale: float = 2.0**16, growth_interval: int = 2000,
              scaler: str = "llmlab", impl: str | None = None, seed: int = 0, device=None) -> ToyRun:
    """Train a linear regressor with plain SGD in one of :data:`TOY_MODES`; return its curves.

    Task: ``pred = X w`` (X: (n, d) orthogonal ±1 columns), loss ``sum((pred - y)^2) / global_batch``:
    our ``n`` examples are one micro-batch of a global batch of ``global_batch``, so each example's
    gradient ``2 r / global_batch`` is ~3e-8 at the start, the size of per-token gradients in LLM
    training. The gradient is ``g = 2 (n / global_batch) (w - w*)``; with the defaults SGD's update
    ``lr g = (w - w*) / 32`` is below half an fp16 ulp (2^-11 ~ 4.9e-4 for weights in [1, 2)).

    - ``"fp32"``: everything in fp32 (the reference curve).
    - ``"fp16_weights"``: weights, grads and the SGD update in ``dtype``; no master copy -> stalls.
    - ``"fp16_master"``: ``dtype`` model, fp32 master copy (:class:`MasterWeightsOptimizer`), no
      loss scaling -> learns until the per-example gradients flush to zero (fp16).
    - ``"fp16_master_scaled"``: plus dynamic loss scaling, ``scaler="llmlab"``
      (:class:`DynamicLossScaler`) or ``"torch"`` (``torch.amp.GradScaler``), starting at
      ``init_scale`` and growing after ``growth_interval`` good steps.

    ``dtype`` may be bf16 (same modes, "fp16" then means "half"). ``impl="explicit"`` (default on
    CPU) keeps real half tensors and rounds the matmul output like a half GEMM with fp32
    accumulation; ``impl="autocast"`` (default on CUDA) keeps fp32 master params in the model
    and runs the forward under ``torch.autocast``. ``device`` defaults to the CPU (not
    :func:`llmlab.default_device`): the notebook's reference numbers are the explicit CPU run.
    """
    check_choice("mode", mode, TOY_MODES)
    dtype = resolve_dtype(dtype, allowed=HALF_DTYPES)
    steps = check_int("steps", steps, low=1)
    n = check_int("n", n, low=1, high=2**24)  # and d: toy_problem checks both
    global_batch = check_int("global_batch", global_batch, low=n)
    lr = check_float("lr", lr, low=0, low_open=True)
    init_scale = check_float("init_scale", init_scale, low=0, low_open=True)
    growth_interval = check_int("growth_interval", growth_interval, low=1)
    check_choice("scaler", scaler, _SCALERS)
    device = torch.device("cpu") if device is None else resolve_device(device)
    impl = check_choice("impl", impl or ("autocast" if device.type == "cuda" else "explicit"), ("explicit", "autocast"))

    X, y, _, w0 = (t.to(device) for t in toy_problem(n, d, seed=seed))
    low = mode != "fp32"
    master_mode = mode in ("fp16_master", "fp16_master_scaled")
    autocast = master_mode and impl == "autocast"
    # The model: one weight vector. Under autocast the model param *is* the fp32 master.
    w = nn.Parameter(w0.clone().to(dtype if low and not autocast else torch.float32))
    if master_mode and not autocast:
        master = MasterWeightsOptimizer([w], "sgd", master=[w0.clone()], lr=lr)
        optimizer = master.optimizer
    else:
        master, optimizer = None, torch.optim.SGD([w], lr=lr)
    toy = _Toy(
        X=X, X_lp=X.to(dtype).float(),  # the inputs as a half GEMM sees them (exact here: entries are ±1)
        y=y, w=w, dtype=dtype, global_batch=global_batch, optimizer=optimizer, master=master,
        scaler=_SCALERS[scaler](device.type, init_scale, growth_interval) if mode == "fp16_master_scaled" else None,
        autocast=device.type if autocast else None,
    )

    step = _STEPS[mode]
    losses, outcomes = [toy.mse()], []
    for _ in range(steps):
        outcomes.append(step(toy))
        optimizer.zero_grad(set_to_none=True)
        w.grad = None
        losses.append(toy.mse())
    return ToyRun(mode=mode, dtype=dtype if low else torch.float32, losses=tuple(losses),
                  underflow=tuple(o.underflow for o in outcomes), scales=tuple(o.scale for o in outcomes),
                  skipped=sum(o.skipped for o in outcomes))
