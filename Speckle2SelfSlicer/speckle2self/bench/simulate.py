"""Fast B-mode simulator for the benchmark: phantoms, fully developed speckle and clean references.

Model (linear quantities are intensities unless named envelope; depth runs down the rows):
- Tissue: an echogenicity map, the mean backscattered intensity per pixel (background tissue 1 = 0 dB).
- Scatterers: a circular complex Gaussian field whose variance is the echogenicity, the limit of many
  random scatterers per resolution cell (fully developed speckle: Rayleigh envelope, SNR 1.91).
  Point targets are single strong scatterers of fixed amplitude and random phase.
- Point-spread function, in IQ baseband form: a Gaussian pulse axially, from the centre frequency f0 and
  the -6 dB fractional bandwidth B (sigma_t = sqrt(2 ln 2) / (pi B f0), depth = c t / 2); a Gaussian beam
  laterally, FWHM = wavelength x F-number at the focus, widening away from it like a Gaussian beam,
  sqrt(1 + ((z - focus) / rayleigh)^2). Each output row is filtered with the beam of its own depth.
- B-mode: envelope |IQ|, log compression 10 log10(intensity) with 0 dB = background tissue, a display
  window [ceiling - dynamic range, ceiling] dB mapped to [0, 1], 8-bit quantisation.
- Clean reference: the expected intensity (echogenicity convolved with the PSF intensity |h|^2), in the same
  display window, not quantised. For fully developed speckle E[10 log10 I] = 10 log10 E[I] - 2.51 dB
  (SPECKLE_LOG_BIAS_DB): the mean of a noisy log image sits that far below the clean reference.

Settings (square pixels of 0.075 mm, so a 256-pixel image is 19.2 mm deep; c = 1540 m/s, F-number 2,
focus 9.6 mm, Rayleigh range 10 mm, display ceiling +20 dB):

| setting | f0      | bandwidth | axial FWHM | lateral FWHM (focus .. image ends at 256 px) | dynamic range |
|---------|---------|-----------|------------|-----------------------------------------------|---------------|
| S-I     | 3.5 MHz | 50 %      | 5.2 px     | 11.7 .. 16.3 px  (coarse speckle)             | 50 dB         |
| S-II    | 5.0 MHz | 60 %      | 3.0 px     |  8.2 .. 11.4 px  (medium)                     | 60 dB         |
| S-III   | 7.5 MHz | 70 %      | 1.7 px     |  5.5 ..  7.6 px  (fine)                       | 40 dB         |

The pixel size is fixed, so a larger image is a larger field of view. Phantom geometry is drawn from the
seed alone: one seed gives the same echogenicity map in every setting.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
from scipy import fft, ndimage

from ..errors import UserError

FWHM_PER_SIGMA = 2 * np.sqrt(2 * np.log(2))
SPECKLE_LOG_BIAS_DB = 10 * np.log10(np.e) * np.euler_gamma
"""How far the mean of 10 log10(I) lies below 10 log10 of the mean intensity in fully developed speckle."""
BACKGROUND = 1.0
"""Echogenicity of background tissue (0 dB)."""
LEVELS = 255
"""Top grey level of the 8-bit display."""
MIN_SIZE = 64


@dataclass(frozen=True)
class Setting:
    """One simulated imaging system. Lengths in mm, times in microseconds, sizes named _px in pixels."""
    name: str
    frequency_mhz: float
    bandwidth: float
    """-6 dB fractional bandwidth of the pulse-echo spectrum."""
    dynamic_range_db: float
    f_number: float = 2.0
    focus_mm: float = 9.6
    rayleigh_mm: float = 10.0
    """Distance from the focus at which the beam is sqrt(2) times wider."""
    ceiling_db: float = 20.0
    """Top of the display window, in dB above background tissue."""
    pixel_mm: float = 0.075
    sound_speed_mm_us: float = 1.54

    @property
    def wavelength_mm(self) -> float:
        return self.sound_speed_mm_us / self.frequency_mhz

    @property
    def axial_sigma_px(self) -> float:
        """Standard deviation of the Gaussian pulse envelope along depth."""
        sigma_us = np.sqrt(2 * np.log(2)) / (np.pi * self.bandwidth * self.frequency_mhz)
        return self.sound_speed_mm_us * sigma_us / 2 / self.pixel_mm

    @property
    def axial_fwhm_px(self) -> float:
        return FWHM_PER_SIGMA * self.axial_sigma_px

    def lateral_sigma_px(self, depth_px: np.ndarray | float) -> np.ndarray:
        """Standard deviation of the Gaussian beam profile at each depth (pixels from the top row)."""
        focus_sigma = self.wavelength_mm * self.f_number / FWHM_PER_SIGMA / self.pixel_mm
        distance = (np.asarray(depth_px, dtype=float) * self.pixel_mm - self.focus_mm) / self.rayleigh_mm
        return focus_sigma * np.sqrt(1 + distance ** 2)

    def resolution_cell(self, height_px: int) -> tuple[float, float]:
        """Axial FWHM and the widest lateral FWHM over an image of this height (pixels)."""
        lateral = self.lateral_sigma_px(np.array([0.0, height_px - 1.0])).max()
        return self.axial_fwhm_px, FWHM_PER_SIGMA * float(lateral)


SETTINGS: dict[str, Setting] = {
    "S-I": Setting("S-I", frequency_mhz=3.5, bandwidth=0.5, dynamic_range_db=50.0),
    "S-II": Setting("S-II", frequency_mhz=5.0, bandwidth=0.6, dynamic_range_db=60.0),
    "S-III": Setting("S-III", frequency_mhz=7.5, bandwidth=0.7, dynamic_range_db=40.0),
}
PHANTOMS: tuple[str, ...] = ("cyst", "layers", "vessel", "points")


@dataclass
class Simulated:
    """One simulated B-mode image with its clean reference and measurement regions."""
    noisy: np.ndarray
    """float32 (H, W) in [0, 1]: the 8-bit display image / 255."""
    clean: np.ndarray
    """float32 (H, W) in [0, 1]: expected intensity in the same display window, not quantised."""
    echogenicity: np.ndarray
    """float32 (H, W): the linear tissue map."""
    regions: dict[str, np.ndarray]
    """Bool masks: target (inside the lesion, lumen, layer or point targets), background (homogeneous speckle
    near the target), homogeneous (all background tissue at least a resolution cell from any boundary) and
    edges (boundaries of the echogenicity map)."""
    setting: str
    phantom: str
    seed: int
    points: np.ndarray
    """Bool (H, W): pixels holding point scatterers (fixed amplitude), needed for new realisations."""


class _Tissue(NamedTuple):
    echogenicity: np.ndarray
    target: np.ndarray
    background: np.ndarray
    """Where the background region may lie; simulate keeps its homogeneous part."""
    points: np.ndarray


# ---------------------------------------------------------------- settings and arguments

def get_setting(setting: str | Setting) -> Setting:
    """The Setting itself, or the one named (S-I, S-II, S-III)."""
    if isinstance(setting, Setting):
        return setting
    if setting not in SETTINGS:
        raise UserError(f"unknown simulation setting {setting!r}", f"use one of {', '.join(SETTINGS)}")
    return SETTINGS[setting]


def _shape(size: int | tuple[int, int]) -> tuple[int, int]:
    shape = (size, size) if np.isscalar(size) else tuple(size)
    if len(shape) != 2 or min(shape) < MIN_SIZE:
        raise UserError(f"simulated image size {size} is too small or not 2-D", f"use at least {MIN_SIZE} pixels")
    return int(shape[0]), int(shape[1])


# ---------------------------------------------------------------- physics

def _gaussian_kernels(sigmas: np.ndarray, length: int) -> np.ndarray:
    """Sampled Gaussians (one row per sigma) in circular order, each with unit energy (sum of squares 1)."""
    offsets = np.fft.fftfreq(length, 1 / length)
    kernels = np.exp(-0.5 * (offsets / np.asarray(sigmas)[:, None]) ** 2)
    return (kernels / np.sqrt((kernels ** 2).sum(axis=1, keepdims=True))).astype(np.float32)


def _system(setting: Setting, shape: tuple[int, int]):
    """Padding that keeps the circular convolution off the image, and the amplitude PSF on the padded grid:
    one axial kernel and one lateral kernel per padded row."""
    axial_pad = int(np.ceil(4 * setting.axial_sigma_px)) + 1
    depth = np.arange(-axial_pad, shape[0] + axial_pad)
    sigmas = setting.lateral_sigma_px(depth)
    lateral_pad = int(np.ceil(4 * sigmas.max())) + 1
    axial = _gaussian_kernels([setting.axial_sigma_px], depth.size)[0]
    lateral = _gaussian_kernels(sigmas, shape[1] + 2 * lateral_pad)
    return ((axial_pad, axial_pad), (lateral_pad, lateral_pad)), axial, lateral


def _convolve(values: np.ndarray, axial: np.ndarray, lateral: np.ndarray) -> np.ndarray:
    """Axial convolution, then each row's own lateral convolution (FFT, circular on the padded grid)."""
    along_depth = fft.ifft(fft.fft(values, axis=0) * fft.fft(axial)[:, None], axis=0)
    return fft.ifft(fft.fft(along_depth, axis=1) * fft.fft(lateral, axis=1), axis=1)


