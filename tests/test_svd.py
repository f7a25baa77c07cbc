"""llmlab.svd: the thin SVD of images, Eckart–Young, W ≈ AB, and every bad input."""

import math

import numpy as np
import pytest
import skimage.data
import torch

from llmlab import svd
from conftest import requires_cuda


@pytest.fixture(scope="module")
def photos():
    """Small crops of real photos (fast), grey and colour, plus a non-square colour one."""
    return {
        "camera": skimage.data.camera()[::4, ::4],  # (128, 128) uint8
        "astronaut": skimage.data.astronaut()[::4, ::4],  # (128, 128, 3) uint8
        "coffee": skimage.data.coffee()[::4, ::4],  # (100, 150, 3) uint8
    }


def direct_relative_error(image01: np.ndarray, W_k: torch.Tensor) -> float:
    """‖W − W_k‖_F / ‖W‖_F computed from the pixels, in float64."""
    W = np.asarray(image01, dtype=np.float64)
    diff = W - W_k.double().cpu().numpy()
    return float(np.linalg.norm(diff.ravel()) / np.linalg.norm(W.ravel()))


def random_matrix(m, n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, n, generator=g, dtype=dtype)


# ------------------------------------------------------------------------------------------
# The factors
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["camera", "astronaut", "coffee"])
def test_singular_values_match_numpy(photos, name):
    img = photos[name]
    f = svd.factorize(img)
    W = img.astype(np.float32) / 255.0
    W = np.moveaxis(W, -1, 0) if W.ndim == 3 else W
    S_ref = np.linalg.svd(W.astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(f.S.double().numpy(), S_ref, rtol=1e-4, atol=1e-4 * S_ref.max())


def test_shapes_and_layout(photos):
    g = svd.factorize(photos["camera"])
    assert g.U.shape == (128, 128) and g.S.shape == (128,) and g.Vh.shape == (128, 128)
    assert g.shape == (128, 128) and g.channels is None and g.max_rank == 128
    c = svd.factorize(photos["coffee"])  # (100, 150, 3)
    assert c.U.shape == (3, 100, 100) and c.S.shape == (3, 100) and c.Vh.shape == (3, 100, 150)
    assert (c.height, c.width, c.channels, c.max_rank) == (100, 150, 3, 100)
    assert svd.reconstruct(g, 5).shape == (128, 128)
    assert svd.reconstruct(c, 5).shape == (100, 150, 3)
    assert svd.reconstruct(c, 5).dtype == torch.float32


def test_colour_is_one_svd_per_channel(photos):
    img = photos["astronaut"]
    f = svd.factorize(img)
    for c in range(3):
        one = svd.factorize(img[:, :, c])
        torch.testing.assert_close(f.S[c], one.S, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(svd.reconstruct(f, 7)[:, :, c], svd.reconstruct(one, 7), rtol=1e-4, atol=1e-4)


def test_singular_values_descending_and_nonnegative(photos):
    f = svd.factorize(photos["astronaut"])
    assert (f.S >= 0).all()
    assert (f.S[..., :-1] >= f.S[..., 1:]).all()


@pytest.mark.parametrize("m,n", [(40, 40), (60, 25), (25, 60)])
def test_U_and_V_are_orthonormal(m, n):
    W = random_matrix(m, n, seed=m + n)
    f = svd.factorize(W)
    r = min(m, n)
    eye = torch.eye(r, dtype=torch.float64)
    torch.testing.assert_close(f.U.T @ f.U, eye, atol=1e-10, rtol=0)  # UᵀU = I
    torch.testing.assert_close(f.Vh @ f.Vh.T, eye, atol=1e-10, rtol=0)  # VᵀV = I


def test_colour_factors_are_orthonormal(photos):
    f = svd.factorize(photos["coffee"])
    eye = torch.eye(f.max_rank).expand(3, -1, -1)
    torch.testing.assert_close(f.U.mT @ f.U, eye, atol=1e-4, rtol=0)
    torch.testing.assert_close(f.Vh @ f.Vh.mT, eye, atol=1e-4, rtol=0)


@pytest.mark.parametrize("r", [1, 3, 10])
def test_rank_r_matrix_has_exactly_r_nonzero_singular_values(r):
    m, n = 50, 40
    W = random_matrix(m, r, seed=r) @ random_matrix(r, n, seed=100 + r)
    S = svd.factorize(W).S
    tol = S[0] * max(m, n) * torch.finfo(S.dtype).eps
    assert int((S > tol).sum()) == r
    assert S[r - 1] > 1e-3 * S[0]  # the r-th is clearly non-zero, the (r+1)-th is rounding noise
    assert int(torch.linalg.matrix_rank(W)) == r
    assert svd.relative_error(svd.factorize(W), r) < 1e-12


def test_full_rank_square_matrix():
    W = random_matrix(30, 30, seed=3)
    S = svd.factorize(W).S
    assert (S > 1e-6 * S[0]).all() and int(torch.linalg.matrix_rank(W)) == 30


# ------------------------------------------------------------------------------------------
# Reconstruction, Eckart–Young, energy
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["camera", "astronaut", "coffee"])
@pytest.mark.parametrize("k", [1, 5, 20, 60])
def test_eckart_young_on_photos(photos, name, k):
    img = photos[name]
    f = svd.factorize(img)
    W_k = svd.reconstruct(f, k)
    assert svd.relative_error(f, k) == pytest.approx(direct_relative_error(img / 255.0, W_k), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("m,n,k", [(30, 20, 1), (30, 20, 7), (20, 30, 19), (64, 64, 32)])
def test_eckart_young_on_random_matrices(m, n, k):
    W = random_matrix(m, n, seed=k)
    f = svd.factorize(W)
    err = svd.relative_error(f, k)
    assert err == pytest.approx(direct_relative_error(W.numpy(), svd.reconstruct(f, k)), rel=1e-9)
    # ... and no other rank-k matrix is closer: random rank-k competitors, and the truncation of
    # a slightly perturbed W, all do worse.
    for seed in range(5):
        X = random_matrix(m, k, seed=1000 + seed) @ random_matrix(k, n, seed=2000 + seed)
        P = X / X.norm() * W.norm()  # a random rank-k matrix of the same size
        A, B = svd.low_rank_factors(W + 0.05 * random_matrix(m, n, seed=3000 + seed), k)
        for competitor in (P, A @ B):
            assert direct_relative_error(W.numpy(), competitor) > err


def test_energy_and_error_are_complementary(photos):
    f = svd.factorize(photos["astronaut"])
    for k in (1, 10, 64, 128):
        assert svd.energy(f, k) + svd.relative_error(f, k) ** 2 == pytest.approx(1.0, abs=1e-9)
    energies = [svd.energy(f, k) for k in range(1, f.max_rank + 1)]
    assert all(a <= b + 1e-12 for a, b in zip(energies, energies[1:]))
    assert energies[-1] == pytest.approx(1.0) and svd.relative_error(f, f.max_rank) == pytest.approx(0.0, abs=1e-7)


def test_energy_counts_all_channels_together():
    # channel 0 is rank 1, channel 1 is zero, channel 2 is rank 2 with σ = (3, 4)
    img = torch.zeros(6, 5, 3, dtype=torch.float64)
    img[0, 0, 0] = 2.0
    img[1, 1, 2], img[2, 2, 2] = 4.0, 3.0
    f = svd.factorize(img)
    total = 4 + 16 + 9
    assert svd.energy(f, 1) == pytest.approx((4 + 16) / total)
    assert svd.relative_error(f, 1) == pytest.approx(math.sqrt(9 / total))
    assert svd.energy(f, 2) == pytest.approx(1.0)


def test_full_rank_reconstruction_gives_back_the_image(photos):
    img = photos["coffee"]
    f = svd.factorize(img)
    torch.testing.assert_close(svd.reconstruct(f, f.max_rank), torch.from_numpy(img / 255.0).float(), atol=2e-5, rtol=0)


def test_uint8_is_scaled_and_float_is_used_as_is(photos):
    img = photos["camera"]
    f8 = svd.factorize(img)
    f_float = svd.factorize(img.astype(np.float32) / 255.0)
    torch.testing.assert_close(f8.S, f_float.S)
    # float values are not rescaled: a 0..10 image keeps its range, and its σ are 10x larger
    f10 = svd.factorize(img.astype(np.float64) / 25.5)
    assert f10.S.dtype == torch.float64
    torch.testing.assert_close(f10.S.float(), 10 * f_float.S, rtol=1e-4, atol=1e-3)
    assert float(svd.reconstruct(f10, f10.max_rank).max()) == pytest.approx(img.max() / 25.5, rel=1e-6)


def test_reconstruction_is_not_clipped(photos):
    f = svd.factorize(photos["camera"])
    W_k = svd.reconstruct(f, 3)
    assert float(W_k.min()) < 0.0 or float(W_k.max()) > 1.0


def test_k_for_error(photos):
    f = svd.factorize(photos["astronaut"])
    for tol in (0.3, 0.1, 0.02):
        k = svd.k_for_error(f, tol)
        assert svd.relative_error(f, k) <= tol
        assert k == 1 or svd.relative_error(f, k - 1) > tol
    assert svd.k_for_error(f, 1.0) == 1


def test_zero_image():
    f = svd.factorize(np.zeros((8, 6), dtype=np.float32))
    assert svd.relative_error(f, 2) == 0.0 and svd.energy(f, 2) == 1.0 and svd.k_for_error(f, 0.1) == 1


# ------------------------------------------------------------------------------------------
# Compression and W ≈ A B
# ------------------------------------------------------------------------------------------


def test_compression_ratio():
    assert svd.compression_ratio(512, 512, 1) == pytest.approx(1025 / 512**2)
    assert svd.compression_ratio(400, 600, 20) == pytest.approx(20 * 1001 / 240000)
    # the factors beat the pixels exactly when k < m n / (m + n + 1)
    m, n = 100, 150
    k_star = m * n / (m + n + 1)
    for k in range(1, 101):
        assert (svd.compression_ratio(m, n, k) < 1) == (k < k_star)


@pytest.mark.parametrize("m,n,k", [(30, 20, 4), (20, 30, 20), (8, 8, 8)])
def test_low_rank_factors_product_equals_reconstruct(m, n, k):
    W = random_matrix(m, n, seed=m * n + k)
    A, B = svd.low_rank_factors(W, k)
    assert A.shape == (m, k) and B.shape == (k, n)
    torch.testing.assert_close(A @ B, svd.reconstruct(svd.factorize(W), k), atol=1e-10, rtol=0)
    torch.testing.assert_close(B @ B.T, torch.eye(k, dtype=W.dtype), atol=1e-10, rtol=0)  # B = V_kᵀ


def test_low_rank_factors_on_a_photo(photos):
    img = photos["camera"]
    A, B = svd.low_rank_factors(img.astype(np.float32) / 255.0, 12)
    torch.testing.assert_close(A @ B, svd.reconstruct(svd.factorize(img), 12), atol=1e-4, rtol=0)


def test_low_rank_factors_accept_integer_matrices():
    A, B = svd.low_rank_factors([[1, 2], [2, 4], [3, 6]], 1)  # rank 1: row i = i * (1, 2)
    torch.testing.assert_close(A @ B, torch.tensor([[1.0, 2], [2, 4], [3, 6]]), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------
# Devices
# ------------------------------------------------------------------------------------------


def test_device_argument_and_tensor_input(photos):
    t = torch.from_numpy(photos["astronaut"])
    f = svd.factorize(t, device="cpu")
    assert f.device.type == "cpu" and f.U.device.type == "cpu"
    torch.testing.assert_close(f.S, svd.factorize(photos["astronaut"]).S)


@requires_cuda
def test_cpu_and_cuda_agree(photos):
    for name in ("camera", "astronaut", "coffee"):
        img = photos[name]
        f_cpu = svd.factorize(img)
        f_gpu = svd.factorize(img, device="cuda")
        assert f_gpu.U.device.type == "cuda" and f_gpu.S.device.type == "cuda"
        torch.testing.assert_close(f_gpu.S.cpu(), f_cpu.S, rtol=1e-4, atol=1e-4)
        for k in (1, 10, 50):
            torch.testing.assert_close(svd.reconstruct(f_gpu, k).cpu(), svd.reconstruct(f_cpu, k), atol=1e-3, rtol=0)
            assert svd.relative_error(f_gpu, k) == pytest.approx(svd.relative_error(f_cpu, k), abs=1e-5)
    # a tensor already on the GPU stays there
    f = svd.factorize(torch.from_numpy(photos["camera"]).cuda())
    assert f.device.type == "cuda" and svd.reconstruct(f, 3).device.type == "cuda"
    A, B = svd.low_rank_factors(torch.randn(20, 10, device="cuda"), 3)
    assert A.device.type == "cuda" and B.device.type == "cuda"


# ------------------------------------------------------------------------------------------
# Bad input: one clear error naming the argument and the allowed range
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, -1, 129, 1000])
def test_k_out_of_range(photos, k):
    f = svd.factorize(photos["camera"])
    for fn in (svd.reconstruct, svd.relative_error, svd.energy):
        with pytest.raises(ValueError, match=r"k must be an int in \[1, 128\]"):
            fn(f, k)


@pytest.mark.parametrize("k", [2.5, 3.0, "3", None, True, torch.tensor(2.0)])
def test_k_not_an_integer(photos, k):
    f = svd.factorize(photos["camera"])
    for fn in (svd.reconstruct, svd.relative_error, svd.energy):
        with pytest.raises(TypeError, match=r"k must be an int in \[1, 128\]"):
            fn(f, k)


def test_k_numpy_and_tensor_integers_are_fine(photos):
    f = svd.factorize(photos["camera"])
    assert svd.relative_error(f, np.int64(5)) == svd.relative_error(f, torch.tensor(5)) == svd.relative_error(f, 5)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 3, 3), ()])
