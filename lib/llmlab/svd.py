"""Matrix rank, the SVD and truncated-SVD images (topic 6).

An image (or any matrix) W of shape (m, n) factors as W = U Σ Vᵀ: U (m, r) and V (n, r) have
orthonormal columns and Σ = diag(σ₁ ≥ σ₂ ≥ … ≥ σ_r ≥ 0), r = min(m, n). Keeping the k largest
singular values gives the rank-k image

    W_k = U_k Σ_k V_kᵀ = Σ_{i ≤ k} σᵢ uᵢ vᵢᵀ,

and by Eckart–Young no rank-k matrix is closer: ‖W − W_k‖_F² = Σ_{i > k} σᵢ².

:func:`factorize` computes the SVD once (colour channels as one batched
``torch.linalg.svd``, so it runs on the GPU when the image is there); :func:`reconstruct`,
:func:`relative_error`, :func:`energy` and :func:`k_for_error` are then cheap.
:func:`low_rank_factors` gives the W ≈ A B split that LoRA (topic 7) builds on.
:func:`noise_singular_values` predicts the spectrum of a random matrix (Marchenko–Pastur; the
quarter-circle law for a square one): what "noise has a flat spectrum" really means.
:func:`demo_images` returns the photos and the made-in-code test patterns the notebook uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ._checks import check_float, check_int
from ._torch import resolve_device

__all__ = [
    "SVDFactors",
    "factorize",
    "reconstruct",
    "relative_error",
    "energy",
    "k_for_error",
    "compression_ratio",
    "low_rank_factors",
    "noise_singular_values",
    "checkerboard",
    "demo_images",
]

_MAX_CHANNELS = 4  # (H, W, C) with C in 1..4: grey+alpha, RGB, RGBA
#: The largest side of an image made in code (a 4096 x 4096 x 3 float32 image is 200 MB).
MAX_SIDE = 4096


@dataclass(frozen=True)
class SVDFactors:
    """The thin SVD of an image, channel by channel.

    Grayscale (H, W): ``U`` (H, r), ``S`` (r,), ``Vh`` (r, W).
    Colour (H, W, C): ``U`` (C, H, r), ``S`` (C, r), ``Vh`` (C, r, W) — one SVD per channel,
    computed as one batch. r = min(H, W); singular values are in descending order.
    ``shape`` is the layout of the input image, which :func:`reconstruct` returns.
    """

    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor
    shape: tuple[int, ...]

    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def width(self) -> int:
        return self.shape[1]

    @property
    def channels(self) -> int | None:
        """Number of colour channels, or None for a grayscale (H, W) image."""
        return self.shape[2] if len(self.shape) == 3 else None

    @property
    def max_rank(self) -> int:
        """min(H, W): the largest k that :func:`reconstruct` accepts."""
        return min(self.shape[0], self.shape[1])

    @property
    def device(self) -> torch.device:
        return self.S.device


# ---------------------------------------------------------------------------------------------
# Validation at the public boundary
# ---------------------------------------------------------------------------------------------


def _check_factors(factors) -> "SVDFactors":
    if not isinstance(factors, SVDFactors):
        raise TypeError(f"factors must be the SVDFactors returned by factorize(), got {type(factors).__name__}")
    return factors


def _check_k(k, max_rank: int, name: str = "k") -> int:
    """k must be an integer in 1..max_rank (bool and float are refused, 3.0 included)."""
    return check_int(name, k, low=1, high=max_rank)


def _as_float_tensor(x, name: str, *, image: bool, device) -> torch.Tensor:
    """numpy / tensor / nested list -> a floating tensor (uint8 images scaled by 1/255)."""
    if isinstance(x, torch.Tensor):
        t = x
    else:
        arr = np.asarray(x)
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise TypeError(f"{name} must be a numeric numpy array or torch tensor, got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr)
        t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    if t.is_complex():
        raise TypeError(f"{name} must be real, got dtype {t.dtype}")
    if device is not None:
        t = t.to(resolve_device(device))
    if t.dtype == torch.uint8 and image:
        return t.to(torch.float32) / 255.0  # 0..255 -> 0..1
    if t.dtype == torch.bool or (not t.is_floating_point() and image):
        raise TypeError(f"{name} must be uint8 (0..255) or floating point, got dtype {t.dtype}")
    if not t.is_floating_point():
        return t.to(torch.get_default_dtype())
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.to(torch.float32)  # linalg.svd has no half-precision kernels
    return t


def _check_finite(t: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite: it contains NaN or inf values")


# ---------------------------------------------------------------------------------------------
# The SVD of an image and what follows from its singular values
# ---------------------------------------------------------------------------------------------


def factorize(image, *, device=None) -> SVDFactors:
    """The thin SVD W = U Σ Vᵀ of a grayscale (H, W) or colour (H, W, C) image.

    ``image``: numpy array or torch tensor; uint8 values are divided by 255, float values are
    used as they are (no min/max rescaling: that would add a rank-one offset). Colour channels
    are moved to the front, (C, H, W), and factorized with ONE batched ``torch.linalg.svd``.
    ``device``: where to compute (default: the tensor's own device, the CPU for numpy input).
    """
    W = _as_float_tensor(image, "image", image=True, device=device)
    if W.ndim not in (2, 3):
        raise ValueError(f"image must be 2-D (H, W) or 3-D (H, W, C), got {W.ndim}-D with shape {tuple(W.shape)}")
    if W.shape[0] < 1 or W.shape[1] < 1:
        raise ValueError(f"image height and width must be >= 1, got shape {tuple(W.shape)}")
    if W.ndim == 3 and not 1 <= W.shape[2] <= _MAX_CHANNELS:  # (C, H, W)? use image.permute(1, 2, 0)
        raise ValueError(f"image must be channels-last (H, W, C) with C in 1..{_MAX_CHANNELS}, got shape {tuple(W.shape)}")
    _check_finite(W, "image")
    shape = tuple(W.shape)
    if W.ndim == 3:
        W = W.permute(2, 0, 1)  # (C, H, W): a batch of C matrices
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    return SVDFactors(U=U, S=S, Vh=Vh, shape=shape)


def reconstruct(factors: SVDFactors, k: int) -> torch.Tensor:
    """The rank-k image W_k = U_k Σ_k V_kᵀ in the input's layout, (H, W) or (H, W, C).

    Float, on the factors' device, not clipped (a rank-k image can leave [0, 1]).
    """
    k = _check_k(k, _check_factors(factors).max_rank)
    U_k = factors.U[..., :, :k]
    sigma_k = factors.S[..., :k]
    Vh_k = factors.Vh[..., :k, :]
    W_k = (U_k * sigma_k.unsqueeze(-2)) @ Vh_k  # scale the columns of U_k by σ, then (H, k) @ (k, W)
    if len(factors.shape) == 3:
        W_k = W_k.permute(1, 2, 0)  # back to (H, W, C)
    return W_k


def _sigma_squared(factors: SVDFactors) -> torch.Tensor:
    """σᵢ² as float64, shape (r,) or (C, r): sums of many squares need the extra precision."""
    return factors.S.to(torch.float64) ** 2


def relative_error(factors: SVDFactors, k: int) -> float:
    """‖W − W_k‖_F / ‖W‖_F from the singular values alone (Eckart–Young), all channels together:

        sqrt( Σ_c Σ_{i > k} σ_{c,i}²  /  Σ_c Σ_i σ_{c,i}² ).   (0 for an all-zero image.)
    """
    k = _check_k(k, _check_factors(factors).max_rank)
    s2 = _sigma_squared(factors)
    total = float(s2.sum())
    if total == 0.0:
        return 0.0
    tail = float(s2[..., k:].sum())  # summed directly, not 1 - energy, to avoid cancellation
    return math.sqrt(tail / total)


def energy(factors: SVDFactors, k: int) -> float:
    """Fraction of the energy Σσᵢ² kept by the top k singular values (all channels together).

    energy(k) = 1 − relative_error(k)²; 1 for an all-zero image.
    """
    k = _check_k(k, _check_factors(factors).max_rank)
    s2 = _sigma_squared(factors)
    total = float(s2.sum())
    if total == 0.0:
        return 1.0
    return float(s2[..., :k].sum()) / total


def k_for_error(factors: SVDFactors, max_error: float) -> int:
    """The smallest k whose :func:`relative_error` is <= ``max_error`` (in (0, 1])."""
    _check_factors(factors)
    max_error = check_float("max_error", max_error, low=0.0, high=1.0, low_open=True)
    s2 = _sigma_squared(factors)
    per_rank = s2.sum(0) if s2.ndim == 2 else s2  # Σ_c σ_{c,i}², shape (r,)
    total = float(per_rank.sum())
    if total == 0.0:
        return 1
    # tail[k-1] = Σ_{i > k} σᵢ²  for k = 1..r, as a reversed cumulative sum
    tail = torch.flip(torch.cumsum(torch.flip(per_rank, [0]), 0), [0])[1:]
    tail = torch.cat([tail, tail.new_zeros(1)])
    ok = (tail / total).sqrt() <= max_error
    return int(torch.nonzero(ok)[0, 0]) + 1


def compression_ratio(height: int, width: int, k: int) -> float:
    """Numbers stored by the rank-k factors over the pixels, per channel: k(m + n + 1) / (m n).

    U_k holds m·k numbers, V_k n·k and Σ_k k. Below 1 the factors are smaller than the image,
    which needs k < m n / (m + n + 1) (about n/2 for a square n x n image).
    """
    for name, value in (("height", height), ("width", width)):
        check_int(name, value, low=1)
    m, n = int(height), int(width)
    k = _check_k(k, min(m, n))
    return k * (m + n + 1) / (m * n)


def low_rank_factors(W, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a 2-D matrix W (m, n) into A = U_k Σ_k (m, k) and B = V_kᵀ (k, n).

    A @ B is the rank-k truncation W_k; storing A and B takes k(m + n) numbers instead of m n.
    W is used as it is (integers become floats; no 1/255 scaling: it is a matrix, not an image).
    """
    W = _as_float_tensor(W, "W", image=False, device=None)
    if W.ndim != 2:
        raise ValueError(f"W must be a 2-D matrix (m, n), got {W.ndim}-D with shape {tuple(W.shape)}")
    if W.shape[0] < 1 or W.shape[1] < 1:
        raise ValueError(f"W must have m, n >= 1, got shape {tuple(W.shape)}")
    k = _check_k(k, min(W.shape))
    _check_finite(W, "W")
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    A = U[:, :k] * S[:k]  # (m, k): column i of U scaled by σᵢ
    B = Vh[:k, :]  # (k, n)
    return A, B


def noise_singular_values(m: int, n: int, std: float = 1.0) -> torch.Tensor:
    """The singular values of an m×n matrix of independent zero-mean entries with standard
    deviation ``std``, as random-matrix theory predicts them: ``min(m, n)`` values, descending.

    With m ≤ n, the eigenvalues x = σ²/(std² n) of W Wᵀ/(std² n) follow the Marchenko–Pastur
    law with ratio λ = m/n: density √((b − x)(x − a)) / (2π λ x) on [a, b] = [(1 − √λ)², (1 + √λ)²].
    For a square matrix (λ = 1) that makes s = σ/(std √n) follow the **quarter-circle law**,
    density √(4 − s²)/π on [0, 2]: the spectrum is not flat, it falls from 2·std·√n to zero, most
    steeply over the last indices. σᵢ is the quantile of level 1 − (i − ½)/min(m, n) (exact as
    m, n → ∞; a few per cent off at a few hundred). A non-zero mean adds one large σ₁ on top.
    """
    m, n = check_int("m", m, low=1), check_int("n", n, low=1)
    std = check_float("std", std, low=0)
    if min(m, n) > 10**7:
        raise ValueError(f"min(m, n) must be at most 10,000,000 (one singular value each), got m={m}, n={n}")
    m, n = min(m, n), max(m, n)
    lam = m / n
    a, b = (1 - math.sqrt(lam)) ** 2, (1 + math.sqrt(lam)) ** 2
    # Integrate the density in s = √x (smooth at the hard edge a = 0 of the square case).
    s = np.linspace(math.sqrt(a), math.sqrt(b), 200_001)
    x = s**2
    with np.errstate(divide="ignore", invalid="ignore"):
        density_x = np.sqrt(np.clip((b - x) * (x - a), 0, None)) / (2 * math.pi * lam * x)
    density_s = np.nan_to_num(2 * s * density_x)  # p(s) = 2 s p(x)
    cdf = np.concatenate([[0.0], np.cumsum((density_s[1:] + density_s[:-1]) / 2 * np.diff(s))])
    cdf /= cdf[-1]
    levels = 1 - (np.arange(1, m + 1) - 0.5) / m  # descending
    return torch.from_numpy(np.interp(levels, cdf, s) * std * math.sqrt(n)).float()


# ---------------------------------------------------------------------------------------------
# Test images: photos from scikit-image (shipped with it, no download) and patterns made in code
# ---------------------------------------------------------------------------------------------


def checkerboard(size: int = 512, square: int = 16, *, angle: float = 0.0) -> np.ndarray:
    """A (size, size) float32 0/1 checkerboard with ``square``-pixel squares, rotated by ``angle`` degrees.

    Aligned with the axes (angle 0) it is a matrix of rank 2, however sharp its edges; rotated,
    its pattern no longer splits into rows times columns and the rank shoots up.
    """
    size = check_int("size", size, low=2, high=MAX_SIDE)
    square = check_int("square", square, low=1, high=size)
    angle = check_float("angle", angle)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    theta = math.radians(angle)
    u = x * math.cos(theta) + y * math.sin(theta)
    v = -x * math.sin(theta) + y * math.cos(theta)
    return ((np.floor(u / square) + np.floor(v / square)) % 2).astype(np.float32)


def _noise_image(height: int, width: int, *, channels: int, seed: int) -> np.ndarray:
    """Uniform [0, 1) noise of shape (height, width, channels), float32, from a seeded generator
    (:func:`demo_images`' noise, with the size and seed it checked)."""
    rng = np.random.default_rng(seed)
    return rng.random((height, width, channels), dtype=np.float32)


def demo_images(size: int | None = 512, *, seed: int = 0) -> dict[str, np.ndarray]:
    """The images of the notebook and widget, float32 in [0, 1], offline.

    camera (grey), astronaut (RGB) and coffee (RGB, 400 x 600) from ``skimage.data``, plus an
    axis-aligned checkerboard, a rotated checkerboard and uniform colour noise made in code.
    ``size``: height in pixels; a photo taller than that is shrunk to it keeping its aspect ratio, one
    that is not (coffee at 512) keeps its native size: upsampling would add pixels but no rank (a 400-row
    photo resized to 512 rows has rank at most 400). None keeps every photo at its native size.
    """
    # scikit-image takes a second to import and only this function needs it.
    import skimage.data
    from skimage.transform import resize

    if size is not None:
        size = check_int("size", size, low=8, high=MAX_SIDE)
    seed = check_int("seed", seed, low=0)

    def photo(img: np.ndarray) -> np.ndarray:
        out = img.astype(np.float32) / 255.0
        if size is not None and img.shape[0] > size:
            new_shape = (size, round(img.shape[1] * size / img.shape[0])) + img.shape[2:]
            out = resize(out, new_shape, anti_aliasing=True, preserve_range=True).astype(np.float32)
        return out

    side = 512 if size is None else int(size)
    square = max(2, side // 32)
    return {
        "camera": photo(skimage.data.camera()),
        "astronaut": photo(skimage.data.astronaut()),
        "coffee": photo(skimage.data.coffee()),
        "checkerboard": checkerboard(side, square, angle=0.0),
        "rotated checkerboard": checkerboard(side, square, angle=30.0),
        "noise": _noise_image(side, side, channels=3, seed=seed),
    }
