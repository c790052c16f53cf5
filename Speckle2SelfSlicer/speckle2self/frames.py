"""Array layouts the despeckler accepts, and the way back to the caller's layout and intensity range.

Layouts: (H, W) image, (N, H, W) stack or sequence, (H, W, C) colour and (N, H, W, C) colour frames
with C = 3 (RGB) or 4 (RGBA). Colour is despeckled as ITU-R BT.601 luminance, written back to R, G
and B alike (ultrasound colour images are nearly always grey content); alpha is kept.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scipy import ndimage

from .errors import UserError
from .architecture import DOWNSAMPLING
from .scale import central

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
BACKGROUND_MIN_PIXELS = 64
"""Smallest connected zero region treated as outside the imaging sector (isolated dark speckle is smaller)."""
MIN_SIDE = DOWNSAMPLING
"""Smallest height or width the network accepts: one bottleneck pixel."""


@dataclass(frozen=True)
class Layout:
    """How frames were taken from an array, to put results back."""

    shape: tuple[int, ...]
    dtype: np.dtype
    stacked: bool
    colour: bool


def is_colour(array: np.ndarray) -> bool:
    """Whether the last axis holds RGB or RGBA channels: (H, W, 3|4) or (N, H, W, 3|4)."""
    return array.ndim in (3, 4) and array.shape[-1] in (3, 4)


def _layout(array: np.ndarray) -> Layout:
    colour = is_colour(array)
    if array.ndim == 2:
        return Layout(array.shape, array.dtype, stacked=False, colour=False)
    if array.ndim == 3:
        return Layout(array.shape, array.dtype, stacked=not colour, colour=colour)
    if array.ndim == 4 and colour:
        return Layout(array.shape, array.dtype, stacked=True, colour=True)
    raise UserError(f"Cannot despeckle an array of shape {array.shape}",
                    "give (H, W), (N, H, W), (H, W, 3|4) or (N, H, W, 3|4); split 4-D data into frames")


def validate(array) -> Layout:
    """Check an input array and return its layout, or raise UserError naming the problem."""
    if not isinstance(array, np.ndarray):
        raise UserError(f"Expected a numpy array, got {type(array).__name__}", "convert it with numpy.asarray")
    if array.size == 0:
        raise UserError(f"The image is empty (shape {array.shape})", "check that the file holds pixel data")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
            or array.dtype == np.bool_):
        raise UserError(f"Unsupported pixel type {array.dtype}", "use integer or floating-point pixels")
    layout = _layout(array)
    h, w = frame_shape(array, layout)
    if h < MIN_SIDE or w < MIN_SIDE:
        raise UserError(f"The image is {h}x{w} pixels, smaller than the network's minimum of {MIN_SIDE}x{MIN_SIDE}",
                        "despeckle a larger image")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise UserError("The image contains NaN or infinite pixels", "replace them (e.g. numpy.nan_to_num) first")
    return layout


def frame_shape(array: np.ndarray, layout: Layout) -> tuple[int, int]:
    return array.shape[1:3] if layout.stacked else array.shape[:2]


def frame_count(layout: Layout) -> int:
    return layout.shape[0] if layout.stacked else 1


def grey_frame(array: np.ndarray, layout: Layout, index: int, side: int | None = None) -> np.ndarray:
    """Frame `index` as grey (luminance for colour): float32, or float64 for pixel types float32 cannot
    hold exactly (32- and 64-bit integers, float64); with `side`, only its central part of at most side x side."""
    frame = array[index] if layout.stacked else array
    if side is not None:
        frame = central(frame, side)
    grey = frame[..., :3] @ LUMA.astype(_working(array.dtype)) if layout.colour else frame
    return grey.astype(_working(array.dtype))


def _working(dtype: np.dtype) -> type:
    return np.float32 if np.can_cast(dtype, np.float32) else np.float64


def normalise(frame: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Min-max to [0, 1] as float32; returns it and the frame's range (a constant frame maps to zeros).
    The frame is first divided by its largest magnitude, so ranges near the float limits cannot overflow."""
    lo, hi = float(frame.min()), float(frame.max())
    scale = max(abs(lo), abs(hi)) or 1.0
    span = hi / scale - lo / scale
    return ((frame / scale - lo / scale) / (span if span > 0 else 1.0)).astype(np.float32), lo, hi


def opening(mask: np.ndarray, size: int) -> np.ndarray:
    """Binary opening by a size x size square (outside the image counts as False), the same result as
    ndimage.binary_opening: a separable erosion and dilation, each the AND / OR of `size` shifted views
    (written here: about ten times faster than scipy's min / max filters on a 512 x 512 frame)."""
    eroded = _windowed(_windowed(mask, size, 0, np.logical_and), size, 1, np.logical_and)
    if not eroded.any():
        return eroded
    return _windowed(_windowed(eroded, size, 0, np.logical_or), size, 1, np.logical_or)


def _windowed(mask: np.ndarray, size: int, axis: int, combine) -> np.ndarray:
    """`combine` over the window of `size` pixels along `axis` around each pixel (starting size // 2 before
    it, as scipy's filters), with False outside the image."""
    pad = [(0, 0)] * mask.ndim
    pad[axis] = (size // 2, size - 1 - size // 2)
    padded, n = np.pad(mask, pad), mask.shape[axis]
    def view(k):
        return padded[(slice(None),) * axis + (slice(k, k + n),)]
    out = view(0).copy()
    for k in range(1, size):
        combine(out, view(k), out=out)
    return out


def background(frame: np.ndarray) -> np.ndarray:
    """Pixels outside the imaging sector: solid areas of exact zeros (zeros that survive a 5x5 opening,
    so dark speckle and thin gaps inside tissue do not count) in regions of at least
    BACKGROUND_MIN_PIXELS pixels that reach the frame's border (a black patch inside the tissue, such as a
    cyst or vessel shown as exact zeros, is despeckled). They stay zero in the output (no halo around the
    sector)."""
    solid = opening(frame == 0, 5)
    if not solid.any():
        return solid
    labels, count = ndimage.label(solid)
    large = np.bincount(labels.ravel(), minlength=count + 1) >= BACKGROUND_MIN_PIXELS
    border = np.zeros(count + 1, dtype=bool)
    border[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    keep = large & border
    keep[0] = False
    return keep[labels]


def to_range(unit: np.ndarray, lo: float, hi: float, dtype: np.dtype) -> np.ndarray:
    """Map [0, 1] back to [lo, hi] in `dtype` (rounded for integers). A convex combination of lo and hi,
    clipped, cannot overflow or leave the range."""
    unit = unit.astype(np.float64)
    out = np.clip((1 - unit) * lo + unit * hi, lo, hi)
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        out = np.rint(out)
    return out.astype(dtype)


def put_frame(out: np.ndarray, layout: Layout, index: int, grey: np.ndarray) -> None:
    """Write a grey result frame (already in the output dtype) into `out` at `index`."""
    target = out[index] if layout.stacked else out
    if layout.colour:
        target[..., :3] = grey[..., None]
    else:
        target[...] = grey


def grey_stack(array: np.ndarray) -> np.ndarray:
    """All frames of an image array as one (N, H, W) float32 grey stack."""
    layout = validate(array)
    return np.stack([grey_frame(array, layout, i) for i in range(frame_count(layout))])
