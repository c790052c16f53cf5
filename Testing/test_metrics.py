"""Image-quality metrics: known values, invariances and errors."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from speckle2self.errors import UserError
from speckle2self.metrics import cnr, edge_beta, enl, gcnr, homogeneity, pratt_fom, psnr, snr, ssim

RAYLEIGH_SNR = np.sqrt(np.pi / (4 - np.pi))  # 1.913


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(7)


@pytest.fixture(scope="module")
def disc() -> np.ndarray:
    """A bright disc on a dark background, [0, 1] display domain, and its inside / outside masks."""
    y, x = np.mgrid[:96, :96]
    return (y - 48) ** 2 + (x - 48) ** 2 <= 20 ** 2


def speckled(clean: np.ndarray, rng, amount: float) -> np.ndarray:
    return np.clip(clean + amount * rng.standard_normal(clean.shape), 0, 1)


def test_ssim_and_psnr(disc, rng):
    clean = 0.2 + 0.6 * disc
    assert ssim(clean, clean) == pytest.approx(1.0)
    slightly, heavily = speckled(clean, rng, 0.05), speckled(clean, rng, 0.2)
    assert np.isfinite(psnr(clean, heavily)) and psnr(clean, slightly) > psnr(clean, heavily) + 10
    assert ssim(clean, slightly) > ssim(clean, heavily)


def test_homogeneity_of_a_constant_image_is_one():
    assert homogeneity(np.full((32, 32), 0.4)) == pytest.approx(1.0)


def test_gcnr_is_exactly_unchanged_by_monotonic_maps_of_quantised_data(disc, rng):
    noisy8 = np.round(speckled(0.3 + 0.3 * disc, rng, 0.15) * 255).astype(np.uint8)
    gamma = np.round(255 * (np.arange(256) / 255) ** 2.2).astype(np.uint16) + np.arange(256)  # strictly increasing
    value = gcnr(noisy8, disc, ~disc)
    assert 0.2 < value < 0.95
    assert gcnr(gamma[noisy8], disc, ~disc) == value
    assert gcnr(np.sqrt(noisy8 / 255.0), disc, ~disc) == value
    assert gcnr(255 - noisy8, disc, ~disc) == value


def test_gcnr_of_continuous_data_is_nearly_unchanged_by_a_monotonic_map(disc, rng):
    noisy = speckled(0.3 + 0.3 * disc, rng, 0.15)
    assert gcnr(np.sqrt(noisy), disc, ~disc) == pytest.approx(gcnr(noisy, disc, ~disc), abs=0.03)


def test_gcnr_extremes(rng):
    half = np.zeros((200, 200), bool)
    half[:, :100] = True
    apart = np.where(half, 0.8, 0.2) + 0.05 * rng.random(half.shape)
    assert gcnr(apart, half, ~half) == 1.0
    same = rng.random((1000, 1000))
    left = np.zeros(same.shape, bool)
    left[:, :500] = True
    assert gcnr(same, left, ~left) < 0.03  # the histogram estimate's small positive bias
    assert gcnr(np.ones(half.shape), half, ~half) == 0.0


def test_fully_developed_speckle_statistics(rng):
    envelope = rng.rayleigh(size=(1000, 1000))
    everywhere = np.ones(envelope.shape, bool)
    assert snr(envelope, everywhere) == pytest.approx(RAYLEIGH_SNR, rel=0.01)
    assert enl(envelope ** 2, everywhere) == pytest.approx(1.0, rel=0.02)


def test_cnr_is_invariant_to_sign_and_scale(disc, rng):
    noisy = speckled(0.3 + 0.3 * disc, rng, 0.15)
    value = cnr(noisy, disc, ~disc)
    assert value > 0.5
    assert cnr(-noisy, disc, ~disc) == pytest.approx(value)
    assert cnr(3 * noisy + 5, disc, ~disc) == pytest.approx(value)


def test_edge_beta(disc, rng):
    clean = 0.2 + 0.6 * disc
    assert edge_beta(clean, clean) == pytest.approx(1.0)
    blurred = ndimage.gaussian_filter(clean, 2.0)
    near_edges = ndimage.binary_dilation(disc ^ ndimage.binary_erosion(disc), iterations=3)
    assert edge_beta(clean, blurred) < 0.8
    assert edge_beta(clean, blurred, near_edges) < 0.8
    assert edge_beta(clean, ndimage.gaussian_filter(clean, 0.7)) > edge_beta(clean, blurred)


def test_pratt_fom(disc, rng):
    edges = disc ^ ndimage.binary_erosion(disc)
    clean = 0.2 + 0.6 * disc
    assert pratt_fom(edges, clean) > 0.8
    assert pratt_fom(edges, speckled(clean, rng, 0.3)) < pratt_fom(edges, clean)


def test_clear_errors_for_bad_masks_and_shapes(disc):
    image = np.zeros(disc.shape)
    with pytest.raises(UserError, match="empty"):
        gcnr(image, np.zeros(disc.shape, bool), disc)
    with pytest.raises(UserError, match="shape"):
        snr(image, disc[:10])
    with pytest.raises(UserError, match="shape"):
        psnr(image, image[:10])
    with pytest.raises(UserError, match="shape"):
        ssim(image, image.T[:, :5])


def test_region_homogeneity_counts_only_pairs_inside_the_region(rng):
    image = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    image[:, 40:] = 128  # flat on the right
    left, right = np.zeros(image.shape, bool), np.zeros(image.shape, bool)
    left[:, :40], right[:, 40:] = True, True
    assert homogeneity(image, np.ones(image.shape, bool)) == pytest.approx(homogeneity(image))
    assert homogeneity(image, left) == pytest.approx(homogeneity(image[:, :40]))
    assert homogeneity(image, right) == pytest.approx(1.0)
    assert homogeneity(image, right) > homogeneity(image) > homogeneity(image, left)
    line = np.zeros(image.shape, bool)
    line[10, :] = True  # no vertical or diagonal pairs
    with pytest.raises(UserError, match="no neighbouring pixel pairs"):
        homogeneity(image, line)
    with pytest.raises(UserError, match="mask must be a bool array"):
        homogeneity(image, left[:10])


def erf_edge(sigma: float, rng, noise: float = 0.0) -> np.ndarray:
    from scipy.special import ndtr

    x = np.arange(80)
    return 20 + 100 * ndtr((x - 37.3) / sigma) + noise * rng.standard_normal(x.size)


def test_edge_width_is_the_10_90_rise_of_the_edge(rng):
    from speckle2self.metrics import edge_width

    assert edge_width(erf_edge(3.0, rng)) == pytest.approx(2.5631 * 3.0, rel=1e-3)
    assert edge_width(erf_edge(3.0, rng, noise=5.0)) == pytest.approx(2.5631 * 3.0, rel=0.15)
    assert edge_width(erf_edge(3.0, rng), spacing=0.2) == pytest.approx(0.2 * 2.5631 * 3.0, rel=1e-3)
    assert edge_width(erf_edge(1.0, rng)) < edge_width(erf_edge(4.0, rng))
    assert edge_width(erf_edge(3.0, rng)[::-1]) == pytest.approx(2.5631 * 3.0, rel=1e-3)  # bright to dark
    for flat in (np.full(80, 50.0), *(50 + rng.standard_normal((20, 80)))):
        with pytest.raises(UserError, match="no edge"):
            edge_width(flat)
    with pytest.raises(UserError, match="at least 5 finite values"):
        edge_width([1.0, 2.0, 3.0])
