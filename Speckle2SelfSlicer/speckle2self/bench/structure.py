"""Structure metrics on simulations, against the clean reference: point-target resolution and the
periodic (grid) artefacts of strided networks. Written here rather than taken from a library: neither is
in scikit-image or SciPy. (Edge beta, the third structure metric, is `speckle2self.metrics.edge_beta`.)"""
from __future__ import annotations

import numpy as np

from ..errors import UserError

SEARCH = 2
"""A point's peak is sought within this many pixels of its scatterer (a filter may shift it slightly)."""
GRID_FREQUENCIES = (1 / 2, 1 / 4, 1 / 8, 1 / 16)
"""Cycles per pixel where stride-2 upsampling (one to four transposed convolutions) leaves periodic energy."""
RING = (2, 4)
"""The neighbourhood of a spectral peak: bins this far (Chebyshev distance, inner and outer) from it."""
MIN_GRID_SIDE = 128
"""From here down the 1/16 peak's neighbourhood would near the spectrum's centre and the next harmonic (8 bins
away at 128 pixels)."""


def _peak(image: np.ndarray, position: tuple[int, int]) -> tuple[int, int]:
    """The brightest pixel within SEARCH of `position`, ties broken by the distance to it (a clipped peak is
    a plateau: measure through its centre, where the scatterer is)."""
    r, c = position
    rows = np.arange(max(r - SEARCH, 0), min(r + SEARCH + 1, image.shape[0]))
    cols = np.arange(max(c - SEARCH, 0), min(c + SEARCH + 1, image.shape[1]))
    box = image[np.ix_(rows, cols)]
    distance = (rows[:, None] - r) ** 2 + (cols[None, :] - c) ** 2
    best = np.flatnonzero(box.ravel() == box.max())
    i, j = np.unravel_index(best[np.argmin(distance.ravel()[best])], box.shape)
    return int(rows[i]), int(cols[j])


def _crossing(profile: np.ndarray, centre: int, half: float, step: int) -> float:
    """Distance from `centre` to where the profile first falls below `half` going in `step` (+1 or -1),
    linearly interpolated; the distance to the profile's end if it never does."""
    k = centre
    while 0 <= k + step < profile.size:
        if profile[k + step] < half:
            return abs(k - centre) + (profile[k] - half) / (profile[k] - profile[k + step])
        k += step
    return float(abs(k - centre))


def point_fwhm(image: np.ndarray, position: tuple[int, int], radius: int) -> tuple[float, float]:
    """Axial (down the rows) and lateral FWHM, in pixels, of the point target whose scatterer is at
    `position`. Domain: linear (intensity or envelope), as FWHM is defined. Measured through the target's
    peak within a window of +-`radius` pixels: the half maximum lies halfway between the window's median
    (the background) and the peak; a profile that never falls to it counts as reaching the window's edge,
    and a peak no brighter than the background as the whole window, so a point erased or merged with its
    neighbours scores wide."""
    image = np.asarray(image, dtype=np.float64)
    r, c = _peak(image, position)
    top, left = max(r - radius, 0), max(c - radius, 0)
    window = image[top:r + radius + 1, left:c + radius + 1]
    background = np.median(window)
    if image[r, c] <= background:  # no target left
        return 2.0 * radius, 2.0 * radius
    half = (background + image[r, c]) / 2
    widths = []
    for profile, centre in ((window[:, c - left], r - top), (window[r - top], c - left)):
        widths.append(_crossing(profile, centre, half, -1) + _crossing(profile, centre, half, 1))
    return widths[0], widths[1]


def point_radius(positions: np.ndarray) -> int:
    """Half the distance between the two closest point targets (at least 2 pixels): windows this size keep
    each target's neighbours out of its measurement."""
    if len(positions) < 2:
        raise UserError("a window size needs at least two point targets", "pass every point target")
    gaps = np.hypot(*(positions[:, None, :] - positions[None, :, :]).transpose(2, 0, 1))
    return max(2, int(gaps[gaps > 0].min() // 2))


def fwhm_ratio(reference: np.ndarray, image: np.ndarray, points: np.ndarray) -> float:
    """Point-target resolution: each target's FWHM in `image` over its FWHM in the clean `reference`, the
    mean over the targets and both directions. 1.0 is perfect, blur grows it. Both in one linear domain
    (intensity here); `points` is the bool map of the scatterers (at least two)."""
    reference, image = np.asarray(reference, dtype=np.float64), np.asarray(image, dtype=np.float64)
    if reference.shape != image.shape or points.shape != image.shape:
        raise UserError("the reference, the image and the point map must have one shape",
                        "measure an output against the phantom it was made from")
    positions = np.argwhere(points)
    radius = point_radius(positions)
    ratios = [np.divide(point_fwhm(image, tuple(p), radius), point_fwhm(reference, tuple(p), radius))
              for p in positions]
    return float(np.mean(ratios))


def _power(image: np.ndarray) -> np.ndarray:
    """Power spectrum of the mean-free image under a Hann window (no leakage from the image's borders)."""
    h, w = image.shape
    if min(h, w) < MIN_GRID_SIDE:
        raise UserError(f"a {h} x {w} image is too small for the grid-artefact measure",
                        f"use at least {MIN_GRID_SIDE} pixels a side")
    window = np.outer(np.hanning(h), np.hanning(w))
    return np.abs(np.fft.fft2((image - image.mean()) * window)) ** 2


def peak_to_neighbourhood(image: np.ndarray) -> np.ndarray:
    """Spectral peak-to-neighbourhood ratio at each of GRID_FREQUENCIES f (cycles per pixel): at each of the
    bins (f, 0), (0, f), (f, f) and (f, -f), the mean power over the bin and its 8 neighbours over the mean
    power of the ring of bins RING away; the largest of the four. About 1 for a spectrum without peaks (noise
    or smooth structure). Any domain, [0, 1] display values here."""
    power = _power(np.asarray(image, dtype=np.float64))
    h, w = power.shape
    offsets = np.arange(-RING[1], RING[1] + 1)
    chebyshev = np.maximum(np.abs(offsets)[:, None], np.abs(offsets)[None, :])
    ring = (chebyshev >= RING[0]) & (chebyshev <= RING[1])
    ratios = []
    for f in GRID_FREQUENCIES:
        at = []
        for fy, fx in ((f, 0.0), (0.0, f), (f, f), (f, -f)):
            patch = power[np.ix_((round(fy * h) + offsets) % h, (round(fx * w) + offsets) % w)]
            at.append(patch[chebyshev <= 1].mean() / max(patch[ring].mean(), np.finfo(float).tiny))
        ratios.append(max(at))
    return np.array(ratios)


def grid_score(reference: np.ndarray, image: np.ndarray) -> float:
    """Grid artefacts: the image's peak-to-neighbourhood ratio over the clean reference's at each of
    GRID_FREQUENCIES (1/2, 1/4, 1/8 and 1/16 of the sampling frequency), the mean over the four. 1.0: no more
    periodic energy there than the reference has (outputs without artefacts scatter about it: 0.7-1.9 per
    256-pixel simulation for the noisy input, NLM and the median); a 16-pixel grid raises it. [0, 1] display
    domain, both images of one shape, at least MIN_GRID_SIDE pixels a side."""
    reference, image = np.asarray(reference, dtype=np.float64), np.asarray(image, dtype=np.float64)
    if reference.shape != image.shape:
        raise UserError(f"the reference {reference.shape} and the image {image.shape} must have one shape",
                        "measure an output against the image it was made from")
    return float(np.mean(peak_to_neighbourhood(image) / peak_to_neighbourhood(reference)))
