"""Speckle-scale normalisation: measure the speckle grain of a frame, resample to the grain the model was
trained at, and back.

The grain is the full width at half maximum of the speckle pattern's normalised autocorrelation, axially
(down the rows) and laterally (along them), in pixels. In fully developed speckle the autocorrelation of the
pattern is the system's resolution cell (Wagner et al., IEEE Trans. Sonics Ultrason. 1983), so its width is
what the network sees of the scanner's point spread function on this pixel grid: probe frequency, depth and
scan conversion all change it, the anatomy does not. It is measured on the speckle residual (the frame minus
its local mean, so organ boundaries and brightness gradients do not widen it) in square tiles of the frame's
central part that lie inside the imaging sector, hold hardly any clipped pixels and speckle of the frame's
typical strength; the median over tiles is taken, so the few tiles that hold an edge or a wall do not move it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import UserError

TILE = 32
"""Side of the tiles the autocorrelation is measured in (several grains, few structures)."""
LOCAL_MEAN_SIGMA = 6.0
"""Gaussian sigma (pixels) of the local mean removed before measuring: wider than a grain, narrower than organs."""
MAX_CLIPPED = 0.02
"""Largest fraction of a tile's pixels at the frame's extremes (display floor or ceiling, outside the sector)."""
MIN_TILES = 4
"""Fewer usable tiles than this and the grain is not measured (the frame is returned at factor 1)."""
MEASURED_SIDE = 768
"""The grain is measured on the central part of at most this side of each frame (bounded memory and time)."""
MEASURED_FRAMES = 8
"""Frames (evenly spread) a sequence's grain is measured on."""
SPECKLE_STD_FRACTION = 0.5
"""A tile is measured when its residual's standard deviation is at least this fraction of the 75th percentile
over the frame's tiles (log-compressed speckle has about the same spread wherever the echo is displayed)."""
REFERENCE_GRAIN = 6.0
"""Grain (pixels, geometric mean of axial and lateral FWHM) that models are trained at, and that of models whose
card records none. Twice the grain of the 256 x 256 carotid inputs of the method's published reference
(2.6-3.1 px per clip), i.e. the grain on the 512 x 512 grid the method's own network ran on; the three
training scanners show 5-8 px on their own grids."""
FACTOR_RANGE = (0.5, 4.0)
"""Smallest and largest resampling factor `auto` chooses (memory and time grow with its square)."""
FACTOR_STEP = 0.05
"""Automatic factors are rounded to this step, and within one step of 1 no resampling is done."""


@dataclass(frozen=True)
class Grain:
    """Speckle grain in pixels: axial (rows) and lateral (columns) FWHM of the autocorrelation."""

    axial: float
    lateral: float

    @property
    def size(self) -> float:
        """One number for the grain: the geometric mean of its two widths."""
        return float(np.sqrt(self.axial * self.lateral))

    def as_dict(self) -> dict:
        return {"axial": round(self.axial, 3), "lateral": round(self.lateral, 3), "size": round(self.size, 3)}


def _half_width(profile: np.ndarray) -> float:
    """Lag (pixels, linear interpolation) where a normalised autocorrelation profile from lag 0 first drops to
    0.5; the whole profile's length when it never does."""
    below = np.flatnonzero(profile < 0.5)
    if not below.size:
        return float(len(profile))
    k = below[0]
    return float(k - 1 + (profile[k - 1] - 0.5) / (profile[k - 1] - profile[k]))


