"""Before/after figure: the middle frame of the input beside the same frame of the result."""
from __future__ import annotations

import numpy as np

from . import frames as fr

GAP = 8


def side_by_side(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """An 8-bit grey (H, 2W + gap) image, both halves mapped with the input's intensity range."""
    layout = fr.validate(before)
    middle = fr.frame_count(layout) // 2
    left, right = fr.grey_frame(before, layout, middle), fr.grey_frame(after, layout, middle)
    lo, hi = float(left.min()), float(left.max())
    scale = 255.0 / (hi - lo if hi > lo else 1.0)
    halves = [np.clip((f - lo) * scale, 0, 255) for f in (left, right)]
    gap = np.full((left.shape[0], GAP), 255.0)
    return np.concatenate([halves[0], gap, halves[1]], axis=1).round().astype(np.uint8)
