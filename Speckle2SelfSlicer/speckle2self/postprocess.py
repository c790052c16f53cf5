"""What happens to a network output frame before it is written: grid removal, brightness, smoothing,
log-speckle bias.

Grid removal works on the padded network output; the other three on one frame in [0, 1] with its normalised
input (`source`) and the pixels inside the imaging sector (`inside`).

Why a log-bias step: trained to reproduce noisy log-compressed images, the network estimates the local
mean of the displayed (log) values. In fully developed speckle the intensity is exponential, and the mean
of its logarithm lies Euler's gamma below the logarithm of its mean (2.51 dB; std 5.57 dB, so the bias is
0.450 speckle standard deviations whatever the display's dynamic range). A speckle-free image shows the
log of the mean intensity, so the output is mapped back through that relation, with the display's clipping
at black and white taken into account; the speckle standard deviation is measured on the frame itself.
"""
from __future__ import annotations

import numpy as np
from scipy import fft, ndimage

from .scale import LOCAL_MEAN_SIGMA

_NODES = 1024
LOG_SPECKLE = (np.log(-np.log1p(-(np.arange(_NODES) + 0.5) / _NODES)) * np.sqrt(6) / np.pi).astype(np.float32)
"""Standardised log-speckle: ln of a unit exponential intensity at equal-probability quantiles, divided by
its standard deviation pi / sqrt(6); the mean is -0.450 (minus Euler's gamma in those units)."""
TILE = 32
MIN_TILES = 4
"""Fewer tiles of unclipped speckle than this and the spread is not measured (no log-bias step)."""
LOOKUP_LEVELS = 4096
"""Output values at which the log-bias inverse is tabulated (1/16 of an 8-bit grey level apart)."""
SMOOTHING = 0.0
"""Default Gaussian smoothing (pixels) of the network output: none. 1.25 px had the best PSNR on the simulated
S-II tuning images but lowered the similarity to the method's published output on real carotid scans (SSIM
0.716 -> 0.697 with the previous model), and a metric that rewards blur does not decide alone."""


GRID_PERIOD = 16
"""Period (pixels) of the decoder's artefacts: four stride-2 transposed convolutions repeat every 16 pixels."""
GRID_EXCESS = 2.0
"""A grid frequency's spectral magnitude is cut back to this many times its neighbourhood's median."""
MIN_GRID_SIDE = 128
"""Smallest side degridded: grid frequencies 8 bins apart, so no two neighbourhoods overlap."""
_OFFSETS = np.arange(-3, 4)
_CHEBYSHEV = np.maximum(np.abs(_OFFSETS)[:, None], np.abs(_OFFSETS)[None, :])


