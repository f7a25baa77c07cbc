"""LoRA from scratch: low-rank adapters on frozen linear layers, and merging them back.

A frozen weight W₀ (m×n, ``out_features × in_features``) gets a trainable low-rank update:

    y = W₀x + b + (α/r) · B A x,      A: r×n (Kaiming-uniform),  B: m×r (zeros)

so the adapted model starts equal to the base model (BA = 0). Only A and B get gradients and
optimizer states: r(m+n) trainable numbers instead of mn, fewer exactly when
r < mn/(m+n) (r < n/2 for a square matrix). The forward pass does not get cheaper (W₀x plus a
small B(Ax)); after training, :func:`merge_lora` folds the update into one weight
W = W₀ + (α/r)·BA, so inference costs exactly what the base model costs.

Matches PEFT's ``LoraConfig(r, lora_alpha, lora_dropout, target_modules)`` with its defaults
(``init_lora_weights=True``, ``bias="none"``); ``tests/test_lora.py`` holds the two side by side.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ._checks import check_finite_tensor, check_float, check_int, check_module, check_optimizer, check_tensor
from ._torch import IGNORE_INDEX, eval_mode, model_device, read_floats
from .data import InstructionBatch
from .memory import StateLedger, count_parameters, measured_ledger
from .timing import Stopwatch

__all__ = [
    "LoRALinear",
    "add_lora",
    "merge_lora",
    "count_parameters",
    "lora_param_count",
    "break_even_rank",
    "lora_model_param_count",
    "truncation_error",
    "TrainResult",
    "train_steps",
    "validation_loss",
    "SweepRun",
    "lr_sweep",
]


def _check_alpha_dropout(alpha, dropout) -> tuple[float, float]:
    alpha = check_float("alpha", alpha, low=0, low_open=True)
    dropout = check_float("dropout", dropout, low=0, high=1, high_open=True)
    return alpha, dropout


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable rank-``r`` update: y = base(x) + (α/r)·B(A(dropout(x))).

    ``base``: the layer to adapt (its parameters are frozen in place). ``A``: ``nn.Linear(n, r)``
    initialised like PEFT (``kaiming_uniform_(a=√5)``), ``B``: ``nn.Linear(r, m)`` initialised to
    zeros, both without bias, on the base weight's device and dtype. Input ``(..., n)``, output
    ``(..., m)``. ``r`` >= 1, ``alpha`` > 0, ``dropout`` in [0, 1). As in PEFT, r may exceed
    min(m, n): BA then still has rank at most min(m, n), the extra rank only adds parameters.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, *, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        alpha, dropout = _check_alpha_dropout(alpha, dropout)
        r = check_int("r", r, low=1)
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.r, self.alpha = r, alpha
        self.scaling = alpha / r
        n, m = base.in_features, base.out_features
        kwargs = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.A = nn.Linear(n, r, bias=False, **kwargs)
        self.B = nn.Linear(r, m, bias=False, **kwargs)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """A ~ Kaiming-uniform (as ``nn.Linear`` and PEFT do), B = 0, so BA = 0 at the start."""
        nn.init.kaiming_uniform_(self.A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.B.weight)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The update (α/r)·BA, shape ``(m, n)`` like the base weight; computed in ``dtype``
        (default: the adapter's own dtype; :func:`merge_lora` asks for float32)."""
        B, A = self.B.weight, self.A.weight
        if dtype is not None:
            B, A = B.to(dtype), A.to(dtype)
        return self.scaling * (B @ A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scaling * self.B(self.A(self.dropout(x)))

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}"


def _matches(name: str, target: str) -> bool:
    # PEFT's rule for a list of target names: the full name, or its last dotted components.
    return name == target or name.endswith("." + target)


