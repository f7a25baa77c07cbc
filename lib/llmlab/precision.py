"""Mixed precision, measured: lost updates, gradient underflow, loss scaling and the memory ledger.

Three facts this module lets a notebook *measure* rather than state:

1. **Updates get lost.** A float with ``p`` significand bits (fp16: p = 11, bf16: p = 8, counting
   the implicit leading 1) spaces its values ``ulp(w) = 2^(e - p + 1)`` apart near ``w = m 2^e``.
   Round-to-nearest-even turns ``w + u`` back into ``w`` whenever ``u`` is at most half an ulp,
   so for ``w = 1`` any update up to ``2^-p`` (fp16: 2^-11 ~ 4.9e-4) vanishes.
   :func:`update_survives`, :func:`smallest_surviving_update`.
2. **Small gradients flush to zero** in fp16 (below 2^-25 ~ 3e-8), unless the loss is multiplied
   by a scale ``S`` before backward and the gradients divided by ``S`` afterwards (in fp32).
   :class:`DynamicLossScaler` mirrors ``torch.amp.GradScaler``; :func:`train_toy` shows both.
3. **The model states do not shrink.** Mixed-precision AdamW keeps 2 (half weights) + 2 (half
   grads) + 4 (fp32 master) + 4 + 4 (Adam m, v) = 16 bytes per parameter, the same as fp32 AdamW
   (4 + 4 + 4 + 4). :func:`memory_ledger` (formula) and :func:`measured_ledger` (real tensors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = [
    "FloatFormat",
    "float_format",
    "update_survives",
    "smallest_surviving_update",
    "OPTIMIZER_STATES",
    "memory_ledger",
    "measured_ledger",
    "MasterWeightsOptimizer",
    "mixed_precision_setup",
    "DynamicLossScaler",
    "ToyRun",
    "TOY_MODES",
    "toy_problem",
    "train_toy",
    "saved_activation_bytes",
    "adam_vs_adamw_step",
    "STEP_MODES",
    "block_step_seconds",
]

_DTYPE_NAMES = {
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp64": torch.float64, "float64": torch.float64, "double": torch.float64,
}
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Integer dtypes of the same width, to walk the representable floats in order.
_INT_OF = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32, torch.float64: torch.int64}


def _resolve_dtype(dtype, name: str = "dtype") -> torch.dtype:
    if isinstance(dtype, str) and dtype.lower() in _DTYPE_NAMES:
        return _DTYPE_NAMES[dtype.lower()]
    if isinstance(dtype, torch.dtype) and dtype in _FLOAT_DTYPES:
        return dtype
    raise ValueError(
        f"{name} must be one of torch.float16, torch.bfloat16, torch.float32, torch.float64 "
        f"(or 'fp16', 'bf16', 'fp32', 'fp64'), got {dtype!r}"
    )


# ---------------------------------------------------------------------------------------------
# 1. Number formats and lost updates
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FloatFormat:
    """The layout of a floating-point format, read off ``torch.finfo``.

    ``mantissa_bits`` are the *stored* fraction bits (fp16: 10); the significand has one more,
    implicit bit. ``eps`` = 2^-mantissa_bits is the gap between 1 and the next float;
    ``min_normal`` = 2^(1 - bias); ``min_subnormal`` = min_normal * eps is the smallest positive value.
    """

    name: str
    bits: int
    exponent_bits: int
    mantissa_bits: int
    max: float
    min_normal: float
    min_subnormal: float
    eps: float


def float_format(dtype) -> FloatFormat:
    """Bits, range and precision of ``dtype`` (fp16, bf16, fp32 or fp64), from ``torch.finfo``."""
    dtype = _resolve_dtype(dtype)
    fi = torch.finfo(dtype)
    mantissa_bits = round(-math.log2(fi.eps))
    return FloatFormat(
        name=str(dtype).replace("torch.", ""),
        bits=fi.bits,
        exponent_bits=fi.bits - 1 - mantissa_bits,
        mantissa_bits=mantissa_bits,
        max=float(fi.max),
        min_normal=float(fi.smallest_normal),
        min_subnormal=float(fi.smallest_normal) * float(fi.eps),
        eps=float(fi.eps),
    )


def update_survives(weight, update, dtype):
    """Whether ``weight + update``, computed in ``dtype``, differs from ``weight`` in ``dtype``.

    Both operands are first rounded to ``dtype`` (as in a training loop that stores weights and
    updates in that format), then added with one round-to-nearest-even. Floats or tensors
    (broadcast); returns a Python ``bool`` for scalars and a bool tensor otherwise.
    Example: ``update_survives(1.0, 1e-4, torch.float16)`` is False (half an ulp at 1 is 2^-11).
    """
    dtype = _resolve_dtype(dtype)
    scalar = not isinstance(weight, torch.Tensor) and not isinstance(update, torch.Tensor)
    for arg, name in ((weight, "weight"), (update, "update")):
        if not isinstance(arg, (torch.Tensor, int, float)) or isinstance(arg, bool):
            raise TypeError(f"{name} must be a float or a tensor, got {type(arg).__name__}")
    w = torch.as_tensor(weight).to(dtype)
    u = torch.as_tensor(update, device=w.device).to(dtype)
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"weight must be finite in {dtype}, got {weight!r}")
    changed = (w + u) != w
    return bool(changed.item()) if scalar or changed.dim() == 0 else changed


def smallest_surviving_update(dtype, weight: float = 1.0) -> float:
    """The smallest *relative* update ``u / weight`` that survives, for a positive ``weight``.

    Precisely: the smallest positive ``u`` representable in ``dtype`` with
    ``fl(w + u) != w`` (w = weight rounded to ``dtype``), divided by ``w``. Found exactly by
    bisection over the bit patterns of ``dtype`` (survival is monotone in ``u``).

    With round-to-nearest-even an update of exactly half an ulp ties, and the tie goes to the
    even neighbour; for ``w = 1`` (even significand) that is ``w`` itself, so the answer is the
    next float *above* half an ulp: fp16 2^-11 (1 + 2^-10) ~ 4.88e-4, bf16 2^-8 (1 + 2^-7),
    fp32 2^-24 (1 + 2^-23). For a weight with an odd significand the half-ulp tie rounds up and
    the answer is exactly half an ulp / w.
    """
    dtype = _resolve_dtype(dtype)
    if not isinstance(weight, (int, float)) or isinstance(weight, bool):
        raise TypeError(f"weight must be a positive float, got {type(weight).__name__}")
    w = torch.tensor(float(weight)).to(dtype)
    if not (math.isfinite(float(w)) and float(w) > 0):
        raise ValueError(f"weight must be positive and finite in {dtype}, got {weight!r}")
    int_dtype = _INT_OF[dtype]

    def as_float(bits: int) -> torch.Tensor:
        return torch.tensor(bits, dtype=int_dtype).view(dtype)

    # Positive floats sorted by value have increasing bit patterns: 1 is the smallest subnormal,
    # the pattern of +inf is one past the largest finite value.
    lo, hi = 0, int(torch.tensor(float("inf"), dtype=dtype).view(int_dtype))
    while hi - lo > 1:  # invariant: pattern lo does not survive (or is 0), pattern hi does
        mid = (lo + hi) // 2
        if bool((w + as_float(mid)) != w):
            hi = mid
        else:
            lo = mid
    return float(as_float(hi)) / float(w)


# ---------------------------------------------------------------------------------------------
# 2. The memory ledger: formula and measurement
# ---------------------------------------------------------------------------------------------

#: Optimizer state tensors kept per parameter (each the size of the parameter, in fp32).
OPTIMIZER_STATES = {"adamw": 2, "adam": 2, "sgd_momentum": 1, "sgd": 0}
_PRECISIONS = ("mixed", "fp32")


def _count_params(model) -> tuple[int, int]:
    """(all parameters, trainable parameters); shared (tied) tensors count once."""
    if isinstance(model, int) and not isinstance(model, bool):
        if model < 0:
            raise ValueError(f"model as a parameter count must be >= 0, got {model}")
        return model, model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module or a parameter count (int), got {type(model).__name__}")
    params = list(model.parameters())  # nn.Module.parameters() already de-duplicates tied weights
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def memory_ledger(model, *, optimizer: str = "adamw", precision: str = "mixed") -> dict[str, int]:
    """Bytes of the model states per component, from the formulas (no tensors are touched).

    ``model``: an ``nn.Module`` (N = its parameters, tied ones once; frozen ones get weights
    only) or a parameter count. With k fp32 optimizer states per parameter
    (:data:`OPTIMIZER_STATES`: AdamW/Adam 2, SGD with momentum 1, SGD 0):

    - ``precision="fp32"``:  weights 4N, grads 4N, master_weights 0,  optimizer_states 4kN;
    - ``precision="mixed"``: weights 2N, grads 2N, master_weights 4N, optimizer_states 4kN
      (fp16 or bf16 weights and grads, fp32 master copy and states).

    AdamW: 16 bytes per parameter either way. Activations are not model states and are not here.
    Returns ``{"weights", "grads", "master_weights", "optimizer_states", "total"}`` in bytes.
    """
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZER_STATES)}, got {optimizer!r}")
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {list(_PRECISIONS)}, got {precision!r}")
    n_all, n_train = _count_params(model)
    k = OPTIMIZER_STATES[optimizer]
    half = precision == "mixed"
    ledger = {
        "weights": (2 if half else 4) * n_all,
        "grads": (2 if half else 4) * n_train,
        "master_weights": 4 * n_train if half else 0,
        "optimizer_states": 4 * k * n_train,
    }
    ledger["total"] = sum(ledger.values())
    return ledger


class MasterWeightsOptimizer:
    """Mixed precision made explicit: a half-precision model, an fp32 master copy, an fp32 optimizer.

    ``params``: the trainable parameters of the *low-precision* model; ``master`` (optional):
    fp32 tensors to start the master copy from (default: the params upcast). The inner torch
    optimizer (``self.optimizer``) owns the fp32 master params and its states. One step:

    1. :meth:`grads_to_master`: ``master.grad = param.grad.float()`` (still loss-scaled, if scaled);
    2. the inner optimizer steps on the master (``scaler.step(self.optimizer)`` unscales first);
    3. :meth:`master_to_model`: copy the master back, rounding to half; the fp32 grads are freed,
       so between steps only the half grads are live (a real implementation converts bucket by
       bucket, so its transient fp32 grads are a fraction of 4N bytes).
    """

    def __init__(self, params, optimizer: str = "adamw", *, master=None, **optimizer_kwargs):
        self.model_params = [p for p in params if p.requires_grad]
        if not self.model_params:
            raise ValueError("params must contain at least one trainable parameter")
        if master is None:
            master = [p.detach().float() for p in self.model_params]
        master = list(master)
        if len(master) != len(self.model_params):
            raise ValueError(f"master must hold one tensor per trainable param ({len(self.model_params)}), got {len(master)}")
        self.master_params = [m.detach().to(torch.float32).clone().requires_grad_(True) for m in master]
        self.optimizer = _make_optimizer(optimizer, self.master_params, **optimizer_kwargs)
        self.optimizer_name = optimizer

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    def grads_to_master(self) -> None:
        for p, m in zip(self.model_params, self.master_params):
            m.grad = None if p.grad is None else p.grad.detach().to(torch.float32)

    @torch.no_grad()
    def master_to_model(self) -> None:
        for p, m in zip(self.model_params, self.master_params):
            p.copy_(m)  # rounds to the model's dtype
            m.grad = None

    def step(self) -> None:
        """One unscaled step: grads to master, optimizer step in fp32, master back to the model."""
        self.grads_to_master()
        self.optimizer.step()
        self.master_to_model()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.model_params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()


def _make_optimizer(name: str, params, lr: float = 1e-3, **kwargs) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, **kwargs)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, **kwargs)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, **kwargs)
    if name == "sgd_momentum":
        return torch.optim.SGD(params, lr=lr, momentum=kwargs.pop("momentum", 0.9), **kwargs)
    raise ValueError(f"optimizer must be one of {list(OPTIMIZER_STATES)}, got {name!r}")


def mixed_precision_setup(model: nn.Module, dtype=torch.float16, *, optimizer: str = "adamw", **optimizer_kwargs) -> MasterWeightsOptimizer:
    """Turn an fp32 ``model`` into a mixed-precision one *in place* and return its optimizer.

    The fp32 weights become the master copy (no rounding is lost); the model itself is cast to
    ``dtype`` (fp16 or bf16), so forward and backward run in half precision.
    """
    dtype = _resolve_dtype(dtype)
    if dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be torch.float16 or torch.bfloat16 for mixed precision, got {dtype}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    trainable = [p for p in model.parameters() if p.requires_grad]
    master = [p.detach().float().clone() for p in trainable]
    model.to(dtype)
    return MasterWeightsOptimizer([p for p in model.parameters() if p.requires_grad], optimizer, master=master, **optimizer_kwargs)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def measured_ledger(model: nn.Module, optimizer) -> dict[str, int]:
    """Bytes of the real tensors of a training setup, per component; call it after one step.

    ``optimizer``: a ``torch.optim.Optimizer`` over the model's own parameters (then there is
    no master copy) or a :class:`MasterWeightsOptimizer`. Sums, de-duplicating shared tensors:
    ``weights`` (model parameters), ``grads`` (their ``.grad``, plus fp32 master grads if any
    are still alive), ``master_weights``, ``optimizer_states`` (state tensors shaped like their
    parameter: Adam's m and v, SGD's momentum) and ``other`` (the remaining state tensors: torch
    Adam(W) keeps one ``step`` scalar per parameter tensor). ``total`` adds them all. Buffers
    (e.g. rotary tables) are not model states and are not counted.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, (torch.optim.Optimizer, MasterWeightsOptimizer)):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or a MasterWeightsOptimizer, got {type(optimizer).__name__}")
    inner = optimizer.optimizer if isinstance(optimizer, MasterWeightsOptimizer) else optimizer
    keeps_state = isinstance(inner, (torch.optim.Adam, torch.optim.AdamW)) or any(
        group.get("momentum", 0) for group in inner.param_groups)
    if keeps_state and len(inner.state) == 0:
        raise ValueError("optimizer has no state yet: call measured_ledger after one optimizer step")
    params = list(model.parameters())
    ledger = {"weights": 0, "grads": 0, "master_weights": 0, "optimizer_states": 0, "other": 0}
    ledger["weights"] = sum(_nbytes(p) for p in params)
    ledger["grads"] = sum(_nbytes(p.grad) for p in params if p.grad is not None)
    if isinstance(optimizer, MasterWeightsOptimizer):
        ledger["master_weights"] = sum(_nbytes(m) for m in optimizer.master_params)
        ledger["grads"] += sum(_nbytes(m.grad) for m in optimizer.master_params if m.grad is not None)
    for param, state in inner.state.items():
        for value in state.values():
            if not isinstance(value, torch.Tensor):
                continue
            key = "optimizer_states" if value.shape == param.shape and value.dim() > 0 else "other"
            ledger[key] += _nbytes(value)
    ledger["total"] = sum(ledger.values())
    return ledger


