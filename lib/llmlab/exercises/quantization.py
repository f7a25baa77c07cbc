"""Exercises of notebook 13 (quantization)."""

from __future__ import annotations

import numpy as np
import torch

from ..quantization import GGUF_TYPES, quantize_gguf
from .base import call_safely, close, direction, exercise, is_callable, is_number


def _blocks() -> list[torch.Tensor]:
    """Random blocks, a zero block, blocks whose x/d hit exact halves, a negative-max block."""
    gen = torch.Generator().manual_seed(13)
    blocks = [torch.randn(32, generator=gen) * s for s in (0.02, 1.0, 30.0)]
    blocks.append(torch.zeros(32))
    halves = torch.tensor([-8.0] + [2.5, -2.5, 1.5, -1.5, 0.5, -0.5, 3.5] * 4 + [0.0, 0.0, 0.0])
    blocks += [halves, -halves, torch.randn(32, generator=gen).abs()]
    return blocks


def _as_bytes(got) -> np.ndarray | None:
    try:
        arr = np.asarray(got.numpy() if isinstance(got, torch.Tensor) else got)
        if arr.shape != (18,) or not np.all((arr >= 0) & (arr <= 255)) or not np.all(arr == np.round(arr)):
            return None
        return arr.astype(np.uint8)
    except (TypeError, ValueError):
        return None


@exercise("13.1", "GGUF Q4_0 for one block", "a function q4_0_block(x) -> 18 bytes (uint8 array or list of ints)",
          is_callable)
def _q4_0(q4_0_block):
    for x in _blocks():
        got, error = call_safely(q4_0_block, x.clone())
        if error:
            return False, error
        arr = _as_bytes(got)
        if arr is None:
            return False, "return 18 bytes: 2 for the fp16 scale, then 16 holding two 4-bit codes each."
        truth = quantize_gguf(x, "Q4_0")
        if np.array_equal(arr, truth):
            continue
        d_got, d_true = arr[:2].view(np.float16)[0], truth[:2].view(np.float16)[0]
        if d_got == -d_true and d_true != 0:
            return False, ("the scale has the wrong sign: d is the largest-magnitude value *with its sign* divided by -8, "
                           "so that value lands on code 0.")
        if arr[:2].tobytes() != truth[:2].tobytes():
            return False, "the 2 scale bytes differ: d = (value of largest magnitude) / -8, stored as float16, little-endian."
        low_high_swapped = ((truth[2:] & 15) << 4) | (truth[2:] >> 4)
        if np.array_equal(arr[2:], low_high_swapped):
            return False, "the nibbles are swapped: code j goes in the LOW 4 bits of byte j, code j + 16 in the high 4 bits."
        if float(x.abs().max()) > 0 and torch.equal(x.abs().unique().sort().values[:3], torch.tensor([0.0, 0.5, 1.5])):
            return False, ("the codes differ on exact halves: Q4_0 rounds with trunc(x / d + 8.5), i.e. halves go up, "
                           "not to even (torch.round) and not away from zero.")
        if not float(x.abs().max()):
            return False, "an all-zero block: d = 0, and every code must be 8 (ggml uses 1/d = 0 there)."
        return False, "some codes differ: q = trunc(x * (1/d) + 8.5), clipped to [0, 15]."
    return True, f"byte-identical to llama.cpp's format on {len(_blocks())} blocks, halves and a zero block included."


Q4_0_BITS = GGUF_TYPES["Q4_0"].bits_per_weight  # 4.5
PARAMS_7B, BANDWIDTH = 7e9, 100e9


@exercise("13.2", "tokens/s ceiling of a 7B Q4_0 model", "a number (tokens per second)", is_number)
def _ceiling(answer):
    truth = BANDWIDTH / (PARAMS_7B * Q4_0_BITS / 8)
    if close(answer, truth, 0.01):
        return True, "bandwidth / bytes per token: the scales' half bit per weight counts (4.5 bits, not 4)."
    if close(answer, BANDWIDTH / (PARAMS_7B * 4 / 8), 0.01):
        return False, "you left out the scales: Q4_0 stores an fp16 scale per 32 weights."
    if close(answer, BANDWIDTH / (PARAMS_7B * Q4_0_BITS), 0.01):
        return False, "bits, not bytes: divide the bits per weight by 8."
    if close(answer, BANDWIDTH / (PARAMS_7B * 2), 0.01):
        return False, "that is the ceiling of the bf16 model (2 bytes per weight)."
    return False, f"{direction(answer, truth)}: every weight is read once per token; tokens/s <= bandwidth / bytes of weights."
