"""Activation outliers: LLM.int8()'s outlier features and mixed-precision decomposition, SmoothQuant's migration.

Weights are easy to quantize; activations are not. Dettmers et al. (2022, "LLM.int8()") found that
transformers develop a few *feature dimensions* of the hidden state with magnitudes far above the
rest (>= 6 where typical entries are ~1), in many layers and many tokens. Quantizing a token's
activation vector to int8 with one absmax scale then spends the 256 levels on that one entry and
rounds everything else to a handful of levels. Their fix:

* vector-wise int8 matmul: each row of X (a token) and each row of W (an output channel) gets its own
  absmax scale, ``X W^T ~ (c_x c_w^T) * (X8 W8^T)`` with an exact int32 product;
* mixed-precision decomposition: the input dimensions where any |x| >= ``threshold`` (6) are
  multiplied in floating point, the rest in int8: ``X W^T = X[:, O] W[:, O]^T + int8(X[:, ~O], W[:, ~O])``.

An outlier *feature* in their criterion: magnitude >= 6, in >= 25 % of the layers, at >= 6 % of the
sequence positions. SmoothQuant (Xiao et al., 2023) instead divides each input dimension j of X by
``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` and multiplies W's column j by it (``X W^T`` is
unchanged), moving the difficulty from the activations to the weights, so that plain per-tensor int8
works for both.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_float, check_tensor
from .._torch import eval_mode, model_device
from .model import block_linears

__all__ = ["linear_inputs", "OutlierFeatures", "outlier_features", "int8_matmul", "smooth_scales"]


def linear_inputs(model: nn.Module, input_ids: torch.Tensor, *, names=None) -> dict[str, torch.Tensor]:
    """The input of each block linear (or of those in ``names``) on one forward pass over ``input_ids``
    (shape ``(1, seq)`` or ``(seq,)``): name -> float32 ``(seq, in_features)`` on the CPU."""
    check_tensor("input_ids", input_ids, dim=(1, 2), integer=True, min_numel=1)
    layers = block_linears(model)
    if names is not None:
        unknown = [n for n in names if n not in layers]
        if unknown:
            raise ValueError(f"names must be block linears of the model, got unknown {unknown[:3]}")
        layers = {n: layers[n] for n in names}
    captured: dict[str, torch.Tensor] = {}

    def hook(name):
        return lambda module, args, out: captured.__setitem__(name, args[0].detach().reshape(-1, args[0].shape[-1])
                                                              .float().cpu())

    handles = [layer.register_forward_hook(hook(name)) for name, layer in layers.items()]
    try:
        with torch.no_grad(), eval_mode(model):
            model(input_ids=input_ids.reshape(1, -1).to(model_device(model)))
    finally:
        for h in handles:
            h.remove()
    return captured


@dataclass(frozen=True)
class OutlierFeatures:
    """Outlier dimensions per layer input and across layers.

    ``per_layer``: name -> the input dimensions with ``|x| >= threshold`` at >= ``min_token_fraction``
    of the tokens. ``layers_per_dim``: (role, dim) -> in how many layers of that role (``"q_proj"``,
    ``"down_proj"``...) the dimension is an outlier; ``n_layers``: role -> layers of that role.
    ``systematic``: the (role, dim) flagged in >= ``min_layer_fraction`` of the role's layers.
    """

    threshold: float
    per_layer: dict[str, tuple[int, ...]]
    layers_per_dim: dict[tuple[str, int], int]
    n_layers: dict[str, int]
    systematic: tuple[tuple[str, int], ...]


def outlier_features(inputs: dict[str, torch.Tensor], *, threshold: float = 6.0, min_token_fraction: float = 0.06,
                     min_layer_fraction: float = 0.25) -> OutlierFeatures:
    """LLM.int8()'s outlier criterion applied to layer inputs from :func:`linear_inputs`."""
    if not isinstance(inputs, dict) or not inputs:
        raise TypeError("inputs must be a non-empty dict name -> (tokens, features) tensor, from linear_inputs")
    threshold = check_float("threshold", threshold, low=0.0, low_open=True)
    min_token_fraction = check_float("min_token_fraction", min_token_fraction, low=0.0, high=1.0)
    min_layer_fraction = check_float("min_layer_fraction", min_layer_fraction, low=0.0, high=1.0)
    per_layer, counts, n_layers = {}, Counter(), Counter()
    for name, x in inputs.items():
        check_tensor(f"inputs[{name!r}]", x, dim=2, floating=True)
        role = name.split(".")[-1]
        n_layers[role] += 1
        share = (x.abs() >= threshold).float().mean(0)  # per dimension: fraction of tokens above threshold
        dims = tuple(int(d) for d in (share >= min_token_fraction).nonzero().flatten() if share[d] > 0)
        per_layer[name] = dims
        counts.update((role, d) for d in dims)
    systematic = tuple(sorted(k for k, c in counts.items() if c >= min_layer_fraction * n_layers[k[0]]))
    return OutlierFeatures(threshold, per_layer, dict(counts), dict(n_layers), systematic)