# ---------------------------------------------------------------------------------------------
# 3. Loss scaling and the toy training run
# ---------------------------------------------------------------------------------------------


class DynamicLossScaler:
    """Dynamic loss scaling, the rule of ``torch.amp.GradScaler`` written out.

    Backward runs on ``loss * scale``. Before the optimizer step the gradients are divided by
    ``scale`` (in fp32); if any is inf/NaN the step is skipped and ``scale *= backoff_factor``;
    after ``growth_interval`` finite steps in a row ``scale *= growth_factor``.
    """

    def __init__(self, init_scale: float = 2.0**16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000):
        if not (init_scale > 0 and math.isfinite(init_scale)):
            raise ValueError(f"init_scale must be positive and finite, got {init_scale!r}")
        if not growth_factor > 1:
            raise ValueError(f"growth_factor must be > 1, got {growth_factor!r}")
        if not 0 < backoff_factor < 1:
            raise ValueError(f"backoff_factor must be in (0, 1), got {backoff_factor!r}")
        if not (isinstance(growth_interval, int) and growth_interval >= 1):
            raise ValueError(f"growth_interval must be an int >= 1, got {growth_interval!r}")
        self.scale = float(init_scale)
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval
        self._good_steps = 0

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale

    @torch.no_grad()
    def unscale_(self, grads) -> bool:
        """Divide fp32 ``grads`` by the scale in place; return True if any is inf or NaN."""
        found_inf = False
        for g in grads:
            if g is None:
                continue
            g.mul_(1.0 / self.scale)
            found_inf = found_inf or not bool(torch.isfinite(g).all())
        return found_inf

    def update(self, found_inf: bool) -> None:
        if found_inf:
            self.scale *= self.backoff_factor
            self._good_steps = 0
        else:
            self._good_steps += 1
            if self._good_steps == self.growth_interval:
                self.scale *= self.growth_factor
                self._good_steps = 0