def test_image_not_2d_or_3d(shape):
    with pytest.raises(ValueError, match=r"image must be 2-D \(H, W\) or 3-D \(H, W, C\)"):
        svd.factorize(np.zeros(shape, dtype=np.float32))


def test_image_channels_first_or_empty():
    with pytest.raises(ValueError, match=r"channels-last \(H, W, C\) with C in 1\.\.4"):
        svd.factorize(np.zeros((3, 32, 32), dtype=np.float32))
    with pytest.raises(ValueError, match="height and width must be >= 1"):
        svd.factorize(np.zeros((0, 4), dtype=np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_image_with_nan_or_inf(bad):
    img = np.ones((8, 8, 3), dtype=np.float32)
    img[2, 3, 1] = bad
    with pytest.raises(ValueError, match="image must be finite"):
        svd.factorize(img)
    W = np.ones((4, 4))
    W[0, 0] = bad
    with pytest.raises(ValueError, match="W must be finite"):
        svd.low_rank_factors(W, 1)


@pytest.mark.parametrize("img", [np.zeros((4, 4), dtype=np.int64), np.zeros((4, 4), dtype=bool), np.array([["a", "b"]])])
def test_image_wrong_dtype(img):
    with pytest.raises(TypeError, match="image must be"):
        svd.factorize(img)


def test_compression_ratio_bad_input():
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 100\]"):
        svd.compression_ratio(100, 150, 101)
    with pytest.raises(TypeError, match=r"k must be an int in \[1, 100\]"):
        svd.compression_ratio(100, 150, 1.5)
    with pytest.raises(ValueError, match="height must be an int >= 1"):
        svd.compression_ratio(0, 150, 1)
    with pytest.raises(TypeError, match="width must be an int >= 1"):
        svd.compression_ratio(100, 2.5, 1)


def test_low_rank_factors_bad_input():
    with pytest.raises(ValueError, match=r"W must be a 2-D matrix \(m, n\)"):
        svd.low_rank_factors(np.zeros((2, 3, 4)), 1)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 3\]"):
        svd.low_rank_factors(np.ones((3, 5)), 4)
    with pytest.raises(TypeError, match=r"k must be an int in \[1, 3\]"):
        svd.low_rank_factors(np.ones((3, 5)), 0.5)