def _int8_rows(a: torch.Tensor, per_row: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes as float64 integers in [-127, 127], scale): absmax per row or per tensor."""
    amax = a.abs().amax(-1, keepdim=True) if per_row else a.abs().amax().reshape(1, 1)
    scale = amax / 127
    codes = torch.round(a / torch.where(scale == 0, torch.ones_like(scale), scale)).clamp(-127, 127)
    return codes.double(), scale.double()


def int8_matmul(x: torch.Tensor, w: torch.Tensor, *, threshold: float | None = None, vectorwise: bool = True) -> torch.Tensor:
    """``x @ w.T`` computed as LLM.int8() does: int8 codes, an exact integer product, float scales.

    ``x``: (tokens, in); ``w``: (out, in). ``vectorwise``: one absmax scale per token and per output
    channel (False: one per tensor, plain W8A8). ``threshold``: input dimensions where any
    ``|x| >= threshold`` are multiplied in float32 instead (the mixed-precision decomposition);
    None: none. Returns float32 (tokens, out).
    """
    check_tensor("x", x, dim=2, floating=True)
    check_tensor("w", w, dim=2, floating=True)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"x and w must share their last dimension, got {tuple(x.shape)} and {tuple(w.shape)}")
    if threshold is not None:
        threshold = check_float("threshold", threshold, low=0.0, low_open=True)
    x, w = x.float(), w.float()
    outlier = (x.abs() >= threshold).any(0) if threshold is not None else torch.zeros(x.shape[1], dtype=torch.bool)
    out = x[:, outlier] @ w[:, outlier].T  # the few outlier dimensions, in float
    if bool(outlier.all()):
        return out
    xq, cx = _int8_rows(x[:, ~outlier], vectorwise)
    wq, cw = _int8_rows(w[:, ~outlier], vectorwise)
    # An int32 accumulator in hardware; float64 holds these integer sums exactly (|sum| < 2^53).
    return (out.double() + (xq @ wq.T) * (cx * cw.T)).float()


def smooth_scales(x_absmax: torch.Tensor, w: torch.Tensor, *, alpha: float = 0.5) -> torch.Tensor:
    """SmoothQuant's per-input-dimension factors ``s_j = max|X_j|^alpha / max|W_j|^(1-alpha)``.

    ``x_absmax``: (in,) the largest |activation| of each input dimension on calibration data;
    ``w``: (out, in). Use ``x / s`` and ``w * s`` (same product). Dimensions where either max is 0 get s = 1.
    """
    check_tensor("x_absmax", x_absmax, dim=1, floating=True)
    check_tensor("w", w, dim=2, floating=True)
    if x_absmax.shape[0] != w.shape[1]:
        raise ValueError(f"x_absmax must have one entry per input dimension of w ({w.shape[1]}), got {x_absmax.shape[0]}")
    alpha = check_float("alpha", alpha, low=0.0, high=1.0)
    w_absmax = w.abs().amax(0)
    s = x_absmax.float().pow(alpha) / w_absmax.float().pow(1 - alpha)
    ok = (x_absmax > 0) & (w_absmax > 0) & torch.isfinite(s)
    return torch.where(ok, s, torch.ones_like(s))