TOY_MODES = ("fp32", "fp16_weights", "fp16_master", "fp16_master_scaled")


@dataclass
class ToyRun:
    """One :func:`train_toy` run. Lists have ``steps + 1`` entries (index 0: before training),
    except ``underflow`` and ``scales`` (one per step).

    ``dtype``: the precision of the model's weights (float32 for mode "fp32").
    ``losses``: mean squared error of the weights the model holds, evaluated in fp32.
    ``underflow``: per step, the fraction of the gradient w.r.t. the model output that was
    non-zero in fp32 but flushed to zero when stored in the low-precision dtype.
    ``scales``: loss scale used at each step (1.0 without scaling); ``skipped``: steps skipped
    because the scaled gradients overflowed.
    """

    mode: str
    dtype: torch.dtype
    losses: list[float]
    underflow: list[float]
    scales: list[float] = field(default_factory=list)
    skipped: int = 0


def toy_problem(n: int = 4096, d: int = 16, seed: int = 0):
    """The regression of :func:`train_toy`: returns ``(X, y, w_star, w0)``.

    Inputs X (n, d) with exactly orthogonal ±1 columns (X^T X = n I; n a power of two >= 2d),
    targets ``y = X w_star`` with w* in [1.05, 1.95), and a start ``w0 = w* + delta`` with
    |delta| in [0.004, 0.012], so every weight stays in [1, 2), where the fp16 spacing is 2^-10.
    """
    if not (isinstance(n, int) and isinstance(d, int) and d >= 1 and n >= 2 * d and n & (n - 1) == 0):
        raise ValueError(f"n must be a power of two >= 2 d and d >= 1, got n={n!r}, d={d!r}")
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
      (:class:`DynamicLossScaler`) or ``"torch"`` (``torch.amp.GradScaler``).

    ``dtype`` may be bf16 (same modes, "fp16" then means "half"). ``impl="explicit"`` (default on
    CPU) keeps real half tensors and rounds the matmul output like a half GEMM with fp32
    accumulation; ``impl="autocast"`` (default on CUDA) keeps fp32 master params in the model
    and runs the forward under ``torch.autocast``. ``device`` defaults to the CPU.
    """
    if mode not in TOY_MODES:
        raise ValueError(f"mode must be one of {list(TOY_MODES)}, got {mode!r}")
    dtype = _resolve_dtype(dtype)
    if dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be torch.float16 or torch.bfloat16, got {dtype}")
    for value, name in ((steps, "steps"), (n, "n"), (d, "d"), (global_batch, "global_batch")):
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if global_batch < n:
        raise ValueError(f"global_batch must be >= n ({n}), got {global_batch}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be positive and finite, got {lr!r}")
    if scaler not in ("llmlab", "torch"):
        raise ValueError(f"scaler must be 'llmlab' or 'torch', got {scaler!r}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    impl = impl or ("autocast" if device.type == "cuda" else "explicit")
    if impl not in ("explicit", "autocast"):
        raise ValueError(f"impl must be 'explicit' or 'autocast', got {impl!r}")

    X, y, _, w0 = (t.to(device) for t in toy_problem(n, d, seed))
    X_lp = X.to(dtype).float()  # the inputs as a half GEMM sees them (exact here: entries are ±1)
    low = mode != "fp32"
    master_mode = mode in ("fp16_master", "fp16_master_scaled")
    use_autocast = low and master_mode and impl == "autocast"

    # The model: one weight vector. In autocast master modes the model param *is* the fp32 master.
    w_dtype = torch.float32 if (not low or use_autocast) else dtype
    w = nn.Parameter(w0.clone().to(w_dtype))
    if master_mode and not use_autocast:
        opt = MasterWeightsOptimizer([w], "sgd", master=[w0.clone()], lr=lr)
        inner = opt.optimizer
    else:
        opt = inner = torch.optim.SGD([w], lr=lr)
    scaled = mode == "fp16_master_scaled"
    if scaled and scaler == "torch":
        amp_scaler = torch.amp.GradScaler(device.type, init_scale=init_scale, growth_interval=growth_interval)
    elif scaled:
        amp_scaler = DynamicLossScaler(init_scale=init_scale, growth_interval=growth_interval)
    else:
        amp_scaler = None

    def mse(weights: torch.Tensor) -> float:
        return float(((X @ weights.detach().float() - y) ** 2).mean())

    # In autocast master modes the forward sees the fp32 params rounded to dtype: report those.
    held = (lambda: w.detach().to(dtype)) if use_autocast else (lambda: w)
    losses, underflow, scales, skipped = [mse(held())], [], [], 0
    for _ in range(steps):
        grads_seen: dict[str, torch.Tensor] = {}
        if not low:
            pred = X @ w
        elif use_autocast:
            with torch.autocast(device.type, dtype=dtype):
                pred = X @ w  # half GEMM, half output
        else:
            # A half GEMM with fp32 accumulation: exact products, one rounding of the output.
            pred = (X_lp @ w.float()).to(dtype)
        if low:
            pred.register_hook(lambda g: grads_seen.__setitem__("half", g))
            pred = pred.float()  # the loss is computed in fp32, as autocast does
            pred.register_hook(lambda g: grads_seen.__setitem__("fp32", g))
        loss = ((pred - y) ** 2).sum() / global_batch
        scale = 1.0
        if scaled:
            scale = float(amp_scaler.get_scale()) if scaler == "torch" else amp_scaler.scale
            loss = amp_scaler.scale(loss) if scaler == "torch" else amp_scaler.scale_loss(loss)
        scales.append(scale)
        loss.backward()
        if low:
            g16, g32 = grads_seen["half"], grads_seen["fp32"]
            underflow.append(float(((g16 == 0) & (g32 != 0)).float().mean()))
        else:
            underflow.append(0.0)

        if isinstance(opt, MasterWeightsOptimizer):
            opt.grads_to_master()
        if scaled and scaler == "torch":
            before = float(amp_scaler.get_scale())
            amp_scaler.step(inner)
            amp_scaler.update()
            skipped += int(float(amp_scaler.get_scale()) < before)
        elif scaled:
            params = [p for group in inner.param_groups for p in group["params"]]
            found_inf = amp_scaler.unscale_([p.grad for p in params])
            if not found_inf:
                inner.step()
            skipped += int(found_inf)
            amp_scaler.update(found_inf)
        else:
            inner.step()  # for fp16_weights the update lr * g is computed and added in dtype
        if isinstance(opt, MasterWeightsOptimizer):
            opt.master_to_model()
        inner.zero_grad(set_to_none=True)
        w.grad = None
        losses.append(mse(held()))
    return ToyRun(mode=mode, dtype=dtype if low else torch.float32, losses=losses, underflow=underflow, scales=scales, skipped=skipped)


# ---------------------------------------------------------------------------------------------
# 4. Where the saving is: activations; and Adam vs AdamW
# ---------------------------------------------------------------------------------------------


def saved_activation_bytes(model: nn.Module, inputs) -> int:
    """Bytes autograd saves for backward during one forward of ``model(**inputs)`` (or ``model(inputs)``).

    Counted with ``torch.autograd.graph.saved_tensors_hooks``: every distinct saved tensor except
    the model's own parameters (they are model states, counted by the ledger). Run it on an fp32
    model and on a half-precision copy (``copy.deepcopy(model).to(torch.bfloat16)``) to see where
    mixed precision saves memory: the activations. Returns bytes (int).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    param_ptrs = {p.data_ptr() for p in model.parameters()}
    seen: set[tuple[int, int, torch.dtype]] = set()
    total = 0

    def pack(t: torch.Tensor):
        nonlocal total
        key = (t.data_ptr(), t.numel(), t.dtype)
        if t.data_ptr() not in param_ptrs and key not in seen:
            seen.add(key)
            total += _nbytes(t)
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    del out
    return total


