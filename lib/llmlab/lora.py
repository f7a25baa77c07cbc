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
import time
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = [
    "LoRALinear",
    "add_lora",
    "merge_lora",
    "count_parameters",
    "lora_param_count",
    "break_even_rank",
    "lora_model_param_count",
    "StateBytes",
    "training_state_bytes",
    "truncation_error",
    "TrainResult",
    "train_steps",
]


def _check_rank_alpha(r, alpha, dropout) -> None:
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise ValueError(f"r must be an int >= 1, got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"alpha must be a number > 0, got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable rank-``r`` update: y = base(x) + (α/r)·B(A(dropout(x))).

    ``base``: the layer to adapt (its parameters are frozen in place). ``A``: ``nn.Linear(n, r)``
    initialised like PEFT (``kaiming_uniform_(a=√5)``), ``B``: ``nn.Linear(r, m)`` initialised to
    zeros, both without bias, on the base weight's device and dtype. Input ``(..., n)``, output
    ``(..., m)``.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        _check_rank_alpha(r, alpha, dropout)
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

    def delta_weight(self) -> torch.Tensor:
        """The update (α/r)·BA, shape ``(m, n)`` like the base weight."""
        return self.scaling * (self.B.weight @ self.A.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scaling * self.B(self.A(self.dropout(x)))

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}"


def _matches(name: str, target: str) -> bool:
    # PEFT's rule for a list of target names: the full name, or its last dotted components.
    return name == target or name.endswith("." + target)


def add_lora(model: nn.Module, target_modules=("q_proj", "v_proj"), r: int = 8, alpha: float = 16,
             dropout: float = 0.0) -> nn.Module:
    """Wrap every ``nn.Linear`` whose name ends with a target in a :class:`LoRALinear`, in place.

    Every other parameter of ``model`` is frozen, so only the A and B matrices train. A target
    matches a module named ``target`` or ``"...." + target`` (PEFT's rule). Returns ``model``.
    Raises ``ValueError`` for r < 1, alpha <= 0, or a target that matches no ``nn.Linear``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(target_modules, str):
        target_modules = (target_modules,)
    target_modules = tuple(target_modules)
    if not target_modules or not all(isinstance(t, str) and t for t in target_modules):
        raise ValueError(f"target_modules must be a non-empty sequence of module names, got {target_modules!r}")
    _check_rank_alpha(r, alpha, dropout)

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
        raise ValueError(f"target_modules {missing} match no nn.Linear in the model "
                         f"(already adapted layers do not count)")

    for p in model.parameters():
        p.requires_grad_(False)
    matched = {n for names in found.values() for n in names}
    # Wrap in module order (as PEFT does) so the same seed draws the same A matrices.
    for name in [n for n, _ in model.named_modules() if n in matched]:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))
    return model


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Replace each :class:`LoRALinear` by one ``nn.Linear`` with W = W₀ + (α/r)·BA, in place.

    The merged layer computes the same function (to float rounding) with a single matmul, so
    the adapter's inference overhead disappears. The merge is done in float32 and cast back to
    the base dtype; merged weights stay frozen like W₀. Returns ``model``. Raises ``ValueError``
    if the model has no LoRA layer.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
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
        W = base.weight.float() + lora.scaling * (lora.B.weight.float() @ lora.A.weight.float())
        merged.weight.copy_(W.to(base.weight.dtype))
        if base.bias is not None:
            merged.bias.copy_(base.bias)
        merged.requires_grad_(False)
        setattr(parent, child, merged)
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` numbers of parameters; shared (tied) tensors count once."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    params = list(model.parameters())  # deduplicated by identity
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def _check_dims(**dims) -> None:
    for name, v in dims.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")


def lora_param_count(m: int, n: int, r: int) -> int:
    """Trainable numbers of a rank-r adapter on an m×n weight: B (m×r) + A (r×n) = r(m+n)."""
    _check_dims(m=m, n=n, r=r)
    return r * (m + n)


def break_even_rank(m: int, n: int) -> float:
    """The rank below which LoRA has fewer parameters than W₀: r(m+n) < mn ⇔ r < mn/(m+n).

    For a square n×n matrix this is n/2. Returned as a float; LoRA saves for every integer
    ``r < break_even_rank(m, n)``.
    """
    _check_dims(m=m, n=n)
    return m * n / (m + n)


def lora_model_param_count(model: nn.Module, target_modules=("q_proj", "v_proj"), r: int = 8) -> int:
    """Trainable parameters :func:`add_lora` would create, Σ r(m+n) over the matched layers."""
    if isinstance(target_modules, str):
        target_modules = (target_modules,)
    _check_dims(r=r)
    return sum(lora_param_count(mod.out_features, mod.in_features, r)
               for name, mod in model.named_modules()
               if isinstance(mod, nn.Linear) and any(_matches(name, t) for t in target_modules))


@dataclass
class StateBytes:
    """Bytes held by a training run's tensors that scale with the parameters (not activations)."""

    params: int
    grads: int
    optimizer: int

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer


def training_state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> StateBytes:
    """Sum the bytes of the parameters, their ``.grad`` tensors and the optimizer's state tensors.

    For Adam/AdamW in float32 that is 4 bytes per parameter plus 4 + 4 + 4 (grad, m, v) per
    *trainable* parameter — the saving LoRA buys. Counts live tensors, so call it after a step.
    """
    params = list(model.parameters())
    p_bytes = sum(p.numel() * p.element_size() for p in params)
    g_bytes = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    o_bytes = 0
    if optimizer is not None:
        for state in optimizer.state.values():
            o_bytes += sum(v.numel() * v.element_size() for v in state.values()
                           if torch.is_tensor(v) and v.dim() > 0)
    return StateBytes(p_bytes, g_bytes, o_bytes)


def truncation_error(delta_W: torch.Tensor, ranks) -> torch.Tensor:
    """Relative error of the best rank-r approximation of ``delta_W`` for each r in ``ranks``.

    By Eckart–Young, ‖ΔW − ΔW_r‖_F / ‖ΔW‖_F = sqrt(Σ_{i>r} σᵢ² / Σ σᵢ²) with σ the singular
    values, so one SVD answers every r. Returns a float tensor of ``len(ranks)``.
    """
    if not torch.is_tensor(delta_W) or delta_W.dim() != 2:
        raise ValueError("delta_W must be a 2-D tensor (m, n)")
    ranks = [ranks] if isinstance(ranks, int) else list(ranks)
    for r in ranks:
        if not isinstance(r, int) or r < 0:
            raise ValueError(f"ranks must be ints >= 0, got {r!r}")
    sigma2 = torch.linalg.svdvals(delta_W.detach().double()) ** 2
    total = sigma2.sum()
    if total == 0:
        return torch.zeros(len(ranks))
    tail = torch.cat([sigma2.flip(0).cumsum(0).flip(0), sigma2.new_zeros(1)])  # tail[k] = Σ_{i>=k}
    return torch.stack([(tail[min(r, len(sigma2))] / total).sqrt() for r in ranks]).float()


@dataclass
class TrainResult:
    """Per-step losses and wall times of :func:`train_steps`, and the memory it measured.

    ``peak_bytes``: ``torch.cuda.max_memory_allocated`` on CUDA; on other devices the
    :func:`training_state_bytes` total (params + grads + optimizer states) after the last step.
    """

    losses: list[float] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    peak_bytes: int = 0
    state: StateBytes | None = None


def train_steps(model: nn.Module, batches, optimizer: torch.optim.Optimizer, *, progress: bool = False,
                desc: str = "train") -> TrainResult:
    """Run one optimizer step per batch: loss = model(**batch).loss, backward, step, zero_grad.

    ``batches``: an iterable of objects with ``as_kwargs()`` (see :func:`llmlab.data.collate`)
    or of keyword dicts, already on the model's device. Timing synchronises CUDA.
    """
    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    result = TrainResult()
    model.train()
    iterator = batches
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(batches, desc=desc, leave=False)
    for batch in iterator:
        kwargs = batch.as_kwargs() if hasattr(batch, "as_kwargs") else batch
        t0 = time.perf_counter()
        loss = model(**kwargs).loss
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize(device)
        result.step_times.append(time.perf_counter() - t0)
        result.losses.append(loss.item())
        result.state = training_state_bytes(model, optimizer)
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    result.peak_bytes = torch.cuda.max_memory_allocated(device) if cuda else (result.state.total if result.state else 0)
    return result