def test_k_for_error_bad_input(photos):
    f = svd.factorize(photos["camera"])
    for bad in (0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"max_error must be a (finite )?number in \(0, 1\]"):
            svd.k_for_error(f, bad)
    for bad in ("0.1", None, True):
        with pytest.raises(TypeError, match="max_error must be a number"):
            svd.k_for_error(f, bad)


def test_made_in_code_images_are_bounded():
    with pytest.raises(ValueError, match="angle must be a finite number"):
        svd.checkerboard(64, 8, angle=float("nan"))
    with pytest.raises(ValueError, match="size must be an int in"):
        svd.checkerboard(svd.MAX_SIDE + 1)
    with pytest.raises(TypeError, match="seed must be an int"):
        svd.demo_images(8, seed=1.5)


# ------------------------------------------------------------------------------------------
# Test images
# ------------------------------------------------------------------------------------------


def test_demo_images():
    ims = svd.demo_images(64)
    assert set(ims) >= {"camera", "astronaut", "coffee", "checkerboard", "rotated checkerboard", "noise"}
    assert ims["camera"].shape == (64, 64) and ims["astronaut"].shape == (64, 64, 3)
    assert ims["coffee"].shape == (64, 96, 3) and ims["noise"].shape == (64, 64, 3)
    for name, img in ims.items():
        assert img.dtype == np.float32 and 0.0 <= img.min() and img.max() <= 1.0, name
    np.testing.assert_array_equal(svd.demo_images(64)["noise"], ims["noise"])  # seeded
    assert svd.demo_images(None)["astronaut"].shape == (512, 512, 3)
    big = svd.demo_images(512)  # coffee is 400 x 600: kept, not upsampled to a rank-deficient 512 x 768
    assert big["coffee"].shape == (400, 600, 3) and big["camera"].shape == (512, 512)
    red = torch.as_tensor(big["coffee"][:, :, 0])
    assert int(torch.linalg.matrix_rank(red)) == 400


