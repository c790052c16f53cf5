"""The B-mode simulator: speckle statistics, contrast, clean references, regions, determinism."""
from __future__ import annotations

import numpy as np
import pytest

from speckle2self.bench import simulate as sim
from speckle2self.errors import UserError

RAYLEIGH_SNR = np.sqrt(np.pi / (4 - np.pi))  # 1.913


def decibels(display: np.ndarray, setting: str) -> np.ndarray:
    return 10 * np.log10(sim.to_intensity(display, setting))


def disc_map(contrast_db: float, size: int = 256, radius: float = 70):
    """A centred disc of the given contrast on background tissue, with its interior and a background region
    beside it in the same depth band, both a resolution cell away from the disc's boundary."""
    y, x = np.mgrid[:size, :size] - size / 2
    distance = np.hypot(y, x)
    echogenicity = np.where(distance <= radius, 10 ** (contrast_db / 10), 1.0)
    margin = 17  # the widest lateral FWHM of S-I over 256 rows, in pixels
    inside = distance <= radius - margin
    outside = (np.abs(y) <= radius - margin) & (distance >= radius + margin) & (distance <= 2 * radius)
    return echogenicity, inside, outside


@pytest.fixture(scope="module")
def images() -> dict[tuple[str, str], sim.Simulated]:
    return {(s, p): sim.simulate(s, p, 256, seed=3) for s in sim.SETTINGS for p in sim.PHANTOMS}


def test_api_names_and_errors():
    assert tuple(sim.SETTINGS) == ("S-I", "S-II", "S-III")
    assert sim.PHANTOMS == ("cyst", "layers", "vessel", "points")
    assert all(sim.SETTINGS[name].name == name for name in sim.SETTINGS)
    with pytest.raises(UserError, match="S-I, S-II, S-III"):
        sim.simulate("S-IV")
    with pytest.raises(UserError, match="cyst, layers, vessel, points"):
        sim.simulate("S-II", "kidney")
    with pytest.raises(UserError, match="size"):
        sim.simulate(size=16)


def test_resolution_cell_shrinks_with_frequency_and_the_beam_widens_away_from_focus():
    cells = [sim.SETTINGS[s].resolution_cell(256) for s in sim.SETTINGS]
    assert cells[0] > cells[1] > cells[2]
    setting = sim.SETTINGS["S-II"]
    focus_row = setting.focus_mm / setting.pixel_mm
    widths = setting.lateral_sigma_px(np.array([0, focus_row, 255]))
    assert widths[1] < widths[0] and widths[1] < widths[2]


def test_every_phantom_and_setting(images):
    for (setting, phantom), image in images.items():
        assert image.noisy.shape == image.clean.shape == image.echogenicity.shape == (256, 256)
        assert image.noisy.dtype == image.clean.dtype == np.float32
        assert 0 <= image.noisy.min() and image.noisy.max() <= 1 and 0 <= image.clean.min() and image.clean.max() <= 1
        assert np.array_equal(np.round(image.noisy * 255) / 255, image.noisy), "noisy is an 8-bit display image"
        for name in ("target", "background", "homogeneous", "edges"):
            assert image.regions[name].dtype == bool and image.regions[name].sum() >= 40, (setting, phantom, name)
        assert not (image.regions["target"] & image.regions["background"]).any()
        assert (setting, phantom, image.seed) == (image.setting, image.phantom, 3)


def test_one_seed_gives_one_map_in_every_setting(images):
    for phantom in sim.PHANTOMS:
        assert np.array_equal(images["S-I", phantom].echogenicity, images["S-III", phantom].echogenicity)


def test_deterministic_in_the_seed():
    first, again = sim.simulate("S-III", "vessel", 128, seed=5), sim.simulate("S-III", "vessel", 128, seed=5)
    other = sim.simulate("S-III", "vessel", 128, seed=6)
    for field in ("noisy", "clean", "echogenicity"):
        assert np.array_equal(getattr(first, field), getattr(again, field))
        assert not np.array_equal(getattr(first, field), getattr(other, field))


