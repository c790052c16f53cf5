"""Structure metrics: each detects what it claims (blur widens point targets, an injected grid raises the grid
score) and scores the clean reference 1.0."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from speckle2self.bench.simulate import SETTINGS, simulate, to_intensity
from speckle2self.bench.structure import MIN_GRID_SIDE, fwhm_ratio, grid_score, point_fwhm, point_radius
from speckle2self.errors import UserError


@pytest.fixture(scope="module", params=list(SETTINGS))
def points(request):
    """A points phantom of each setting: its clean reference and noisy image in intensity, and the point map."""
    image = simulate(request.param, "points", 256, seed=3)
    return (to_intensity(image.clean, image.setting), to_intensity(image.noisy, image.setting), image.points)


def lines(size: int, period: int = 16) -> np.ndarray:
    """A grid of one-pixel lines every `period` pixels, as periodic upsampling artefacts leave."""
    rows, cols = np.mgrid[:size, :size]
    return ((rows % period == 0) | (cols % period == 0)).astype(np.float32)


def test_the_clean_reference_has_fwhm_ratio_one_and_blur_raises_it(points):
    clean, _, where = points
    assert fwhm_ratio(clean, clean, where) == 1.0
    blurred = [fwhm_ratio(clean, ndimage.gaussian_filter(clean, sigma), where) for sigma in (1, 2, 3)]
    assert 1.05 < blurred[0] < blurred[1] < blurred[2]
    assert blurred[1] > 1.25  # a 2-pixel blur is outside the targets' range on every setting


def test_speckle_does_not_widen_point_targets_and_an_erased_point_scores_wide(points):
    clean, noisy, where = points
    assert 0.95 < fwhm_ratio(clean, noisy, where) < 1.05
    assert fwhm_ratio(clean, ndimage.median_filter(clean, 21), where) > 1.9  # the median filter removes points


def test_point_fwhm_of_a_gaussian_spot_is_its_fwhm():
    rows, cols = np.mgrid[:81, :81]
    spot = 1 + 100 * np.exp(-((rows - 40) ** 2 / (2 * 2.0 ** 2) + (cols - 40) ** 2 / (2 * 5.0 ** 2)))
    axial, lateral = point_fwhm(spot, (40, 40), 30)
    factor = 2 * np.sqrt(2 * np.log(2))  # FWHM of a Gaussian of sigma 1
    assert axial == pytest.approx(2.0 * factor, rel=0.03) and lateral == pytest.approx(5.0 * factor, rel=0.03)


def test_point_windows_need_two_points_and_images_one_shape():
    with pytest.raises(UserError, match="at least two point targets"):
        point_radius(np.array([[3, 4]]))
    where = np.zeros((64, 64), bool)
    where[20, 20] = where[40, 40] = True
    assert point_radius(np.argwhere(where)) == 14
    with pytest.raises(UserError, match="one shape"):
        fwhm_ratio(np.ones((64, 64)), np.ones((64, 65)), where)


def test_the_clean_reference_has_grid_score_one_and_an_injected_16_pixel_grid_raises_it():
    for setting in SETTINGS:
        image = simulate(setting, "cyst", 256, seed=1)
        assert grid_score(image.clean, image.clean) == 1.0
        assert grid_score(image.clean, np.clip(image.clean + 0.005 * lines(256), 0, 1)) > 100
        noisy = grid_score(image.clean, image.noisy)
        assert 0.5 < noisy < 2.0  # speckle has no periodic energy
        assert grid_score(image.clean, np.clip(image.noisy + 0.02 * lines(256), 0, 1)) > 5 * noisy
        assert grid_score(image.clean, ndimage.gaussian_filter(image.clean, 2)) < 1.5  # blur is not a grid


def test_the_grid_score_refuses_small_or_mismatched_images():
    with pytest.raises(UserError, match="too small"):
        grid_score(np.ones((MIN_GRID_SIDE - 1,) * 2), np.ones((MIN_GRID_SIDE - 1,) * 2))
    with pytest.raises(UserError, match="one shape"):
        grid_score(np.ones((128, 128)), np.ones((128, 160)))