def test_aligned_checkerboard_is_rank_2_but_rotated_is_not():
    board = svd.checkerboard(128, 8)
    S = svd.factorize(board).S
    assert int((S > 1e-4 * S[0]).sum()) == 2
    rotated = svd.factorize(svd.checkerboard(128, 8, angle=30.0))
    assert svd.k_for_error(rotated, 0.1) > 20


def test_noise_needs_far_more_singular_values_than_a_photo(photos):
    k_photo = svd.k_for_error(svd.factorize(photos["astronaut"]), 0.1)
    k_noise = svd.k_for_error(svd.factorize(svd._noise_image(128, 128, channels=3, seed=0)), 0.1)
    assert k_noise >= 2.5 * k_photo and k_noise > 128 // 2


def test_colour_is_factorized_in_one_batched_call(photos, monkeypatch):
    calls = []
    real_svd = torch.linalg.svd

    def counting_svd(A, *args, **kwargs):
        calls.append(tuple(A.shape))
        return real_svd(A, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "svd", counting_svd)
    svd.factorize(photos["coffee"])
    assert calls == [(3, 100, 150)]


# ------------------------------------------------------------------------------------------
# The spectrum of noise: Marchenko–Pastur (quarter circle when square)
# ------------------------------------------------------------------------------------------