def _crop(padded: np.ndarray, pad) -> np.ndarray:
    (top, bottom), (left, right) = pad
    return padded[top:padded.shape[0] - bottom, left:padded.shape[1] - right]


def _map(echogenicity: np.ndarray) -> np.ndarray:
    echogenicity = np.asarray(echogenicity, dtype=np.float32)
    if echogenicity.ndim != 2 or (echogenicity < 0).any() or not np.isfinite(echogenicity).all():
        raise UserError("the echogenicity map must be a 2-D array of finite non-negative intensities")
    return echogenicity


def envelope(echogenicity: np.ndarray, setting: str | Setting, rng: np.random.Generator,
             points: np.ndarray | None = None) -> np.ndarray:
    """Linear envelope |IQ| of one speckle realisation; its mean square is expected_intensity(echogenicity).

    Pixels flagged in `points` hold one scatterer of fixed amplitude sqrt(echogenicity) and random phase.
    The map is extended at its borders (edge values), so speckle does not fade at the image edges.
    """
    setting = get_setting(setting)
    echogenicity = _map(echogenicity)
    pad, axial, lateral = _system(setting, echogenicity.shape)
    padded = np.pad(echogenicity, pad, mode="edge")
    gauss = rng.standard_normal((2, *padded.shape), dtype=np.float32)
    scatterers = np.sqrt(padded / 2) * (gauss[0] + 1j * gauss[1])
    if points is not None:
        point = np.pad(np.asarray(points, dtype=bool), pad)
        phases = rng.uniform(0, 2 * np.pi, int(point.sum()))
        scatterers[point] = np.sqrt(padded[point]) * np.exp(1j * phases)
    return _crop(np.abs(_convolve(scatterers, axial, lateral)), pad).astype(np.float32)


