"""Exercises of notebooks 06 (truncated SVD) and 07 (LoRA)."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from .. import svd
from ..lora import LoRALinear, lora_model_param_count, merge_lora
from .base import call_safely, dict_of, direction, exercise, is_callable, is_int, pair_of, smollm2_skeleton

# --- 06 truncated SVD --------------------------------------------------------------------------

SIDE, MAX_ERROR = 256, 0.1


@lru_cache(maxsize=1)
def _camera_ks() -> tuple[int, int, int]:
    """k for 10 % error on the camera photo: (left half, right half, whole image)."""
    camera = svd.demo_images(SIDE)["camera"]
    half = camera.shape[1] // 2
    return tuple(svd.k_for_error(svd.factorize(part), MAX_ERROR) for part in (camera[:, :half], camera[:, half:], camera))


@exercise("06.1", "the camera's halves", "a pair (k_left, k_right) of ints", pair_of(is_int))
def _halves(answer):
    left, right, whole = _camera_ks()
    got = tuple(int(k) for k in answer)
    if got == (left, right):
        return True, (f"{left} and {right} against {whole} for the whole photo: singular values follow the content "
                      "(edges, texture), not the number of pixels.")
    if got == (right, left):
        return False, "swapped: columns 0 .. W/2 − 1 are the left half."
    if whole in got:
        return False, "one of your numbers is the whole image's k: factorize each half on its own."
    side = "left" if got[0] != left else "right"
    return False, (f"the {side} half's k is {direction(got[side == 'right'], (left, right)[side == 'right'])}: use "
                   f"svd.k_for_error(svd.factorize(half), {MAX_ERROR}) on demo_images({SIDE})['camera'].")


ANGLES, SQUARE = (0, 5, 15, 45), 8


@lru_cache(maxsize=1)
def _checker_ks() -> dict[int, int]:
    return {a: svd.k_for_error(svd.factorize(svd.checkerboard(SIDE, SQUARE, angle=a)), MAX_ERROR) for a in ANGLES}


@exercise("06.2", "rank of a rotated checkerboard", "a dict {0: k, 5: k, 15: k, 45: k} of ints", dict_of(ANGLES, is_int))
def _checkerboard(answer):
    truth = _checker_ks()
    for angle in ANGLES:
        if int(answer[angle]) != truth[angle]:
            hint = " Aligned with the axes the board is rank 2." if angle == 0 else ""
            return False, (f"angle {angle}°: your k is {direction(answer[angle], truth[angle])}.{hint} Use "
                           f"svd.checkerboard({SIDE}, {SQUARE}, angle=...) and k_for_error(..., {MAX_ERROR}).")
    return True, "any rotation breaks the rows × columns structure; 45° is not the worst case."


# --- 07 LoRA -----------------------------------------------------------------------------------

@exercise("07.1", "merging an adapter by hand", "a function merge(W0, A, B, alpha, r) -> merged weight", is_callable)
def _merge(merge):
    g = torch.Generator().manual_seed(0)
    for n_in, n_out, r, alpha in [(16, 12, 4, 8.0), (10, 20, 2, 16.0), (8, 8, 8, 1.0)]:
        base = nn.Linear(n_in, n_out)
        with torch.no_grad():
            base.weight.copy_(torch.randn(n_out, n_in, generator=g))
        lora = LoRALinear(base, r=r, alpha=alpha)
        with torch.no_grad():
            lora.B.weight.copy_(torch.randn(n_out, r, generator=g))
        W0, A, B = base.weight.detach().clone(), lora.A.weight.detach().clone(), lora.B.weight.detach().clone()
        truth = merge_lora(nn.Sequential(lora))[0].weight.detach()
        got, error = call_safely(merge, W0, A, B, alpha, r)
        if error:
            return False, error
        if not isinstance(got, torch.Tensor) or got.shape != W0.shape:
            return False, (f"return the merged weight, shape {tuple(W0.shape)} like W0; "
                           f"got {getattr(got, 'shape', type(got).__name__)} (A is (r, in), B is (out, r)).")
        if torch.allclose(got, truth, atol=1e-5):
            continue
        delta = B @ A
        for scale, hint in [(1.0, "the update is scaled by α/r"), (r / alpha, "the scale is α/r, not r/α"),
                            (alpha, "the scale is α/r, not α")]:
            if scale != alpha / r and torch.allclose(got, W0 + scale * delta, atol=1e-5):
                return False, f"with r={r}, α={alpha}: {hint}."
        if torch.allclose(got, (alpha / r) * delta, atol=1e-5):
            return False, "the merged weight keeps W0 and adds the update."
        return False, f"with r={r}, α={alpha} your weight differs from merge_lora's: W = W0 + (α/r)·B A."
    return True, "the same weight as llmlab.lora.merge_lora: one matmul at inference, the same function."


ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@exercise("07.2", "trainable parameters of a wider adapter", "an int (a parameter count)", is_int)
def _wide_adapter(answer):
    model = smollm2_skeleton()
    truth = lora_model_param_count(model, ALL_PROJECTIONS, r=8)
    qv = lora_model_param_count(model, ("q_proj", "v_proj"), r=8)
    answer = int(answer)
    if answer == truth:
        share = truth / sum(p.numel() for p in model.parameters())
        return True, f"{truth / qv:.1f}× the q/v adapter, still only {share:.1%} of the model's parameters."
    if answer == qv:
        return False, "that is the q_proj/v_proj adapter: count all seven projections of each block."
    if answer == lora_model_param_count(model, ALL_PROJECTIONS[:4], r=8):
        return False, "that is the attention projections only: the MLP's gate_proj, up_proj and down_proj count too."
    if answer * 30 == truth:
        return False, "that is one block: SmolLM2-135M has 30."
    return False, (f"{direction(answer, truth)}: every adapted (out × in) matrix adds r·(out + in); k_proj and v_proj "
                   "are narrower than q_proj (grouped-query attention).")