def test_noise_singular_values_follow_the_quarter_circle_closed_form():
    # Square: s = σ / (std √n) has CDF F(s) = (s √(4 − s²) / 2 + 2 asin(s / 2)) / π on [0, 2],
    # and σ_i is the quantile of level 1 − (i − ½)/n.
    n, std = 100, 0.5
    s = svd.noise_singular_values(n, n, std).double() / (std * math.sqrt(n))
    cdf = (s * torch.sqrt(4 - s**2) / 2 + 2 * torch.asin(s / 2)) / math.pi
    levels = 1 - (torch.arange(1, n + 1, dtype=torch.float64) - 0.5) / n
    torch.testing.assert_close(cdf, levels, atol=1e-5, rtol=0)
    assert torch.all(s[:-1] > s[1:]) and s[0] < 2 and s[-1] > 0


@pytest.mark.parametrize("m,n", [(256, 256), (128, 512), (300, 200)])
@pytest.mark.parametrize("kind", ["gaussian", "centred uniform"])
def test_noise_singular_values_match_random_matrices(m, n, kind):
    g = torch.Generator().manual_seed(m + n)
    if kind == "gaussian":
        W, std = 0.3 * torch.randn(m, n, generator=g, dtype=torch.float64), 0.3
    else:
        W, std = torch.rand(m, n, generator=g, dtype=torch.float64) - 0.5, 1 / math.sqrt(12)
    measured = torch.from_numpy(np.linalg.svd(W.numpy(), compute_uv=False)).float()
    predicted = svd.noise_singular_values(m, n, std)
    assert predicted.shape == (min(m, n),)
    assert (measured - predicted).abs().max() < 0.03 * measured[0]
    # near the edges of the Marchenko–Pastur law, std (√n ± √m) for m ≤ n (the outermost quantiles
    # sit just inside them)
    lo, hi = sorted((m, n))
    assert predicted[0] == pytest.approx(std * (math.sqrt(hi) + math.sqrt(lo)), rel=0.02)
    assert predicted[-1] == pytest.approx(std * (math.sqrt(hi) - math.sqrt(lo)), abs=0.02 * float(predicted[0]))


def test_a_noise_image_is_its_mean_plus_a_quarter_circle(photos):
    img = svd._noise_image(128, 128, channels=1, seed=0)[:, :, 0]  # uniform [0, 1): mean 1/2, std 1/√12
    S = svd.factorize(img).S
    predicted = svd.noise_singular_values(128, 128, 1 / math.sqrt(12))
    assert S[0] == pytest.approx(0.5 * 128, rel=0.02)  # the constant image 1/2 has σ = ½ √(mn)
    assert (S[1:] - predicted[:-1]).abs().max() < 0.05 * S[1]


def test_noise_singular_values_bad_input():
    with pytest.raises(ValueError, match="m"):
        svd.noise_singular_values(0, 5)
    with pytest.raises(ValueError, match="std"):
        svd.noise_singular_values(5, 5, std=-1.0)
    with pytest.raises(TypeError, match="n"):
        svd.noise_singular_values(5, 2.5)
    assert torch.all(svd.noise_singular_values(3, 4, std=0.0) == 0)