def degridded(output: np.ndarray, period: int = GRID_PERIOD) -> np.ndarray:
    """`output` (H x W, both multiples of `period`, as the network's padded output) without the periodic
    pattern of the decoder's transposed convolutions. A pattern that repeats every `period` pixels has its
    energy at the frequencies (a, b) / period; at each of them (but 0) the spectral magnitude of the bin and
    its 8 neighbours is cut back to GRID_EXCESS times the median of the ring of bins 2 and 3 away, so a
    frequency that does not stand out of its neighbourhood (image content) is left alone: a notch filter,
    no smoothing elsewhere in the spectrum. Frames under MIN_GRID_SIDE a side are returned unchanged (their
    grid frequencies lie too close together to have neighbourhoods). Written here: no library has it."""
    h, w = output.shape
    if h % period or w % period:
        raise ValueError(f"degridded needs sides that are multiples of {period}, got {h} x {w}")
    if min(h, w) < MIN_GRID_SIDE:
        return output
    spectrum = fft.rfft2(output.astype(np.float32))  # the half spectrum: 4x faster than the complex fft2
    half = period // 2 + 1  # lattice columns 0 .. period/2 lie in it
    a, b = np.divmod(np.arange(1, period * half), half)  # every lattice frequency of the half but (0, 0)
    rows = ((a[:, None] * (h // period) + _OFFSETS) % h)[:, :, None]
    cols = ((b[:, None] * (w // period) + _OFFSETS) % w)[:, None, :]
    mirrored = cols > w // 2  # bins of the other half: the conjugates of their mirror images, same magnitude
    index = np.where(mirrored, -rows % h, rows), np.where(mirrored, w - cols, cols)
    patches = spectrum[index]
    magnitude = np.abs(patches)
    level = GRID_EXCESS * np.median(magnitude[:, _CHEBYSHEV >= 2], axis=1)[:, None, None]
    scale = np.where((_CHEBYSHEV <= 1) & (magnitude > level), level / np.maximum(magnitude, 1e-12), 1.0)
    spectrum[index] = patches * scale  # a bin in two neighbourhoods gets the same value from both
    return fft.irfft2(spectrum, s=(h, w)).astype(np.float32)


def brightness_matched(output: np.ndarray, source: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """`output` under the affine map (positive gain) that best fits it to `source` over the `inside` pixels,
    in least squares, clipped to [0, 1]. Training normalises each scale's image on its own and asks the
    outputs to agree, so the network's level and contrast are a compromise between scales; this gives the
    output the input's brightness back. Unchanged when no positive gain fits (e.g. a flat output)."""
    o, x = output[inside].astype(np.float64), source[inside].astype(np.float64)
    spread = o.var() if o.size > 1 else 0.0
    gain = float(np.mean((o - o.mean()) * (x - x.mean())) / spread) if spread > 1e-12 else 0.0
    if not gain > 0:
        return output
    return np.clip(gain * output + (x.mean() - gain * o.mean()), 0.0, 1.0).astype(np.float32)


def smoothed(output: np.ndarray, inside: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing (`sigma` pixels) over the `inside` pixels only (normalised convolution), so the
    zeros outside the sector do not darken its rim; outside pixels are returned unchanged."""
    if sigma <= 0:
        return output
    if inside.all():
        return ndimage.gaussian_filter(output.astype(np.float32), sigma)
    weight = ndimage.gaussian_filter(inside.astype(np.float32), sigma)
    blurred = ndimage.gaussian_filter(np.where(inside, output, 0).astype(np.float32), sigma)
    return np.where(inside, blurred / np.maximum(weight, 1e-6), output).astype(np.float32)


def speckle_spread(output: np.ndarray, source: np.ndarray, inside: np.ndarray) -> float | None:
    """Standard deviation of the speckle: of `source` minus its Gaussian local mean (the speckle residual the
    scale estimator measures, `scale.LOCAL_MEAN_SIGMA`), so that it does not depend on how much speckle the
    filter removed (any mean-keeping filter keeps the mean of the log-speckle, whose bias is set by the full
    spread); the median over TILE x TILE tiles inside the sector whose mean output the display clips at
    neither tail (at least 3.2 std above black and 1.7 below white: the 1% and 99% points of log-speckle), so
    that edges and structure do not count. 0 when the output removed nothing (`source` - `output` is flat in
    those tiles: nothing was averaged, nothing to correct); None when fewer than MIN_TILES tiles qualify."""
    h, w = (n - n % TILE for n in output.shape)
    if h == 0 or w == 0:
        return None
    def tiles(a):
        return a[:h, :w].reshape(h // TILE, TILE, w // TILE, TILE).swapaxes(1, 2).reshape(-1, TILE * TILE)
    speckle = source - ndimage.gaussian_filter(source, LOCAL_MEAN_SIGMA, mode="reflect")
    level, full = tiles(output).mean(1), tiles(inside).all(1)
    stds, removed = tiles(speckle).std(1), tiles(source - output).std(1)
    spread, used, low, high = None, full, 0.25, 0.75
    for _ in range(3):
        usable = full & (level > low) & (level < high)
        if usable.sum() < MIN_TILES:
            break
        spread, used = float(np.median(stds[usable])), usable
        low, high = 3.2 * spread, 1 - 1.7 * spread
    if spread is not None and not np.median(removed[used]) > 0:
        return 0.0
    return spread


def expected_display(levels: np.ndarray, spread: float) -> np.ndarray:
    """Mean displayed value of fully developed speckle whose mean intensity displays at `levels` ([0, 1]
    display units, may lie outside), for speckle std `spread`, with the display clipped to [0, 1]."""
    values = np.asarray(levels, dtype=np.float32)[..., None] + np.float32(spread) * LOG_SPECKLE
    return np.clip(values, 0.0, 1.0).mean(axis=-1, dtype=np.float64)


def log_bias_removed(output: np.ndarray, source: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """`output` (an estimate of the mean displayed value) mapped to the display of the mean intensity by
    inverting `expected_display`; unchanged where the speckle spread cannot be measured. Exact zeros stay 0.
    The inverse is tabulated at LOOKUP_LEVELS output values (a 65k-pixel interpolation costs 10x more)."""
    spread = speckle_spread(output, source, inside)
    if not spread:
        return output
    levels = np.linspace(-4 * spread, 1 + 3 * spread, 256)
    expected, first = np.unique(expected_display(levels, spread), return_index=True)  # drop clipped plateaus
    table = np.clip(np.interp(np.linspace(0, 1, LOOKUP_LEVELS), expected, levels[first]), 0, 1).astype(np.float32)
    return table[np.rint(np.clip(output, 0, 1) * (LOOKUP_LEVELS - 1)).astype(np.intp)]
