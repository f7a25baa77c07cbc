"""Round-to-nearest (RTN) quantization with a scale: symmetric absmax or asymmetric (scale + minimum),
per tensor, per output channel or per group of weights; and packing b-bit codes into bytes.

A group of weights w shares one scale s (and, asymmetric, one minimum m):

* symmetric absmax: ``s = max|w| / (2^(b-1) - 1)``, ``q = round(w / s)`` in [-(2^(b-1)-1), 2^(b-1)-1],
  ``w_hat = s * q``. Zero is exact; one of the 2^b codes is unused.
* asymmetric: ``m = min w``, ``s = (max w - m) / (2^b - 1)``, ``q = round((w - m) / s)`` in
  [0, 2^b - 1], ``w_hat = s * q + m``. All 2^b levels span [min, max]. (Integer zero-point
  formats store ``z = round(-m / s)`` instead of m; the grid is the same up to that rounding.)

Scales and minimums are stored in fp16 (as GGUF does), so ``bits_per_weight = b + 16 / g``
(symmetric) or ``b + 32 / g`` (asymmetric) for groups of g weights. Granularity: ``"tensor"`` (one
scale), ``"channel"`` (one per output row) or an int g (groups of g consecutive weights along each
row, the input dimension; a row whose length is not a multiple of g ends with a shorter group).
The error of every weight is at most s / 2, and s is set by the group's largest magnitude: one
outlier stretches the grid of its whole group.

NaN in gives NaN out for its group; finite input always gives finite output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._checks import check_bool, check_int, check_tensor

__all__ = ["QuantizedTensor", "quantize_rtn", "fake_quantize", "rtn_bits_per_weight", "pack_bits", "unpack_bits"]

_SCALE_BITS = 16  # fp16 scales and minimums


@dataclass(frozen=True)
class QuantizedTensor:
    """Codes and scales of :func:`quantize_rtn`.

    ``codes``: ``(n_groups, group_size)`` int16 (padded groups repeat their last weight);
    ``scale`` and ``minimum`` (None when symmetric): ``(n_groups, 1)`` float16; ``shape``: the
    original shape; ``n_weights``: how many of the codes are real (the rest is padding).
    """

    codes: torch.Tensor
    scale: torch.Tensor
    minimum: torch.Tensor | None
    bits: int
    group_size: int
    shape: tuple[int, ...]
    symmetric: bool

    @property
    def n_weights(self) -> int:
        return math.prod(self.shape)

    @property
    def bits_per_weight(self) -> float:
        """Bits of storage per weight: the codes plus the fp16 scales (and minimums)."""
        n_scales = self.scale.numel() * (1 if self.symmetric else 2)
        return (self.bits * self.n_weights + _SCALE_BITS * n_scales) / self.n_weights

    @property
    def nbytes(self) -> int:
        """Bytes of storage: the packed codes (:func:`pack_bits`) plus 2 per scale and minimum."""
        n_scales = self.scale.numel() * (1 if self.symmetric else 2)
        return math.ceil(self.bits * self.n_weights / 8) + 2 * n_scales

    def dequantize(self) -> torch.Tensor:
        """``w_hat`` as float32 in the original shape."""
        w = self.codes.to(torch.float32) * self.scale.to(torch.float32)
        if self.minimum is not None:
            w = w + self.minimum.to(torch.float32)
        return _ungroup(w, self.shape)


def _group_size(granularity, shape: tuple[int, ...]) -> int:
    if granularity == "tensor":
        return math.prod(shape)
    if granularity == "channel":
        return shape[-1]
    return granularity


def _groups(w: torch.Tensor, g: int, granularity) -> torch.Tensor:
    """(n_groups, g): each row cut into groups of g; a short last group is padded with its last weight
    (which changes neither its max, min nor absmax)."""
    rows = w.reshape(1, -1) if granularity == "tensor" else w.reshape(-1, w.shape[-1])
    pad = -rows.shape[-1] % g
    if pad:
        rows = torch.cat([rows, rows[:, -1:].expand(-1, pad)], dim=-1)
    return rows.reshape(-1, g)


def _ungroup(groups: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    cols = shape[-1] if len(shape) else 1
    n_rows = math.prod(shape) // cols
    flat = groups.reshape(-1)
    if flat.numel() == n_rows * cols:
        return flat.reshape(shape)
    return groups.reshape(n_rows, -1)[:, :cols].reshape(shape)  # drop each row's padding


def _check_scheme(bits, granularity, symmetric) -> int:
    """What both RTN entry points take: ``bits`` in [2, 8], ``granularity`` ``"tensor"``, ``"channel"`` or a
    group size (an int >= 1), ``symmetric`` a bool; returns ``bits``."""
    check_bool("symmetric", symmetric)
    if isinstance(granularity, str):
        if granularity not in ("tensor", "channel"):
            raise ValueError(f"granularity must be 'tensor', 'channel' or a group size (an int >= 1), "
                             f"got {granularity!r}")
    else:
        check_int("granularity", granularity, low=1)
    return check_int("bits", bits, low=2, high=8)


def _quantize(w: torch.Tensor, bits: int, granularity, symmetric: bool) -> QuantizedTensor:
    shape = tuple(w.shape)
    g = _group_size(granularity, shape)
    groups = _groups(w.detach().to(torch.float32), g, granularity)
    if symmetric:
        q_max = 2 ** (bits - 1) - 1
        scale = (groups.abs().amax(-1, keepdim=True) / q_max).to(torch.float16)
        s = scale.to(torch.float32)
        codes = torch.round(groups / torch.where(s == 0, torch.ones_like(s), s)).clamp(-q_max, q_max)
        minimum = None
    else:
        low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
        minimum = low.to(torch.float16)
        scale = ((high - minimum.to(torch.float32)) / (2 ** bits - 1)).to(torch.float16)
        s = scale.to(torch.float32)
        codes = torch.round((groups - minimum.to(torch.float32)) / torch.where(s == 0, torch.ones_like(s), s))
        codes = codes.clamp(0, 2 ** bits - 1)
    return QuantizedTensor(codes.to(torch.int16), scale, minimum, bits, g, shape, symmetric)


def quantize_rtn(w: torch.Tensor, *, bits: int, granularity="channel", symmetric: bool = True) -> QuantizedTensor:
    """Round-to-nearest quantization of ``w`` (any shape; rows are the last dimension) to ``bits`` in [2, 8].

    ``granularity``: ``"tensor"``, ``"channel"`` (one scale per row) or a group size g (int >= 1).
    ``symmetric``: absmax scale (True) or scale + minimum (False). See the module docstring.
    """
    check_tensor("w", w, floating=True, min_numel=1)
    bits = _check_scheme(bits, granularity, symmetric)
    return _quantize(w, bits, granularity, symmetric)


def fake_quantize(w: torch.Tensor, *, bits: int, granularity="channel", symmetric: bool = True) -> torch.Tensor:
    """``quantize_rtn(w, ...).dequantize()`` in ``w``'s dtype: the weights the quantized model computes with."""
    return quantize_rtn(w, bits=bits, granularity=granularity, symmetric=symmetric).dequantize().to(w.dtype)