def expected_intensity(echogenicity: np.ndarray, setting: str | Setting) -> np.ndarray:
    """Speckle-free intensity: the echogenicity map convolved with the PSF intensity |h|^2."""
    setting = get_setting(setting)
    echogenicity = _map(echogenicity)
    pad, axial, lateral = _system(setting, echogenicity.shape)
    padded = np.pad(echogenicity, pad, mode="edge")
    return _crop(_convolve(padded, axial ** 2, lateral ** 2).real, pad).clip(0).astype(np.float32)


def log_compress(intensity: np.ndarray, setting: str | Setting) -> np.ndarray:
    """Display value in [0, 1]: 10 log10(intensity) in the window [ceiling - dynamic range, ceiling] dB."""
    setting = get_setting(setting)
    decibels = 10 * np.log10(np.maximum(intensity, np.finfo(np.float32).tiny))
    return np.clip((decibels - setting.ceiling_db) / setting.dynamic_range_db + 1, 0, 1).astype(np.float32)


def to_intensity(display: np.ndarray, setting: str | Setting) -> np.ndarray:
    """Inverse of log_compress (clipped values come back as the window's ends)."""
    setting = get_setting(setting)
    decibels = setting.ceiling_db + (np.asarray(display, dtype=np.float64) - 1) * setting.dynamic_range_db
    return 10 ** (decibels / 10)


def b_mode(envelope_image: np.ndarray, setting: str | Setting) -> np.ndarray:
    """The 8-bit display image of an envelope, as float32 grey level / 255."""
    display = log_compress(np.square(envelope_image, dtype=np.float64), setting)
    return (np.round(display * LEVELS) / LEVELS).astype(np.float32)


# ---------------------------------------------------------------- phantom geometry

def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[:shape[0], :shape[1]].astype(float)


