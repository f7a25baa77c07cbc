"""GGUF's block formats Q8_0, Q4_0, Q4_1 and Q5_0, written from scratch in PyTorch, byte for byte.

llama.cpp (ggml) stores a weight matrix row by row in blocks of 32 consecutive weights. Each block
keeps an fp16 scale ``d`` (and, for Q4_1, an fp16 minimum ``m``) and one small integer per weight:

============  =========================================  ==========================  =====  ===============
format        codes                                       decoded weight              bytes  bits per weight
============  =========================================  ==========================  =====  ===============
``Q8_0``      q = round(x / d), d = max|x| / 127          d * q, q in [-127, 127]       34     8.5
``Q4_0``      q = floor(x / d + 8.5), d = x_maxabs / -8   d * (q - 8), q in [0, 15]     18     4.5
``Q4_1``      q = floor((x - m) / d + 0.5), d = (max - m)/15, m = min   d * q + m    20     5.0
``Q5_0``      q = floor(x / d + 16.5), d = x_maxabs / -16 d * (q - 16), q in [0, 31]    22     5.5
============  =========================================  ==========================  =====  ===============

``x_maxabs`` is the block's weight of largest magnitude *with its sign*: dividing by a negative
number maps it to code 0 (-8 after the shift), so the 16 levels of Q4_0 reach one step further on
that weight's side. The rounding differs between formats and is part of the format: Q8_0 rounds
half away from zero (C's ``roundf``), the others add 0.5 and truncate, i.e. round half up. The
codes are computed with the float32 scale; the stored scale is its fp16 rounding. Byte layout of a
block: the fp16 scale(s) little-endian, then (Q5_0) 4 bytes holding bit 4 of the 32 codes, then the
codes: Q8_0 one int8 each; the 4-bit formats two per byte, code j in the low nibble of byte j and
code j + 16 in its high nibble.

:func:`quantize_gguf` and :func:`dequantize_gguf` match the ``gguf`` package's NumPy reference
(``gguf.quants.quantize`` / ``dequantize``, the same arithmetic as ``ggml-quants.c``) byte for byte;
``tests/test_quantization_blocks.py`` checks it, this module never calls it. NaN or inf in the
input gives unspecified codes for its block (as in the reference). A block whose scale exceeds
fp16's range (|x| above 65504 * 127 for Q8_0, * 8 for Q4_0) stores an infinite scale and decodes to
inf/NaN, exactly as ggml does; any other finite input decodes to finite values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._checks import check_choice

__all__ = ["GGUFType", "GGUF_TYPES", "quantize_gguf", "dequantize_gguf", "gguf_type_name"]

BLOCK = 32  # weights per block, in every format here
CHUNK = 1 << 14  # blocks per pass (2 MB of float32): the temporaries stay in the CPU's cache


@dataclass(frozen=True)
class GGUFType:
    """One block format: ``type_size`` bytes hold ``block_size`` weights; ``bits_per_weight`` counts the scales."""

    name: str
    block_size: int
    type_size: int
    bits: int  # bits of each code

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.type_size / self.block_size


GGUF_TYPES: dict[str, GGUFType] = {
    "Q8_0": GGUFType("Q8_0", BLOCK, 2 + 32, 8),
    "Q4_0": GGUFType("Q4_0", BLOCK, 2 + 16, 4),
    "Q4_1": GGUFType("Q4_1", BLOCK, 2 + 2 + 16, 4),
    "Q5_0": GGUFType("Q5_0", BLOCK, 2 + 4 + 16, 5),
}


def gguf_type_name(qtype) -> str:
    """``"Q4_1"`` from ``"Q4_1"`` (any case) or from ``gguf.GGMLQuantizationType.Q4_1`` (anything with that ``.name``)."""
    name = qtype if isinstance(qtype, str) else getattr(qtype, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"qtype must be a GGUF type name such as 'Q4_1' (or a gguf.GGMLQuantizationType), "
                        f"got {qtype!r} ({type(qtype).__name__})")
    return check_choice("qtype", name.upper(), GGUF_TYPES)


def _as_float_tensor(x) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise TypeError(f"x must hold real numbers, got a numpy array of dtype {x.dtype}")
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor or a numpy.ndarray, got {type(x).__name__}")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"x must hold real numbers, got dtype {x.dtype}")
    return x.detach().to(torch.float32).contiguous()


def _as_bytes(data) -> torch.Tensor:
    if isinstance(data, np.ndarray):
        if data.dtype not in (np.uint8, np.int8):
            raise TypeError(f"data must hold bytes (numpy uint8), got dtype {data.dtype}")
        # A copy: arrays read from a GGUF file are read-only memory maps, which torch does not wrap.
        return torch.from_numpy(np.array(data, dtype=np.uint8, copy=True))
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"data must be a numpy.ndarray or torch.Tensor of uint8 blocks, got {type(data).__name__}")
    if data.dtype not in (torch.uint8, torch.int8):
        raise TypeError(f"data must hold bytes (torch.uint8), got dtype {data.dtype}")
    return data.contiguous().view(torch.uint8)


def _inverse(d: torch.Tensor) -> torch.Tensor:
    """1/d, and 0 where d == 0 (an all-zero block: every code becomes the zero level)."""
    return torch.where(d == 0, torch.zeros_like(d), torch.ones_like(d) / d)


def _fp16_bytes(v: torch.Tensor) -> torch.Tensor:
    """(n, 1) float32 -> (n, 2) uint8: the value rounded to fp16 (nearest even), little-endian."""
    return v.to(torch.float16).view(torch.uint8)


def _signed_absmax(blocks: torch.Tensor) -> torch.Tensor:
    """(n, 32) -> (n, 1): the entry of largest magnitude, with its sign (the first one if tied)."""
    return blocks.gather(-1, blocks.abs().argmax(-1, keepdim=True))


def _nibbles(q: torch.Tensor) -> torch.Tensor:
    """(n, 32) codes in [0, 15] -> (n, 16) bytes: code j low, code j + 16 high."""
    return q[:, :16] | (q[:, 16:] << 4)


def _unnibble(qs: torch.Tensor) -> torch.Tensor:
    """(n, 16) bytes -> (n, 32) codes in [0, 15]."""
    return torch.cat([qs & 0x0F, qs >> 4], dim=-1)


def _round_half_away(v: torch.Tensor) -> torch.Tensor:
    """C's roundf, exactly: floor(|v|) plus 1 if the fraction is >= 0.5, with v's sign.

    ``floor(|v| + 0.5)`` is not the same: for |v| = 0.49999997, |v| + 0.5 rounds up to 1.0 in float32.
    """
    a = v.abs()
    whole = torch.floor(a)
    return torch.sign(v) * (whole + torch.floor(2 * (a - whole)))


def _quantize_blocks(blocks: torch.Tensor, name: str) -> torch.Tensor:
    """(n, 32) float32 -> (n, type_size) uint8."""
    if name == "Q8_0":
        d = blocks.abs().amax(-1, keepdim=True) / 127
        q = _round_half_away(blocks * _inverse(d)).to(torch.int8).view(torch.uint8)
        return torch.cat([_fp16_bytes(d), q], dim=-1)
    if name == "Q4_1":
        low, high = blocks.amin(-1, keepdim=True), blocks.amax(-1, keepdim=True)
        d = (high - low) / 15
        q = torch.trunc((blocks - low) * _inverse(d) + 0.5).clamp(0, 15).to(torch.uint8)
        return torch.cat([_fp16_bytes(d), _fp16_bytes(low), _nibbles(q)], dim=-1)
    levels = 16 if name == "Q4_0" else 32  # Q4_0: codes 0..15 around 8; Q5_0: 0..31 around 16
    d = _signed_absmax(blocks) / -(levels // 2)
    q = torch.trunc(blocks * _inverse(d) + (levels // 2 + 0.5)).clamp(0, levels - 1).to(torch.uint8)
    if name == "Q4_0":
        return torch.cat([_fp16_bytes(d), _nibbles(q)], dim=-1)
    high_bits = (q >> 4).reshape(-1, 4, 8)  # Q5_0: bit 4 of code j goes to bit j of a little-endian uint32
    qh = (high_bits << torch.arange(8, dtype=torch.uint8, device=q.device)).sum(-1, dtype=torch.uint8)
    return torch.cat([_fp16_bytes(d), qh, _nibbles(q & 0x0F)], dim=-1)


def _dequantize_blocks(raw: torch.Tensor, name: str) -> torch.Tensor:
    """(n, type_size) uint8 -> (n, 32) float32."""
    d = raw[:, :2].contiguous().view(torch.float16).to(torch.float32)
    if name == "Q8_0":
        return raw[:, 2:].contiguous().view(torch.int8).to(torch.float32) * d
    if name == "Q4_1":
        m = raw[:, 2:4].contiguous().view(torch.float16).to(torch.float32)
        return d * _unnibble(raw[:, 4:]).to(torch.float32) + m
    if name == "Q4_0":
        return d * (_unnibble(raw[:, 2:]).to(torch.int16) - 8).to(torch.float32)
    shifts = torch.arange(8, dtype=torch.uint8, device=raw.device)
    high = ((raw[:, 2:6, None] >> shifts) & 1).reshape(-1, 32)  # bit j of the uint32 = bit 4 of code j
    q = _unnibble(raw[:, 6:]) | (high << 4)
    return d * (q.to(torch.int16) - 16).to(torch.float32)


def quantize_gguf(x, qtype) -> np.ndarray:
    """Quantize ``x`` (a float tensor or array whose last dimension is a multiple of 32) to GGUF blocks.

    Returns a ``numpy.ndarray`` of ``uint8`` of shape ``(*x.shape[:-1], x.shape[-1] // 32 * type_size)``,
    the bytes llama.cpp writes for ``qtype`` (``"Q8_0"``, ``"Q4_0"``, ``"Q4_1"`` or ``"Q5_0"``, or a
    ``gguf.GGMLQuantizationType``): equal to ``gguf.quants.quantize(x, qtype)``. Computed in float32
    with torch on ``x``'s device.
    """
    name = gguf_type_name(qtype)
    x = _as_float_tensor(x)
    if x.dim() == 0 or x.shape[-1] % BLOCK != 0:
        raise ValueError(f"x must have a last dimension that is a multiple of {BLOCK} (GGUF blocks), "
                         f"got shape {tuple(x.shape)}")
    fmt = GGUF_TYPES[name]
    blocks = x.reshape(-1, BLOCK)
    raw = torch.empty(blocks.shape[0], fmt.type_size, dtype=torch.uint8, device=x.device)
    for start in range(0, blocks.shape[0], CHUNK):
        raw[start:start + CHUNK] = _quantize_blocks(blocks[start:start + CHUNK], name)
    return raw.reshape(*x.shape[:-1], x.shape[-1] // BLOCK * fmt.type_size).cpu().numpy()


def dequantize_gguf(data, qtype) -> torch.Tensor:
    """Decode GGUF blocks (``uint8``, last dimension a multiple of the format's block bytes) to float32.

    Returns a ``torch.float32`` tensor of shape ``(*data.shape[:-1], data.shape[-1] // type_size * 32)``
    on ``data``'s device (the CPU for a NumPy array), equal to ``gguf.quants.dequantize(data, qtype)``.
    """
    name = gguf_type_name(qtype)
    raw = _as_bytes(data)
    fmt = GGUF_TYPES[name]
    if raw.dim() == 0 or raw.shape[-1] % fmt.type_size != 0:
        raise ValueError(f"data must have a last dimension that is a multiple of {fmt.type_size} bytes "
                         f"(one {name} block), got shape {tuple(raw.shape)}")
    rows = raw.reshape(-1, fmt.type_size)
    x = torch.empty(rows.shape[0], BLOCK, dtype=torch.float32, device=raw.device)
    for start in range(0, rows.shape[0], CHUNK):
        x[start:start + CHUNK] = _dequantize_blocks(rows[start:start + CHUNK], name)
    return x.reshape(*raw.shape[:-1], raw.shape[-1] // fmt.type_size * BLOCK)
