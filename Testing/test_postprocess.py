"""Output post-processing: log-speckle statistics, the log-bias inversion, masked smoothing and degridding."""
import numpy as np
import pytest

from speckle2self.postprocess import (LOG_SPECKLE, expected_display, log_bias_removed, smoothed,
                                      speckle_spread)
from speckle2self.simulate import SPECKLE_LOG_BIAS_DB

STD_DB = 10 / np.log(10) * np.pi / np.sqrt(6)
"""Standard deviation of 10 log10 of an exponential intensity (5.57 dB)."""


def _speckle_display(mean_db: np.ndarray, dynamic_range_db: float, rng) -> np.ndarray:
    """Uncorrelated fully developed speckle of mean intensity `mean_db`, displayed in a window [-D, 0] dB."""
    intensity = rng.exponential(10 ** (mean_db / 10))
    return np.clip(10 * np.log10(intensity) / dynamic_range_db + 1, 0, 1).astype(np.float32)


def test_log_speckle_nodes_have_the_exponential_log_statistics():
    assert abs(LOG_SPECKLE.std() - 1) < 0.01
    assert abs(LOG_SPECKLE.mean() * STD_DB + SPECKLE_LOG_BIAS_DB) < 0.02


def test_expected_display_is_biased_by_the_log_mean_and_pulled_in_by_the_clipping():
    spread = 0.1
    assert expected_display(np.array([0.5]), spread)[0] == pytest.approx(0.5 - 0.450 * spread, abs=2e-3)
    assert expected_display(np.array([-0.3]), spread)[0] == 0.0                 # far below black
    assert 0 < expected_display(np.array([0.05]), spread)[0] > 0.05 - 0.450 * spread  # clipped at black
    assert np.all(np.diff(expected_display(np.linspace(-0.2, 1.2, 50), spread)) >= 0)


@pytest.mark.parametrize("dynamic_range_db", [40.0, 60.0])
def test_log_bias_removal_recovers_the_display_of_the_mean_intensity(dynamic_range_db):
    rng = np.random.default_rng(4)
    levels_db = np.repeat([-30.0, -20.0, -10.0, -3.0], 64)[:, None] * np.ones((1, 256))  # four bands
    noisy = _speckle_display(levels_db, dynamic_range_db, rng)
    clean = np.clip(levels_db / dynamic_range_db + 1, 0, 1)
    band_means = np.repeat(noisy.reshape(4, 64, 256).mean(axis=(1, 2)), 64)[:, None] * np.ones((1, 256))
    estimate = band_means.astype(np.float32)   # an ideal despeckler: the mean displayed value of each band
    inside = np.ones(noisy.shape, bool)
    assert speckle_spread(estimate, noisy, inside) == pytest.approx(STD_DB / dynamic_range_db, rel=0.05)
    corrected = log_bias_removed(estimate, noisy, inside)
    visible = clean > 0.05
    assert np.abs(estimate - clean)[visible].max() > 2.0 / dynamic_range_db        # about 2.5 dB too dark
    assert np.abs(corrected - clean)[visible].max() < 0.3 / dynamic_range_db       # within 0.3 dB


def test_log_bias_removal_keeps_zeros_and_leaves_unmeasurable_frames_alone():
    rng = np.random.default_rng(5)
    noisy = _speckle_display(np.full((64, 64), -10.0), 50.0, rng)
    estimate = np.full_like(noisy, noisy.mean())
    estimate[:, :10] = 0.0
    assert np.all(log_bias_removed(estimate, noisy, np.ones(noisy.shape, bool))[:, :10] == 0)
    flat = np.full((64, 64), 0.5, np.float32)
    assert log_bias_removed(flat, flat, np.ones(flat.shape, bool)) is flat   # no speckle to measure
    few = estimate[:8, 20:28]   # 64 speckle pixels: too few to measure the spread on
    assert log_bias_removed(few, noisy[:8, 20:28], np.ones(few.shape, bool)) is few


def test_smoothing_stays_inside_the_sector():
    image = np.zeros((40, 40), np.float32)
    inside = np.zeros(image.shape, bool)
    inside[:, 20:] = True
    image[inside] = 0.6
    out = smoothed(image, inside, 2.0)
    np.testing.assert_allclose(out[inside], 0.6, atol=1e-6)   # no rim darkened by the outside zeros
    assert np.all(out[~inside] == 0)
    assert smoothed(image, inside, 0) is image


def test_degridding_removes_a_16_pixel_pattern_and_leaves_an_image_without_one_alone():
    from scipy import ndimage

    from speckle2self.postprocess import degridded

    rng = np.random.default_rng(5)
    image = ndimage.gaussian_filter(rng.normal(0.5, 0.2, (256, 192)), 3).astype(np.float32)
    image[100:160, 40:90] += 0.3  # an edge-bound structure: content at every frequency
    tile = rng.normal(0, 0.03, (16, 16)).astype(np.float32)
    grid = np.tile(tile - tile.mean(), (16, 12))
    assert np.abs(degridded(image + grid) - image).mean() < 0.2 * np.abs(grid).mean()  # 80 % of it gone
    assert np.abs(degridded(image) - image).mean() < 0.5 / 255  # under half an 8-bit grey level


def test_degridding_leaves_small_frames_alone_and_refuses_unpadded_ones():
    from speckle2self.postprocess import degridded

    small = np.random.default_rng(6).random((64, 256)).astype(np.float32)
    assert degridded(small) is small
    with pytest.raises(ValueError):
        degridded(np.zeros((250, 256), np.float32))
