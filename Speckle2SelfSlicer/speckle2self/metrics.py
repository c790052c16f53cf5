"""Image-quality metrics. Each docstring states the intensity domain it expects."""
from __future__ import annotations

import numpy as np
from scipy import ndimage, optimize, special
from skimage.feature import canny, graycomatrix, graycoprops
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from .errors import UserError

GLCM_LEVELS = 64
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)


def to_display8(image: np.ndarray) -> np.ndarray:
    """Min-max map any image to the 8-bit display domain (uint8 is returned unchanged)."""
    if image.dtype == np.uint8:
        return image
    lo, hi = float(image.min()), float(image.max())
    return np.rint((image - lo) / (hi - lo if hi > lo else 1.0) * 255).astype(np.uint8)


def homogeneity(display: np.ndarray, region: np.ndarray | None = None) -> float:
    """GLCM homogeneity of an 8-bit display image: 64 grey levels, distance 1, angles 0/45/90/135
    degrees, symmetric, normalised, averaged over angles. Non-uint8 input is min-max mapped first (over the
    whole image). With `region` (a bool mask of the image's shape) only pixel pairs inside it count.

    Rewards over-smoothing and darkening: report it beside a fidelity or contrast metric.
    """
    quantised = (to_display8(display).astype(np.uint16) * GLCM_LEVELS // 256).astype(np.uint8)
    if region is None:
        glcm = graycomatrix(quantised, distances=[1], angles=list(GLCM_ANGLES), levels=GLCM_LEVELS,
                            symmetric=True, normed=True)
        return float(graycoprops(glcm, "homogeneity").mean())
    _values(quantised, region, "region")
    outside = np.where(region, quantised, GLCM_LEVELS)  # one more level for the outside, then dropped
    glcm = graycomatrix(outside, distances=[1], angles=list(GLCM_ANGLES), levels=GLCM_LEVELS + 1,
                        symmetric=True)[:GLCM_LEVELS, :GLCM_LEVELS]
    if not glcm.sum(axis=(0, 1)).all():
        raise UserError("the region holds no neighbouring pixel pairs in some direction", "choose a larger region")
    return float(graycoprops(glcm, "homogeneity").mean())  # graycoprops normalises each angle


def edge_sharpness(image: np.ndarray) -> float:
    """No-reference edge sharpness of a despeckled image (any intensity domain, compared within one domain):
    the mean Sobel gradient magnitude over the 1% of pixels with the strongest gradients, over the image's
    1-99% intensity spread. Blur lowers it; so does nothing else that keeps the spread. Speckle raises it
    too, so read it beside homogeneity."""
    image = np.asarray(image, dtype=np.float64)
    gradient = np.hypot(ndimage.sobel(image, 0), ndimage.sobel(image, 1))
    strongest = np.sort(gradient.ravel())[-max(1, gradient.size // 100):]
    low, high = np.percentile(image, [1, 99])
    return float(strongest.mean() / (high - low)) if high > low else 0.0


def residual_structure(noisy: np.ndarray, despeckled: np.ndarray, sigma: float) -> float:
    """No-reference check of what a despeckler removed (after Gomez, Ospina and Frery, Remote Sensing 2017: the
    residual of an ideal filter is speckle alone, with no structure in it): the correlation, over the frame,
    between the residual's local energy and the despeckled frame's local edge strength, both Gaussian-averaged
    over `sigma` pixels (about a speckle grain). On log-compressed display B-mode, speckle's spread hardly
    depends on the echo level, so a filter that only removes speckle leaves residual energy unrelated to edges
    (near 0 or below); one that smooths edges and thin layers away puts residual energy where the edges are."""
    noisy, despeckled = np.asarray(noisy, dtype=np.float64), np.asarray(despeckled, dtype=np.float64)
    energy = ndimage.gaussian_filter((noisy - despeckled) ** 2, sigma)
    edges = ndimage.gaussian_filter(np.hypot(ndimage.sobel(despeckled, 0), ndimage.sobel(despeckled, 1)), sigma)
    if energy.std() == 0 or edges.std() == 0:
        return 0.0
    return float(np.corrcoef(energy.ravel(), edges.ravel())[0, 1])


def local_std(image: np.ndarray, region: tuple[slice, slice]) -> float:
    """Standard deviation inside a region (use a homogeneous one); same domain as the image."""
    return float(np.asarray(image, dtype=np.float64)[region].std())


# ---------------------------------------------------------------- fidelity against a clean reference

def _pair(reference: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference, image = np.asarray(reference, dtype=np.float64), np.asarray(image, dtype=np.float64)
    if reference.shape != image.shape or reference.ndim != 2:
        raise UserError(f"the reference {reference.shape} and the image {image.shape} must be 2-D arrays of one "
                        "shape", "compare an image with the reference it was made from")
    return reference, image


def psnr(reference: np.ndarray, image: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio (dB) against a clean reference; both in the [0, 1] display domain."""
    return float(peak_signal_noise_ratio(*_pair(reference, image), data_range=data_range))


def ssim(reference: np.ndarray, image: np.ndarray, data_range: float = 1.0) -> float:
    """Structural similarity against a clean reference, Gaussian window sigma 1.5; [0, 1] display domain."""
    return float(structural_similarity(*_pair(reference, image), data_range=data_range, gaussian_weights=True,
                                       sigma=1.5, use_sample_covariance=False))


# ---------------------------------------------------------------- contrast and speckle statistics

def _values(image: np.ndarray, mask: np.ndarray, name: str) -> np.ndarray:
    """The image's values inside a bool mask of its shape, which must hold at least two pixels."""
    image, mask = np.asarray(image), np.asarray(mask)
    if mask.shape != image.shape or mask.dtype != bool:
        raise UserError(f"the {name} mask must be a bool array of the image's shape {image.shape}")
    if mask.sum() < 2:
        raise UserError(f"the {name} region is empty or a single pixel", "choose a larger region")
    return image[mask].astype(np.float64)


def gcnr(image: np.ndarray, inside_mask: np.ndarray, outside_mask: np.ndarray, bins: int = 256) -> float:
    """Generalised contrast-to-noise ratio (Rodriguez-Molares et al. 2020): 1 minus the overlap of the two
    regions' normalised histograms on common bins. Any domain; in [0, 1].

    Data with at most `bins` distinct values (8-bit or quantised display images) get one bin per value, so any
    strictly monotonic intensity map leaves the result unchanged exactly; other data get `bins` equal bins
    over the two regions' common range, where the invariance is approximate.
    """
    a, b = _values(image, inside_mask, "inside"), _values(image, outside_mask, "outside")
    levels = np.unique(np.concatenate([a, b]))
    if levels.size <= bins:
        counts_a = np.bincount(np.searchsorted(levels, a), minlength=levels.size)
        counts_b = np.bincount(np.searchsorted(levels, b), minlength=levels.size)
    else:
        edges = np.linspace(levels[0], levels[-1], bins + 1)
        counts_a, counts_b = np.histogram(a, edges)[0], np.histogram(b, edges)[0]
    overlap = np.minimum(counts_a * b.size, counts_b * a.size).sum()  # integers: exact in any bin order
    return float(1 - overlap / (a.size * b.size))


def cnr(image: np.ndarray, inside: np.ndarray, outside: np.ndarray) -> float:
    """Contrast-to-noise ratio |mu_i - mu_o| / sqrt(var_i + var_o). Depends on the domain (linear envelope,
    intensity or display): report it with the domain."""
    a, b = _values(image, inside, "inside"), _values(image, outside, "outside")
    return float(abs(a.mean() - b.mean()) / np.sqrt(a.var() + b.var()))


def snr(image: np.ndarray, region: np.ndarray) -> float:
    """mu / sigma in a homogeneous region. Linear envelope domain: 1.91 for fully developed speckle."""
    values = _values(image, region, "region")
    return float(values.mean() / values.std())


def enl(image: np.ndarray, region: np.ndarray) -> float:
    """Equivalent number of looks mu^2 / sigma^2 in a homogeneous region. Intensity domain (envelope
    squared): 1 for fully developed speckle."""
    return snr(image, region) ** 2


# ---------------------------------------------------------------- edge preservation

def edge_beta(reference: np.ndarray, image: np.ndarray, region: np.ndarray | None = None) -> float:
    """Edge-preservation beta (Sattar et al. 1997): correlation of the zero-mean Laplacian (high-pass) images
    of the clean reference and the image, optionally inside a region (e.g. around the edges). 1 is perfect.
    Both in one domain, the [0, 1] display domain here."""
    reference, image = _pair(reference, image)
    mask = np.ones(reference.shape, bool) if region is None else region
    high_ref = _values(ndimage.laplace(reference), mask, "region")
    high_img = _values(ndimage.laplace(image), mask, "region")
    high_ref, high_img = high_ref - high_ref.mean(), high_img - high_img.mean()
    norm = np.sqrt((high_ref ** 2).sum() * (high_img ** 2).sum())
    if norm == 0:
        raise UserError("the reference or the image has no detail in the region", "choose a region with edges")
    return float((high_ref * high_img).sum() / norm)


RISE_10_90 = 2 * special.ndtri(0.9)
"""10-90 % rise distance of an error-function edge, in units of its sigma (2.563)."""


def edge_width(profile: np.ndarray, spacing: float = 1.0) -> float:
    """10-90 % rise distance of the edge in a 1-D intensity profile across it (e.g. the mean of parallel lines
    from a dark region into tissue): the error function a + b Phi((x - x0) / s) fitted in least squares gives
    2.563 s. Any intensity domain (compare images in one domain); in the units of `spacing`, the distance
    between samples. Smaller is sharper. UserError unless one edge stands out of the noise well inside the
    profile (step at least 3 residual standard deviations, between 10 % and 90 % of its length)."""
    values = np.asarray(profile, dtype=np.float64)
    if values.ndim != 1 or values.size < 5 or not np.isfinite(values).all():
        raise UserError("an edge profile must be at least 5 finite values", "place the regions further apart")
    x = np.arange(values.size, dtype=np.float64)
    end = max(1, values.size // 5)
    low, high = values[:end].mean(), values[-end:].mean()

    def step(x, a, b, x0, s):
        return a + b * special.ndtr((x - x0) / s)

    no_edge = UserError("no edge was found in the profile", "place the regions on either side of one boundary")
    if np.ptp(values) == 0:
        raise no_edge
    bounds = ([-np.inf, -np.inf, 0, 1e-3], [np.inf, np.inf, x[-1], values.size])
    try:
        fitted, _ = optimize.curve_fit(step, x, values, p0=[low, high - low, x.mean(), values.size / 10],
                                       bounds=bounds)
    except (RuntimeError, ValueError):
        raise no_edge from None
    _, b, x0, s = fitted
    residual = values - step(x, *fitted)
    if not 0.1 * x[-1] < x0 < 0.9 * x[-1] or s >= values.size / 4 or abs(b) < 3 * residual.std():
        raise no_edge  # not within the profile, spread over it, or not above the noise
    return float(RISE_10_90 * s * spacing)


def pratt_fom(reference_edges: np.ndarray, image: np.ndarray, sigma: float = 2.0, alpha: float = 1 / 9) -> float:
    """Pratt's figure of merit of the Canny edges (Gaussian sigma in pixels, default thresholds) of an image
    in the [0, 1] display domain against the ideal edge pixels: the mean of 1 / (1 + alpha d^2) over the
    detected edges, d their distance to the nearest ideal edge, divided by the larger edge count. 1 is perfect."""
    reference_edges, image = np.asarray(reference_edges, dtype=bool), np.asarray(image, dtype=np.float64)
    _pair(reference_edges, image)
    if not reference_edges.any():
        raise UserError("the reference has no edge pixels", "pass the clean map's edges")
    detected = canny(image, sigma=sigma)
    distance = ndimage.distance_transform_edt(~reference_edges)[detected]
    return float((1 / (1 + alpha * distance ** 2)).sum() / max(reference_edges.sum(), detected.sum()))
