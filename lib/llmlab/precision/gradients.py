"""How large gradients are, and why that matters twice: for fp16 and for the choice of optimizer.

* :func:`lm_gradient_sizes`: one backward pass of a causal LM on a micro-batch that is part of a
  large global batch (the loss is the sum of our tokens' cross-entropies divided by the global
  token count, as in gradient accumulation on one device; under data parallelism the average over
  devices comes after backward, so each device's gradients are as large as its own share makes them). It reports the per-token gradients (w.r.t. every
  token's hidden state, layer by layer), how many of them fp16 would flush to zero, and the
  gradient RMS of every parameter tensor, which differ by orders of magnitude.
* :func:`train_scaled_quadratic`: SGD vs Adam on a quadratic whose coordinates have very different
  curvatures. SGD's single step size must suit the steepest coordinate, so the flat ones barely
  move; Adam divides each coordinate's step by its own gradient scale (sqrt of v), so every
  coordinate moves alike. That per-parameter step size is why Adam(W) is the default for LLMs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_choice, check_float, check_int, check_tensor
from .._torch import IGNORE_INDEX, resolve_dtype
from ..modelinfo import check_token_ids
from .mixed import HALF_DTYPES

__all__ = ["GradientSizes", "lm_gradient_sizes", "QuadraticRun", "QUADRATIC_OPTIMIZERS", "train_scaled_quadratic"]


@dataclass(frozen=True)
class GradientSizes:
    """What :func:`lm_gradient_sizes` measured.

    ``tokens``: predicted tokens in the micro-batch; ``global_tokens``: the global batch the loss
    is divided by. ``hidden_median[l]`` / ``hidden_flushed[l]``: median |∂L/∂h| over the entries of
    hidden state l (0 = embeddings) at real (unpadded) positions, and the fraction of its non-zero
    entries that ``dtype`` rounds to zero. ``weight_flushed``: the same fraction over every weight
    gradient entry. ``param_rms``: parameter name -> RMS of its gradient.
    """

    tokens: int
    global_tokens: int
    dtype: torch.dtype
    hidden_median: tuple[float, ...]
    hidden_flushed: tuple[float, ...]
    weight_flushed: float
    param_rms: dict[str, float]


def _flushed(g: torch.Tensor, dtype: torch.dtype) -> tuple[int, int]:
    """(entries non-zero in fp32 but zero in ``dtype``, non-zero entries)."""
    nonzero = g != 0
    return int((nonzero & (g.to(dtype) == 0)).sum()), int(nonzero.sum())


def lm_gradient_sizes(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                      global_tokens: int = 2**20, dtype=torch.float16) -> GradientSizes:
    """Gradient magnitudes of one fp32 backward pass of a Hugging Face causal LM.

    ``input_ids`` (batch, seq); ``attention_mask`` (batch, seq) or None. Loss = sum of next-token
    cross-entropies over the batch / ``global_tokens`` (>= the batch's predicted tokens): every
    gradient scales as 1 / ``global_tokens``. ``dtype`` (fp16 or bf16): the format whose
    underflow is counted. The model's ``.grad`` fields are restored afterwards.
    """
    check_tensor("input_ids", input_ids, dim=2, integer=True)
    if input_ids.shape[1] < 2:
        raise ValueError(f"input_ids must hold at least 2 tokens per row (one to predict), got {input_ids.shape[1]}")
    check_token_ids(model, input_ids)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    check_tensor("attention_mask", attention_mask, dim=2)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask must have input_ids' shape {tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}")
    dtype = resolve_dtype(dtype, allowed=HALF_DTYPES)
    labels = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, IGNORE_INDEX)
    tokens = int((labels != IGNORE_INDEX).sum())
    global_tokens = check_int("global_tokens", global_tokens, low=max(tokens, 1))

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    old_grads = {n: p.grad for n, p in named}
    try:
        for _, p in named:
            p.grad = None
        with torch.enable_grad():
            out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
            hidden = out.hidden_states
            for h in hidden:
                h.retain_grad()
            logits = out.logits[:, :-1].float()
            ce = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             reduction="sum", ignore_index=IGNORE_INDEX)
            (ce / global_tokens).backward()
        real = attention_mask.bool()
        hidden_median, hidden_flushed = [], []
        for h in hidden:
            g = h.grad[real].float()
            flushed, nonzero = _flushed(g, dtype)
            hidden_median.append(float(g.abs().median()))
            hidden_flushed.append(flushed / max(nonzero, 1))
        flushed = nonzero = 0
        param_rms = {}
        for n, p in named:
            if p.grad is None:
                continue
            f, nz = _flushed(p.grad, dtype)
            flushed, nonzero = flushed + f, nonzero + nz
            param_rms[n] = float(p.grad.float().pow(2).mean().sqrt())
    finally:
        for n, p in named:
            p.grad = old_grads[n]
    return GradientSizes(tokens=tokens, global_tokens=global_tokens, dtype=dtype, hidden_median=tuple(hidden_median),
                         hidden_flushed=tuple(hidden_flushed), weight_flushed=flushed / max(nonzero, 1),
                         param_rms=param_rms)


# ---------------------------------------------------------------------------------------------
# SGD vs Adam on a badly scaled quadratic
# ---------------------------------------------------------------------------------------------

QUADRATIC_OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class QuadraticRun:
    """One :func:`train_scaled_quadratic` run.

    ``errors``: (steps + 1, d) with ``errors[t, i] = |w_i - w*_i|`` after t steps (1 at t = 0);
    ``first_grad`` and ``first_step``: (d,) the gradient |g_i| at the start and the size of the
    first update |Δw_i|.
    """

    optimizer: str
    lr: float
    curvatures: tuple[float, ...]
    errors: torch.Tensor
    first_grad: torch.Tensor
    first_step: torch.Tensor


def train_scaled_quadratic(optimizer: str, *, lr: float, steps: int = 200, curvatures=(1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0),
                           betas: tuple[float, float] = (0.9, 0.999)) -> QuadraticRun:
    """Minimise L(w) = ½ Σᵢ cᵢ (wᵢ − w*ᵢ)² from w = w* + 1 with torch's SGD or Adam (fp64).

    The gradient gᵢ = cᵢ (wᵢ − w*ᵢ) of coordinate i is proportional to its curvature cᵢ. SGD moves
    coordinate i by lr·gᵢ: stable only for lr < 2 / max c, at which the flattest coordinates
    shrink by (1 − lr cᵢ) per step — hardly at all. Adam moves it by lr·m̂ᵢ/(√v̂ᵢ + ε), which does
    not depend on the scale of gᵢ: its first step is lr on every coordinate, and all of them
    converge alike. ``curvatures``: positive numbers (one per coordinate).
    """
    check_choice("optimizer", optimizer, QUADRATIC_OPTIMIZERS)
    steps = check_int("steps", steps, low=1, high=10**6)  # errors keeps (steps + 1, d) float64 numbers
    if isinstance(curvatures, (str, bytes)) or not hasattr(curvatures, "__iter__"):
        raise TypeError(f"curvatures must be a sequence of positive numbers, got {type(curvatures).__name__}")
    c = torch.as_tensor([check_float(f"curvatures[{i}]", v, low=0, low_open=True) for i, v in enumerate(curvatures)],
                        dtype=torch.float64)
    if c.numel() == 0:
        raise ValueError("curvatures must hold at least one positive number")
    w_star = torch.linspace(-1.0, 1.0, c.numel(), dtype=torch.float64)
    w = nn.Parameter(w_star + 1.0)
    # lr and betas: torch.optim refuses bad values itself, at once and by name
    opt = torch.optim.SGD([w], lr=lr) if optimizer == "sgd" else torch.optim.Adam([w], lr=lr, betas=betas)
    errors, first_grad, first_step = [(w.detach() - w_star).abs()], None, None
    for t in range(steps):
        before = w.detach().clone()
        loss = 0.5 * (c * (w - w_star) ** 2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if t == 0:
            first_grad = w.grad.detach().abs().clone()
        opt.step()
        if t == 0:
            first_step = (w.detach() - before).abs()
        errors.append((w.detach() - w_star).abs())
    return QuadraticRun(optimizer=optimizer, lr=lr, curvatures=tuple(c.tolist()), errors=torch.stack(errors),
                        first_grad=first_grad, first_step=first_step)