def rtn_bits_per_weight(bits: int, granularity, shape, *, symmetric: bool = True) -> float:
    """Bits per weight of :func:`quantize_rtn` on a tensor of ``shape``, without quantizing anything."""
    bits = _check_scheme(bits, granularity, symmetric)
    shape = tuple(int(s) for s in shape)
    n = math.prod(shape)
    g = _group_size(granularity, shape)
    rows = 1 if granularity == "tensor" else n // shape[-1]
    n_groups = rows * math.ceil((n // rows) / g)
    return bits + _SCALE_BITS * n_groups * (1 if symmetric else 2) / n


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned ``codes`` (integers in [0, 2^bits)) into a 1-D uint8 tensor, ``bits`` per code.

    The codes are laid end to end in a little-endian bit stream: code i occupies bits
    ``i*bits .. i*bits + bits - 1``; the last byte is zero-padded. 4-bit codes land two per byte
    (code 2k in the low nibble), 8-bit codes one per byte.
    """
    check_tensor("codes", codes, integer=True)
    bits = check_int("bits", bits, low=1, high=8)
    flat = codes.reshape(-1).to(torch.int64)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 2 ** bits):
        raise ValueError(f"codes must lie in [0, {2 ** bits - 1}] for bits={bits}, got values in "
                         f"[{int(flat.min())}, {int(flat.max())}]")
    stream = ((flat[:, None] >> torch.arange(bits, device=flat.device)) & 1).reshape(-1)
    stream = torch.cat([stream, stream.new_zeros(-stream.numel() % 8)]).reshape(-1, 8)
    return (stream << torch.arange(8, device=flat.device)).sum(-1).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The first ``count`` codes of a :func:`pack_bits` stream, as int64."""
    check_tensor("packed", packed, dim=1)
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed must be a uint8 tensor (from pack_bits), got dtype {packed.dtype}")
    bits = check_int("bits", bits, low=1, high=8)
    count = check_int("count", count, low=0, high=packed.numel() * 8 // bits)
    stream = ((packed.to(torch.int64)[:, None] >> torch.arange(8, device=packed.device)) & 1).reshape(-1)
    stream = stream[: count * bits].reshape(count, bits)
    return (stream << torch.arange(bits, device=packed.device)).sum(-1)