@pytest.mark.parametrize("setting", list(sim.SETTINGS))
def test_envelope_of_homogeneous_tissue_is_fully_developed_speckle(setting):
    values = [sim.envelope(np.ones((512, 512)), setting, np.random.default_rng(seed)) for seed in range(3)]
    measured = np.mean([v.mean() / v.std() for v in values])
    assert measured == pytest.approx(RAYLEIGH_SNR, rel=0.05)
    assert np.mean([np.mean(v ** 2) for v in values]) == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("setting", list(sim.SETTINGS))
@pytest.mark.parametrize("contrast_db", [-6.0, 6.0])
def test_lesion_contrast_in_the_log_compressed_images(setting, contrast_db):
    echogenicity, inside, outside = disc_map(contrast_db)
    clean = decibels(sim.log_compress(sim.expected_intensity(echogenicity, setting), setting), setting)
    assert clean[inside].mean() - clean[outside].mean() == pytest.approx(contrast_db, abs=1.0)
    noisy = [sim.to_intensity(sim.b_mode(sim.envelope(echogenicity, setting, np.random.default_rng(seed)), setting),
                              setting) for seed in range(6)]
    measured = 10 * np.log10(np.mean([n[inside].mean() for n in noisy]) / np.mean([n[outside].mean() for n in noisy]))
    assert measured == pytest.approx(contrast_db, abs=1.0)


def test_phantom_regions_measure_the_map_contrast(images):
    for (setting, phantom), image in images.items():
        if phantom in ("cyst", "layers"):
            target, background = image.regions["target"], image.regions["background"]
            truth = 10 * np.log10(image.echogenicity[target].mean() / image.echogenicity[background].mean())
            clean = decibels(image.clean, setting)
            assert clean[target].mean() - clean[background].mean() == pytest.approx(truth, abs=1.0), (setting, phantom)


def test_clean_reference_is_smooth_and_in_the_noisy_domain(images):
    for (setting, phantom), image in images.items():
        region = image.regions["homogeneous"]
        assert image.clean[region].std() < image.noisy[region].std() / 3
        # same window: mean of the noisy log image = clean - 2.51 dB in fully developed speckle
        bias = decibels(image.clean, setting)[region].mean() - decibels(image.noisy, setting)[region].mean()
        assert bias == pytest.approx(sim.SPECKLE_LOG_BIAS_DB, abs=0.3), (setting, phantom)


def test_vessel_lumen_is_dark_and_points_are_bright(images):
    for setting in sim.SETTINGS:
        vessel, points = images[setting, "vessel"], images[setting, "points"]
        lumen = decibels(vessel.clean, setting)[vessel.regions["target"]]
        assert lumen.max() < decibels(vessel.clean, setting)[vessel.regions["background"]].mean() - 19.9  # or clipped
        assert points.clean[points.points].min() > points.clean[points.regions["background"]].max()


def test_realisation_is_new_speckle_of_the_same_map():
    image = sim.simulate("S-II", "cyst", 256, seed=1)
    first, again, other = sim.realisation(image, 0), sim.realisation(image, 0), sim.realisation(image, 1)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    region = image.regions["homogeneous"]
    assert abs(np.corrcoef(first[region], image.noisy[region])[0, 1]) < 0.1
    assert first[region].mean() == pytest.approx(image.noisy[region].mean(), abs=0.02)
    assert first.dtype == np.float32 and np.array_equal(np.round(first * 255) / 255, first)


def test_simulate_set_cycles_phantoms_with_distinct_seeds():
    images = sim.simulate_set("S-III", count=5, size=96, seed=10)
    assert [i.phantom for i in images] == ["cyst", "layers", "vessel", "points", "cyst"]
    assert [i.seed for i in images] == [10, 11, 12, 13, 14]
    assert not np.array_equal(images[0].noisy, images[4].noisy)