def _disc(shape, centre, radius) -> np.ndarray:
    y, x = _grid(shape)
    return (y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= radius ** 2


def _from_db(level_db):
    return 10 ** (np.asarray(level_db, dtype=float) / 10)


def _cells_to_edge(mask: np.ndarray, cell: tuple[float, float]) -> np.ndarray:
    """Distance, in resolution cells (axial, lateral FWHM), from each pixel of the mask to the nearest pixel
    outside it."""
    return ndimage.distance_transform_edt(mask, sampling=(1 / cell[0], 1 / cell[1]))


def _interior(mask: np.ndarray, cell) -> np.ndarray:
    """The part of a region at least one resolution cell from its boundary (free of PSF blur)."""
    return mask & (_cells_to_edge(mask, cell) >= 1)


def _beside(shape, centre, inner: float, outer: float) -> np.ndarray:
    """The depth band of a round object, between distances inner and outer from its centre."""
    y, x = _grid(shape)
    distance = np.hypot(y - centre[0], x - centre[1])
    return (np.abs(y - centre[0]) <= inner) & (distance > inner) & (distance <= outer)


def _place(shape, radius, gap, taken, rng, tries=200):
    """A random centre for a disc inside the image that keeps `gap` from the border and from each taken
    (centre, keep-out radius); None if none is found."""
    for _ in range(tries):
        centre = rng.uniform(radius + gap, np.array(shape) - radius - gap)
        if all(np.hypot(*(centre - other)) >= keep + radius for other, keep in taken):
            return centre
    return None


def _cyst(shape, rng, cell) -> _Tissue:
    """A hypo- or hyperechoic lesion (the target, +-6..12 dB), an anechoic cyst and a smaller inclusion."""
    size, gap = min(shape), 0.04 * min(shape)
    sign = rng.choice((-1.0, 1.0))
    radius = rng.uniform(0.14, 0.19) * size
    centre = _place(shape, radius, gap, [], rng)
    lesion = _disc(shape, centre, radius)
    echogenicity = np.full(shape, BACKGROUND)
    echogenicity[lesion] = _from_db(sign * rng.uniform(6, 12))
    taken = [(centre, 2 * radius + gap)]  # keeps the target's depth band free for the background region
    for level_db in (-np.inf, -sign * rng.uniform(3, 9)):
        other_radius = rng.uniform(0.06, 0.09) * size
        other = _place(shape, other_radius, gap, taken, rng)
        if other is not None:
            echogenicity[_disc(shape, other, other_radius)] = _from_db(level_db)
            taken.append((other, other_radius + gap))
    return _Tissue(echogenicity, _interior(lesion, cell), _beside(shape, centre, radius, 2 * radius + gap),
                   np.zeros(shape, bool))


def _layers(shape, rng, cell) -> _Tissue:
    """Five tilted layers: bright skin, tissue, the target layer (+-6..12 dB), tissue, a darker deep layer."""
    height, width = shape
    y, x = _grid(shape)
    depths = (np.array([0.12, 0.36, 0.6, 0.82]) + rng.uniform(-0.03, 0.03, 4)) * height
    slopes = rng.uniform(-0.12, 0.12, 4) * min(1.0, height / width)
    layer = (y >= depths[:, None, None] + slopes[:, None, None] * (x - width / 2)).sum(axis=0)
    levels_db = [rng.uniform(6, 10), 0.0, rng.choice((-1.0, 1.0)) * rng.uniform(6, 12), 0.0, rng.uniform(-9, -4)]
    return _Tissue(_from_db(levels_db)[layer], _interior(layer == 2, cell), (layer == 1) | (layer == 3),
                   np.zeros(shape, bool))


def _vessel(shape, rng, cell) -> _Tissue:
    """Carotid-like cross-section under a skin layer: anechoic lumen (the target), bright wall, a plaque."""
    height, width = shape
    size = min(shape)
    y, x = _grid(shape)
    skin = y < rng.uniform(0.05, 0.08) * height + rng.uniform(-0.04, 0.04) * (x - width / 2)
    radius, wall = rng.uniform(0.14, 0.18) * size, rng.uniform(0.025, 0.04) * size
    centre = np.array([rng.uniform(0.45, 0.6) * height, rng.uniform(0.35, 0.65) * width])
    angle = rng.uniform(0, 2 * np.pi)
    lumen = _disc(shape, centre, radius)
    plaque = lumen & _disc(shape, centre + (radius + wall / 2) * np.array([np.sin(angle), np.cos(angle)]),
                           rng.uniform(0.35, 0.55) * radius)
    echogenicity = np.full(shape, BACKGROUND)
    echogenicity[skin] = _from_db(rng.uniform(5, 9))
    echogenicity[_disc(shape, centre, radius + wall)] = _from_db(rng.uniform(8, 12))
    echogenicity[lumen] = 0.0
    echogenicity[plaque] = _from_db(rng.uniform(0, 6))
    return _Tissue(echogenicity, _interior(lumen & ~plaque, cell),
                   _beside(shape, centre, radius + wall, 2 * radius + wall), np.zeros(shape, bool))


def _points(shape, rng, cell) -> _Tissue:
    """A 5 x 3 grid of point targets, +30..40 dB, on background tissue; the target is each point's
    resolution cell (within half a FWHM)."""
    rows = np.round((np.linspace(0.15, 0.85, 5) + rng.uniform(-0.03, 0.03, 5)) * shape[0]).astype(int)
    cols = np.round((np.array([0.25, 0.5, 0.75]) + rng.uniform(-0.05, 0.05, 3)) * shape[1]).astype(int)
    points = np.zeros(shape, bool)
    points[np.ix_(rows, cols)] = True
    echogenicity = np.full(shape, BACKGROUND)
    echogenicity[points] = _from_db(rng.uniform(30, 40, points.sum()))
    distance = _cells_to_edge(~points, cell)
    return _Tissue(echogenicity, distance <= 0.5, distance <= 3, points)


_BUILDERS: dict[str, Callable[..., _Tissue]] = {"cyst": _cyst, "layers": _layers, "vessel": _vessel,
                                               "points": _points}


def _edges(echogenicity: np.ndarray) -> np.ndarray:
    """Pixels whose lower or right neighbour has another echogenicity."""
    edges = np.zeros(echogenicity.shape, bool)
    edges[:-1] |= echogenicity[:-1] != echogenicity[1:]
    edges[:, :-1] |= echogenicity[:, :-1] != echogenicity[:, 1:]
    return edges


# ---------------------------------------------------------------- public API

def simulate(setting: str = "S-II", phantom: str = "cyst", size: int | tuple[int, int] = 256,
             seed: int = 0) -> Simulated:
    """One B-mode image of a phantom (cyst, layers, vessel, points) in a setting, deterministic in the seed."""
    spec = get_setting(setting)
    if phantom not in _BUILDERS:
        raise UserError(f"unknown phantom {phantom!r}", f"use one of {', '.join(PHANTOMS)}")
    shape = _shape(size)
    geometry_seed, speckle_seed = np.random.SeedSequence(seed).spawn(2)
    cell = spec.resolution_cell(shape[0])
    tissue = _BUILDERS[phantom](shape, np.random.default_rng(geometry_seed), cell)
    homogeneous = _interior(tissue.echogenicity == BACKGROUND, cell)
    regions = {"target": tissue.target, "background": tissue.background & homogeneous,
               "homogeneous": homogeneous, "edges": _edges(tissue.echogenicity)}
    empty = [name for name, mask in regions.items() if not mask.any()]
    if empty:
        raise UserError(f"a {shape[0]} x {shape[1]} image leaves no {', '.join(empty)} region in the {phantom} "
                        f"phantom at {spec.name}", "simulate a larger image")
    noisy = b_mode(envelope(tissue.echogenicity, spec, np.random.default_rng(speckle_seed), tissue.points), spec)
    return Simulated(noisy=noisy, clean=log_compress(expected_intensity(tissue.echogenicity, spec), spec),
                     echogenicity=tissue.echogenicity.astype(np.float32), regions=regions, setting=spec.name,
                     phantom=phantom, seed=seed, points=tissue.points)


def simulate_set(setting: str, count: int = 24, size: int = 256, seed: int = 0,
                 phantoms: tuple[str, ...] = PHANTOMS) -> list[Simulated]:
    """`count` images cycling through `phantoms` (default all), with seeds seed, seed + 1, ..."""
    return [simulate(setting, phantoms[i % len(phantoms)], size, seed + i) for i in range(count)]


def realisation(image: Simulated, seed: int) -> np.ndarray:
    """An independent speckle realisation of the same map and setting, in the domain of image.noisy
    (for Noise2Noise and supervised training)."""
    rng = np.random.default_rng([image.seed, seed])
    return b_mode(envelope(image.echogenicity, image.setting, rng, image.points), image.setting)
