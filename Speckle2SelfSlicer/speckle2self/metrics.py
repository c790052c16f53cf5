"""Image-quality metrics. Each docstring states the intensity domain it expects."""
from __future__ import annotations

import numpy as np
from skimage.feature import graycomatrix, graycoprops

GLCM_LEVELS = 64
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)


def to_display8(image: np.ndarray) -> np.ndarray:
    """Min-max map any image to the 8-bit display domain (uint8 is returned unchanged)."""
    if image.dtype == np.uint8:
        return image
    lo, hi = float(image.min()), float(image.max())
    return np.rint((image - lo) / (hi - lo if hi > lo else 1.0) * 255).astype(np.uint8)


def homogeneity(display: np.ndarray) -> float:
    """GLCM homogeneity of an 8-bit display image: 64 grey levels, distance 1, angles 0/45/90/135
    degrees, symmetric, normalised, averaged over angles. Non-uint8 input is min-max mapped first.

    Rewards over-smoothing and darkening: report it beside a fidelity or contrast metric.
    """
    quantised = (to_display8(display).astype(np.uint16) * GLCM_LEVELS // 256).astype(np.uint8)
    glcm = graycomatrix(quantised, distances=[1], angles=list(GLCM_ANGLES), levels=GLCM_LEVELS,
                        symmetric=True, normed=True)
    return float(graycoprops(glcm, "homogeneity").mean())


def local_std(image: np.ndarray, region: tuple[slice, slice]) -> float:
    """Standard deviation inside a region (use a homogeneous one); same domain as the image."""
    return float(np.asarray(image, dtype=np.float64)[region].std())
