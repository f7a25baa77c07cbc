"""GPTQ (Frantar et al., 2023): round one column at a time and push its error onto the columns not yet rounded.

Round-to-nearest minimises each weight's own error. What matters is the layer's *output* on real
inputs: for a linear layer ``y = W x`` and calibration inputs X (columns = tokens), the loss is
``||W X - W_hat X||^2 = sum_rows (w - w_hat) H (w - w_hat)^T`` with ``H = 2 X X^T / n`` (the Hessian
of the layer's squared error with respect to one row of W, the same for every row). Optimal Brain
Quantization's answer, column by column in a fixed order: quantize column i, then move the other
not-yet-quantized columns to compensate,

    err = (w_i - q(w_i)) / [H^-1]_ii,      W[:, j] -= err * [H^-1]_ij   for j > i,

and drop i from H^-1 (one step of Gaussian elimination). GPTQ makes it fast: the rows of the
*upper Cholesky factor* of H^-1 hold every elimination step's row at once, and the updates to far
columns are applied lazily, one block of columns at a time (a matrix product instead of one rank-1
update per column). Columns whose inputs are always zero ("dead") are set to 0; H gets a small
damping ``damp * mean(diag H)`` on its diagonal so that its inverse exists.

The grid is :mod:`llmlab.quantization.rtn`'s (fp16 scale, and minimum when asymmetric, per group
of ``group_size`` columns), each group's grid fitted when the algorithm reaches the group's first
column (on the weights as updated so far), so GPTQ and round-to-nearest spend the same bits.
"""

from __future__ import annotations

import torch

from .._checks import check_bool, check_float, check_int, check_tensor

__all__ = ["calibration_hessian", "gptq_quantize", "layer_output_error"]


def calibration_hessian(x: torch.Tensor) -> torch.Tensor:
    """``H = 2 X^T X / n`` (float64) from a layer's inputs ``x`` of shape ``(..., in_features)`` (n rows)."""
    check_tensor("x", x, floating=True, min_numel=1)
    rows = x.detach().reshape(-1, x.shape[-1]).double()
    return 2 * rows.T @ rows / rows.shape[0]


def layer_output_error(w: torch.Tensor, w_hat: torch.Tensor, x: torch.Tensor) -> float:
    """Relative output error ``||x (w - w_hat)^T|| / ||x w^T||`` of a linear layer on inputs ``x`` (..., in)."""
    check_tensor("w", w, dim=2, floating=True)
    check_tensor("w_hat", w_hat, dim=2, floating=True)
    check_tensor("x", x, floating=True)
    if w.shape != w_hat.shape or x.shape[-1] != w.shape[1]:
        raise ValueError(f"w_hat must have w's shape {tuple(w.shape)} and x must end in {w.shape[1]} features, "
                         f"got {tuple(w_hat.shape)} and {tuple(x.shape)}")
    rows = x.reshape(-1, x.shape[-1]).double()
    return float((rows @ (w.double() - w_hat.double()).T).norm() / (rows @ w.double().T).norm())


def _fit_grid(cols: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(scale, minimum) per row for the columns ``cols`` (rows, g): rtn's grid, fp16-rounded."""
    if symmetric:
        q_max = 2 ** (bits - 1) - 1
        scale = (cols.abs().amax(-1, keepdim=True) / q_max).half().to(cols.dtype)
        return scale, None
    minimum = cols.amin(-1, keepdim=True).half().to(cols.dtype)
    scale = ((cols.amax(-1, keepdim=True) - minimum) / (2 ** bits - 1)).half().to(cols.dtype)
    return scale, minimum


def _round_to_grid(w: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor | None, bits: int) -> torch.Tensor:
    """One column ``w`` (rows,) rounded to the grid of its group."""
    s = torch.where(scale == 0, torch.ones_like(scale), scale)[:, 0]
    if minimum is None:
        q_max = 2 ** (bits - 1) - 1
        return torch.round(w / s).clamp(-q_max, q_max) * scale[:, 0]
    return torch.round((w - minimum[:, 0]) / s).clamp(0, 2 ** bits - 1) * scale[:, 0] + minimum[:, 0]


def gptq_quantize(w: torch.Tensor, hessian: torch.Tensor, *, bits: int, group_size: int = 128,
                  symmetric: bool = False, block_size: int = 128, damp: float = 0.01) -> torch.Tensor:
    """GPTQ-quantized weights of one linear layer, decoded: ``w`` (out, in) -> float32 (out, in).

    ``hessian``: ``(in, in)`` from :func:`calibration_hessian`. ``group_size`` columns share a
    grid (``bits`` in [2, 8], asymmetric unless ``symmetric``). ``block_size``: columns per lazy
    update (the result does not depend on it, up to rounding). ``damp``: fraction of the mean
    diagonal added to H. Computed in float64.
    """
    check_tensor("w", w, dim=2, floating=True, min_numel=1)
    check_tensor("hessian", hessian, dim=2, floating=True)
    n_in = w.shape[1]
    if hessian.shape != (n_in, n_in):
        raise ValueError(f"hessian must be ({n_in}, {n_in}) for w of shape {tuple(w.shape)}, got {tuple(hessian.shape)}")
    bits = check_int("bits", bits, low=2, high=8)
    group_size = check_int("group_size", group_size, low=1)
    check_bool("symmetric", symmetric)
    block_size = check_int("block_size", block_size, low=1)
    damp = check_float("damp", damp, low=0.0, low_open=True, high=1.0)

    W = w.detach().double().clone()
    H = hessian.detach().double().clone().to(W.device)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * torch.diag(H).mean() * torch.eye(n_in, dtype=H.dtype, device=H.device)
    # Upper Cholesky factor of H^-1: row i is elimination step i's row of the inverse, / sqrt(its pivot).
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)

    Q = torch.zeros_like(W)
    scale = minimum = None
    for i1 in range(0, n_in, block_size):
        i2 = min(i1 + block_size, n_in)
        W1, U1 = W[:, i1:i2].clone(), U[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            col = i1 + i
            if col % group_size == 0:  # fit the group's grid on the weights as updated so far
                need = max(0, group_size - (i2 - col))  # columns past this block: add their pending update
                later = W[:, i2:i2 + need] - Err1[:, :i] @ U[i1:col, i2:i2 + need]
                group = torch.cat([W1[:, i:], later], dim=1)[:, :group_size]
                scale, minimum = _fit_grid(group, bits, symmetric)
            q = _round_to_grid(W1[:, i], scale, minimum, bits)
            Q[:, col] = q
            err = (W1[:, i] - q) / U1[i, i]
            W1[:, i:] -= err[:, None] * U1[i, i:][None, :]  # compensate inside the block at once
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]  # ... and the columns after it, lazily
    return Q.to(torch.float32)