def adam_vs_adamw_step(weight: torch.Tensor, grad: torch.Tensor, *, lr: float = 1e-2, weight_decay: float = 0.1,
                       betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> dict[str, torch.Tensor]:
    """The first step of Adam with L2 (``torch.optim.Adam(weight_decay=...)``) and of AdamW.

    Both use bias correction, m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t). They differ in
    *where* the decay goes: Adam+L2 adds ``wd * w`` to the gradient, so it is divided by sqrt(v_hat)
    like the rest; AdamW decouples it, ``w <- w - lr wd w - lr m_hat / (sqrt(v_hat) + eps)``.
    Returns ``{"adam_l2", "adamw"}``: the weights after one step of each (computed by torch).
    """
    out = {}
    for name, cls in (("adam_l2", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
        p = nn.Parameter(weight.detach().clone())
        opt = cls([p], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        p.grad = grad.detach().clone()
        opt.step()
        out[name] = p.detach()
    return out


# ---------------------------------------------------------------------------------------------
# 5. Speed: one training step of a transformer block in fp32, tf32 and bf16 autocast
# ---------------------------------------------------------------------------------------------

STEP_MODES = ("fp32", "tf32", "bf16")


def block_step_seconds(mode: str, *, device=None, d_model: int = 256, n_heads: int = 4, batch: int = 8,
                       seq: int = 128, repeat: int = 5, warmup: int = 2, seed: int = 0) -> float:
    """Median wall time (s) of one training step of a pre-norm transformer block.

    One step: forward of ``(batch, seq, d_model)`` random inputs through
    ``nn.TransformerEncoderLayer(d_model, n_heads, 4 d_model)``, loss ``mean(out^2)`` in fp32,
    backward, AdamW. ``mode``: ``"fp32"`` (full fp32 matmuls), ``"tf32"`` (fp32 storage, matmuls
    on tensor cores with a 10-bit mantissa: ``torch.set_float32_matmul_precision("high")``; CUDA
    only) or ``"bf16"`` (``torch.autocast`` to bfloat16, fp32 master weights and optimizer).
    The global matmul precision is restored afterwards. ``device`` defaults to the CPU.
    """
    from .bench import timeit  # the one timing loop (median, CUDA-synchronised)

    if mode not in STEP_MODES:
        raise ValueError(f"mode must be one of {list(STEP_MODES)}, got {mode!r}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    if mode == "tf32" and device.type != "cuda":
        raise ValueError("mode 'tf32' needs a CUDA device (tensor cores); use 'fp32' or 'bf16' on the CPU")
    for value, name in ((d_model, "d_model"), (n_heads, "n_heads"), (batch, "batch"), (seq, "seq"), (repeat, "repeat")):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if d_model % n_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    block = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout=0.0, batch_first=True,
                                       norm_first=True).to(device)
    opt = torch.optim.AdamW(block.parameters(), lr=1e-4)
    x = torch.randn(batch, seq, d_model, generator=gen).to(device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode == "bf16"):
            out = block(x)
        out.float().pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if mode == "tf32" else "highest")
    try:
        return timeit(step, repeat=repeat, warmup=warmup, device=device)
    finally:
        torch.set_float32_matmul_precision(previous)