def _tile_widths(residual: np.ndarray, clipped: np.ndarray) -> list[tuple[float, float]]:
    """(axial, lateral) FWHM in every TILE x TILE tile with at most MAX_CLIPPED of its pixels `clipped` that
    holds speckle of the frame's typical strength."""
    measured = []
    h, w = residual.shape
    for top in range(0, h - TILE + 1, TILE):
        for left in range(0, w - TILE + 1, TILE):
            if clipped[top:top + TILE, left:left + TILE].mean() > MAX_CLIPPED:
                continue
            tile = residual[top:top + TILE, left:left + TILE]
            tile = tile - tile.mean()
            spectrum = np.abs(np.fft.rfft2(tile, s=(2 * TILE, 2 * TILE))) ** 2  # zero-padded: no wrap-around
            acf = np.fft.irfft2(spectrum, s=(2 * TILE, 2 * TILE))
            if acf[0, 0] <= 0:
                continue
            acf = acf / acf[0, 0]
            measured.append((tile.std(), 2 * _half_width(acf[:TILE // 2, 0]), 2 * _half_width(acf[0, :TILE // 2])))
    if not measured:
        return []
    strength = np.array([m[0] for m in measured])
    strong = strength >= SPECKLE_STD_FRACTION * np.percentile(strength, 75)
    return [m[1:] for m, keep in zip(measured, strong) if keep]


def frame_widths(frame: np.ndarray) -> list[tuple[float, float]]:
    """Per-tile (axial, lateral) grain widths of the central MEASURED_SIDE part of one grey frame (any range),
    whoever measures it (despeckling, fine-tuning, training); tiles outside the imaging sector
    (exact zeros), with clipped pixels (the frame's extremes) or in flat areas are left out."""
    frame = np.asarray(central(frame, MEASURED_SIDE), dtype=np.float64)
    lo, hi = frame.min(), frame.max()
    if hi <= lo:
        return []
    residual = frame - ndimage.gaussian_filter(frame, LOCAL_MEAN_SIGMA, mode="reflect")
    return _tile_widths(residual, (frame <= lo) | (frame >= hi))


def central(frame: np.ndarray, side: int) -> np.ndarray:
    """The central part of at most side x side of a frame (a view)."""
    top, left = max(0, (frame.shape[0] - side) // 2), max(0, (frame.shape[1] - side) // 2)
    return frame[top:top + side, left:left + side]


def spread(count: int, most: int = MEASURED_FRAMES) -> np.ndarray:
    """Indices of up to `most` of `count` frames, evenly spread."""
    return np.unique(np.linspace(0, count - 1, min(most, count)).round().astype(int))


def measure(frames) -> Grain | None:
    """The speckle grain of a grey (H, W) frame, an (N, H, W) stack or a list of frames (up to
    MEASURED_FRAMES, evenly spread, are measured), or None when fewer than MIN_TILES tiles of speckle were
    found."""
    stack = [frames] if np.ndim(frames[0]) == 1 else frames
    widths = [wd for i in spread(len(stack)) for wd in frame_widths(stack[i])]
    if len(widths) < MIN_TILES:
        return None
    axial, lateral = np.median(np.array(widths), axis=0)
    return Grain(float(axial), float(lateral))


def factor_for(grain: Grain | None, target: float) -> float:
    """The resampling factor that brings `grain` to `target` pixels: rounded to FACTOR_STEP, kept within
    FACTOR_RANGE, and 1 when the grain is unknown or the change is within a step."""
    if grain is None:
        return 1.0
    factor = float(np.clip(target / grain.size, *FACTOR_RANGE))
    factor = round(factor / FACTOR_STEP) * FACTOR_STEP
    return 1.0 if abs(factor - 1.0) < FACTOR_STEP else round(factor, 2)


def choose(frames, scale: float | str, grain: float) -> dict:
    """The resampling of a job on grey `frames` (as `measure` takes them): its `factor` ('auto': the one that
    brings the measured grain to the model's `grain`) with what was measured, as progress reports show it."""
    scale = parse_scale(scale)
    if scale != "auto":
        return {"factor": scale, "mode": "fixed", "model_grain": grain}
    measured = measure(frames)
    return {"factor": factor_for(measured, grain), "mode": "auto", "model_grain": grain,
            "grain": measured.as_dict() if measured is not None else None}


def parse_scale(value) -> float | str:
    """'auto' or a positive factor within FACTOR_RANGE (as given on the command line or from Python)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        factor = float(value)
    except (TypeError, ValueError):
        factor = float("nan")
    if not FACTOR_RANGE[0] <= factor <= FACTOR_RANGE[1]:
        raise UserError(f"Scale {value!r} is not 'auto' or a factor from {FACTOR_RANGE[0]} to {FACTOR_RANGE[1]}",
                        "use --scale auto, or e.g. --scale 2 (1 despeckles on the file's own grid)")
    return factor


def scaled_shape(h: int, w: int, factor: float) -> tuple[int, int]:
    """Frame shape on the resampled grid."""
    return max(1, round(h * factor)), max(1, round(w * factor))


def to_grid(batch, factor: float):
    """A (B, 1, H, W) torch batch resampled by `factor`: bicubic (antialiased when shrinking), clamped to the
    input's [0, 1] range (bicubic overshoots at edges)."""
    import torch.nn.functional as F

    if factor == 1.0:
        return batch
    size = scaled_shape(*batch.shape[-2:], factor)
    return F.interpolate(batch, size=size, mode="bicubic", align_corners=False, antialias=factor < 1).clamp(0, 1)


def from_grid(batch, shape: tuple[int, int], factor: float):
    """A (B, 1, h, w) torch batch on the resampled grid back to `shape`: area averaging after enlarging (each
    output pixel is the mean of the grid pixels it covers), bicubic after shrinking."""
    import torch.nn.functional as F

    if factor == 1.0:
        return batch
    if factor > 1:
        return F.interpolate(batch, size=shape, mode="area")
    return F.interpolate(batch, size=shape, mode="bicubic", align_corners=False).clamp(0, 1)


def resampled(frame: np.ndarray, factor: float) -> np.ndarray:
    """A grey [0, 1] float32 frame on the grid resampled by `factor` (as `to_grid`), as a numpy array."""
    import torch

    if factor == 1.0:
        return frame
    return to_grid(torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32))[None, None], factor)[0, 0].numpy()