def add_lora(model: nn.Module, target_modules=("q_proj", "v_proj"), *, r: int = 8, alpha: float = 16,
             dropout: float = 0.0) -> nn.Module:
    """Wrap every ``nn.Linear`` whose name ends with a target in a :class:`LoRALinear`, in place.

    Every other parameter of ``model`` is frozen, so only the A and B matrices train. A target
    matches a module named ``target`` or ``"...." + target`` (PEFT's rule). Returns ``model``.
    Raises ``ValueError`` for r < 1, alpha <= 0, dropout outside [0, 1), or a target that matches
    no ``nn.Linear``; the model is left untouched then. r past min(m, n) of a layer is accepted,
    as PEFT accepts it (it only adds parameters).
    """
    check_module("model", model)
    if isinstance(target_modules, str):
        target_modules = (target_modules,)
    target_modules = tuple(target_modules)
    if not target_modules or not all(isinstance(t, str) and t for t in target_modules):
        raise ValueError(f"target_modules must be a non-empty sequence of module names, got {target_modules!r}")
    r = check_int("r", r, low=1)
    alpha, dropout = _check_alpha_dropout(alpha, dropout)

    lora_inside = {n for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    found: dict[str, list[str]] = {t: [] for t in target_modules}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or any(name.startswith(p + ".") for p in lora_inside):
            continue
        for t in target_modules:
            if _matches(name, t):
                found[t].append(name)
    missing = [t for t, names in found.items() if not names]
    if missing:
        raise ValueError(f"target_modules {missing} match no nn.Linear in the model (adapted layers do not count)")
    matched = {n for names in found.values() for n in names}
    # Module order (as PEFT wraps), so the same seed draws the same A matrices.
    ordered = [n for n, _ in model.named_modules() if n in matched]
    for p in model.parameters():
        p.requires_grad_(False)
    for name in ordered:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout=dropout))
    return model


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Replace each :class:`LoRALinear` by one ``nn.Linear`` with W = W₀ + (α/r)·BA, in place.

    The merged layer computes the same function (to float rounding) with a single matmul, so
    the adapter's inference overhead disappears. The merge is done in float32 and cast back to
    the base dtype; merged weights stay frozen like W₀. Returns ``model``. Raises ``ValueError``
    if the model has no LoRA layer.
    """
    check_module("model", model)
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    if not names:
        raise ValueError("model has no LoRALinear layer to merge (call add_lora first)")
    if isinstance(model, LoRALinear):
        raise TypeError("pass the model that contains the LoRALinear layers, not a LoRALinear itself")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        lora: LoRALinear = getattr(parent, child)
        base = lora.base
        merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                           device=base.weight.device, dtype=base.weight.dtype)
        W = base.weight.float() + lora.delta_weight(dtype=torch.float32)
        merged.weight.copy_(W.to(base.weight.dtype))
        if base.bias is not None:
            merged.bias.copy_(base.bias)
        merged.requires_grad_(False)
        setattr(parent, child, merged)
    return model


def lora_param_count(m: int, n: int, r: int) -> int:
    """Trainable numbers of a rank-r adapter on an m×n weight: B (m×r) + A (r×n) = r(m+n).

    Pure arithmetic: any r >= 1 is accepted, also past the break-even rank (the widget shows it).
    """
    m, n, r = check_int("m", m, low=1), check_int("n", n, low=1), check_int("r", r, low=1)
    return r * (m + n)


def break_even_rank(m: int, n: int) -> float:
    """The rank below which LoRA has fewer parameters than W₀: r(m+n) < mn ⇔ r < mn/(m+n).

    For a square n×n matrix this is n/2. Returned as a float; LoRA saves for every integer
    ``r < break_even_rank(m, n)``.
    """
    m, n = check_int("m", m, low=1), check_int("n", n, low=1)
    return m * n / (m + n)


def lora_model_param_count(model: nn.Module, target_modules=("q_proj", "v_proj"), *, r: int = 8) -> int:
    """Trainable parameters :func:`add_lora` would create, Σ r(m+n) over the matched layers."""
    check_module("model", model)
    if isinstance(target_modules, str):
        target_modules = (target_modules,)
    r = check_int("r", r, low=1)
    matched = [mod for name, mod in model.named_modules()
               if isinstance(mod, nn.Linear) and any(_matches(name, t) for t in target_modules)]
    if not matched:  # as add_lora: a typo in a layer name must not count zero parameters
        raise ValueError(f"target_modules {list(target_modules)} match no nn.Linear in the model")
    return sum(lora_param_count(mod.out_features, mod.in_features, r) for mod in matched)


def truncation_error(delta_W: torch.Tensor, ranks) -> torch.Tensor:
    """Relative error of the best rank-r approximation of ``delta_W`` for each r in ``ranks``.

    By Eckart–Young, ‖ΔW − ΔW_r‖_F / ‖ΔW‖_F = sqrt(Σ_{i>r} σᵢ² / Σ σᵢ²) with σ the singular
    values, so one SVD answers every r. ``ranks``: an int >= 0 or a sequence of them (r past
    min(m, n) gives 0). Returns a float tensor of ``len(ranks)``.
    """
    check_tensor("delta_W", delta_W, dim=2)
    check_finite_tensor("delta_W", delta_W)
    if (isinstance(ranks, torch.Tensor) and ranks.dim() == 0) or not hasattr(ranks, "__iter__"):
        ranks = [ranks]  # one rank: a single number or a 0-d tensor (checked below)
    ranks = [check_int(f"ranks[{i}]", r, low=0) for i, r in enumerate(ranks)]
    if not ranks:
        raise ValueError("ranks must hold at least one rank")
    sigma2 = torch.linalg.svdvals(delta_W.detach().double()) ** 2
    total = sigma2.sum()
    if total == 0:
        return torch.zeros(len(ranks))
    tail = torch.cat([sigma2.flip(0).cumsum(0).flip(0), sigma2.new_zeros(1)])  # tail[k] = Σ_{i>=k}
    return torch.stack([(tail[min(r, len(sigma2))] / total).sqrt() for r in ranks]).float()


@dataclass(frozen=True)
class TrainResult:
    """Per-step losses and wall times of :func:`train_steps`, and the memory it measured.

    ``step_times``: seconds of each step; ``phase_times``: the same step split into
    ``(forward, backward, optimizer)`` seconds (each CUDA-synchronised), which says where a
    step's time goes. ``state``: the :class:`llmlab.memory.StateLedger` of the model and optimizer
    after the last step, gradients still alive (weights + grads + optimizer states + Adam's step
    counters), or None without batches. ``peak_bytes``: ``torch.cuda.max_memory_allocated`` on
    CUDA; on other devices ``state.total`` (0 without batches).
    """

    losses: tuple[float, ...]
    step_times: tuple[float, ...]
    peak_bytes: int
    state: StateLedger | None
    phase_times: tuple[tuple[float, float, float], ...] = ()


def _model_kwargs(batch) -> Mapping:
    """The keyword arguments of one batch: an :class:`llmlab.data.InstructionBatch` or a dict."""
    if isinstance(batch, InstructionBatch):
        return batch.as_kwargs()
    if isinstance(batch, Mapping):
        return batch
    raise TypeError(f"batches must yield dicts of model arguments or InstructionBatch objects, got {batch!r:.40}")


def train_steps(model: nn.Module, batches, optimizer, *, progress: bool = False, desc: str = "train") -> TrainResult:
    """Run one optimizer step per batch: loss = model(**batch).loss, backward, step, zero_grad.

    ``batches``: an iterable of :class:`llmlab.data.InstructionBatch` (see
    :func:`llmlab.data.collate`) or of keyword dicts, already on the model's device.
    ``optimizer``: a ``torch.optim.Optimizer`` (or anything with ``step`` and ``zero_grad`` that
    :func:`llmlab.memory.measured_ledger` accepts). Each phase of a step (forward, backward,
    optimizer step) is timed with a CUDA-synchronised :class:`llmlab.timing.Stopwatch`.
    """
    check_module("model", model)
    check_optimizer("optimizer", optimizer)
    device = model_device(model)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    losses, step_times, phase_times, state = [], [], [], None
    model.train()
    iterator = batches
    if progress:
        from tqdm.auto import tqdm  # heavy import (probes IPython/ipywidgets): only when a bar is asked for

        iterator = tqdm(batches, desc=desc, leave=False)
    for batch in iterator:
        kwargs = _model_kwargs(batch)
        with Stopwatch(device) as forward:
            loss = model(**kwargs).loss
        with Stopwatch(device) as backward:
            loss.backward()
        with Stopwatch(device) as update:
            optimizer.step()
        phase_times.append((forward.seconds, backward.seconds, update.seconds))
        step_times.append(sum(phase_times[-1]))
        losses.append(loss.detach())  # read after the loop: no extra host sync per step
        state = measured_ledger(model, optimizer)  # while the gradients are alive
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    peak = torch.cuda.max_memory_allocated(device) if cuda else (state.total if state is not None else 0)
    return TrainResult(losses=read_floats(losses), step_times=tuple(step_times), peak_bytes=peak, state=state,
                       phase_times=tuple(phase_times))


@torch.no_grad()
def validation_loss(model: nn.Module, batches) -> float:
    """Mean loss per labelled token over ``batches`` (no gradients, eval mode): for instruction
    batches, the masked cross-entropy of the response tokens. Batches as for :func:`train_steps`;
    each must carry ``labels``.
    """
    check_module("model", model)
    if isinstance(batches, (str, bytes, Mapping, InstructionBatch)) or not hasattr(batches, "__iter__"):
        raise TypeError(f"batches must be an iterable of batches (dicts or InstructionBatch), got {batches!r:.40}")
    total, count = 0.0, 0
    with eval_mode(model):
        for batch in batches:
            kwargs = _model_kwargs(batch)
            if "labels" not in kwargs:
                raise ValueError("every batch in batches must carry labels to compute a loss")
            n = int((kwargs["labels"][:, 1:] != IGNORE_INDEX).sum())  # the tokens the shifted loss averages over
            total += model(**kwargs).loss.item() * n
            count += n
    if count == 0:
        raise ValueError("batches must hold at least one labelled token")
    return total / count


@dataclass(frozen=True)
class SweepRun:
    """One learning rate of :func:`lr_sweep`: its training run and the validation loss after it."""

    lr: float
    train: TrainResult
    val_loss: float


def lr_sweep(make_model: Callable[[], nn.Module], batches, lrs, val_batches, *, widen: int = 0,
             progress: bool = False, desc: str = "") -> tuple[tuple[SweepRun, ...], nn.Module]:
    """Fine-tune a fresh ``make_model()`` with AdamW (no weight decay; PyTorch's fused implementation
    on CPU and CUDA) at each learning rate in ``lrs`` on the same ``batches``; return every run (in
    the order tried) and the trained model with the lowest validation loss.

    ``make_model``: builds the model to train (e.g. a deep copy of the base model, with adapters
    for LoRA); its trainable parameters are the ones AdamW updates. ``val_batches``: held-out
    batches for :func:`validation_loss`, which picks the winner (not the reported test set).
    ``widen``: while the winner is the smallest or the largest rate tried, try up to ``widen`` more
    rates beyond it, each one grid step further (the ratio of the two rates at that end), so that a
    winner at an edge of the grid does not go unnoticed. Only the current model and the best so far
    are alive at any time.
    """
    if not callable(make_model) or isinstance(make_model, nn.Module):
        raise TypeError(f"make_model must be a callable returning a model, got {make_model!r:.40}")
    if isinstance(lrs, (str, bytes)) or not hasattr(lrs, "__iter__"):
        raise TypeError(f"lrs must be a list of learning rates, got {type(lrs).__name__}")
    lrs = [check_float(f"lrs[{i}]", lr, low=0, low_open=True) for i, lr in enumerate(lrs)]
    if not lrs:
        raise ValueError("lrs must hold at least one learning rate")
    widen = check_int("widen", widen, low=0)
    if widen and len(set(lrs)) < 2:
        raise ValueError("widen needs at least two different learning rates in lrs (their ratio is the step)")
    batches, val_batches = list(batches), list(val_batches)
    if not val_batches:
        raise ValueError("val_batches must hold at least one batch (the validation loss picks the winner)")
    runs, best = [], [None, math.inf]

    def run(lr: float) -> None:
        model = make_model()
        check_module("make_model()", model)
        params = [p for p in model.parameters() if p.requires_grad]
        fused = model_device(model).type in ("cpu", "cuda") or None  # one pass over p, m and v per step
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=fused)
        result = train_steps(model, batches, optimizer, progress=progress, desc=f"{desc} lr={lr:g}".strip())
        del optimizer  # its states (8 bytes per trainable parameter) go before the next run starts
        loss = validation_loss(model, val_batches)
        runs.append(SweepRun(lr=lr, train=result, val_loss=loss))
        if loss < best[1]:  # a diverged run (NaN loss) never wins
            best[:] = [model, loss]

    for lr in lrs:
        run(lr)
    for _ in range(widen):
        tried = sorted({r.lr for r in runs})
        winner = min(runs, key=lambda r: r.val_loss if math.isfinite(r.val_loss) else math.inf).lr
        if winner not in (tried[0], tried[-1]):
            break
        run(tried[0] ** 2 / tried[1] if winner == tried[0] else tried[-1] ** 2 / tried[-2])
    if best[0] is None:
        raise ValueError(f"every learning rate in lrs={lrs} diverged (validation loss not finite)")
    return tuple(runs), best[0]
