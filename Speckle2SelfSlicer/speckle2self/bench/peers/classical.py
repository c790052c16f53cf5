"""Classical despeckling filters, the benchmark's peers that learn nothing.

Every filter takes a float (H, W) image in the 8-bit display domain scaled to [0, 1] (what a scanner
shows, /255), returns a new float32 image clipped to [0, 1] and never modifies its input. Filters that
need the speckle level read it from the most homogeneous window of the image itself (not from a wavelet
noise estimator, which underestimates correlated speckle about four times).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

EPS = 1.0 / 255
"""Offset that keeps ratio-based filters (SRAD, OBNLM) away from division by zero on black pixels."""


def _result(image: np.ndarray) -> np.ndarray:
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def homogeneous_window(image: np.ndarray, size: int = 32, clipped: float = 0.05) -> tuple[slice, slice]:
    """The size x size window (on a half-overlapping grid) with the lowest coefficient of variation among
    those with at most a `clipped` fraction of black or saturated pixels (outside the sector, anechoic or
    beyond the display window: no speckle statistics there); among the least clipped if none qualifies."""
    image = np.asarray(image, dtype=np.float64)
    size = min(size, *image.shape)
    starts = [range(0, n - size + 1, max(1, size // 2)) for n in image.shape]
    windows = [(slice(r, r + size), slice(c, c + size)) for r in starts[0] for c in starts[1]]
    fractions = [float(((image[w] <= 0.0) | (image[w] >= 1.0)).mean()) for w in windows]
    limit = max(clipped, min(fractions))
    candidates = [w for w, fraction in zip(windows, fractions) if fraction <= limit]
    return min(candidates, key=lambda w: image[w].std() / max(image[w].mean(), EPS))


def speckle_sigma(image: np.ndarray) -> float:
    """Standard deviation of the speckle: that of the most homogeneous window."""
    return float(np.asarray(image, dtype=np.float64)[homogeneous_window(image)].std())


def median(image: np.ndarray, size: int) -> np.ndarray:
    """Median filter over a size x size window."""
    return _result(ndimage.median_filter(np.asarray(image, dtype=np.float32), size=size, mode="reflect"))


def lee(image: np.ndarray, size: int) -> np.ndarray:
    """Lee's local-statistics filter (1980), additive form: x_mean + k (x - x_mean) with
    k = max(0, 1 - noise_var / local_var).

    Lee rather than Frost: on log-compressed display data speckle is close to additive with one
    variance everywhere, which Lee's additive form models with two box filters and no kernel fitting.
    """
    x = np.asarray(image, dtype=np.float64)
    mean = ndimage.uniform_filter(x, size, mode="reflect")
    var = np.maximum(ndimage.uniform_filter(x * x, size, mode="reflect") - mean * mean, 1e-12)
    gain = np.maximum(0.0, 1.0 - speckle_sigma(x) ** 2 / var)
    return _result(mean + gain * (x - mean))


def srad(image: np.ndarray, iterations: int, step: float = 0.5) -> np.ndarray:
    """Speckle-reducing anisotropic diffusion (Yu and Acton, IEEE TIP 11(11), 2002), their discrete
    scheme: instantaneous coefficient of variation q from gradients and Laplacian, diffusion
    c = 1 / (1 + (q^2 - q0^2) / (q0^2 (1 + q0^2))) and q0 re-measured every iteration on the same
    homogeneous window. Stable for step <= 1 (the update divides by four)."""
    x = np.asarray(image, dtype=np.float64) + EPS
    window = homogeneous_window(x)
    for _ in range(iterations):
        p = np.pad(x, 1, mode="edge")
        north, south = p[:-2, 1:-1] - x, p[2:, 1:-1] - x
        west, east = p[1:-1, :-2] - x, p[1:-1, 2:] - x
        gradient2 = (north ** 2 + south ** 2 + west ** 2 + east ** 2) / x ** 2
        laplacian = (north + south + west + east) / x
        q2 = np.maximum(0.5 * gradient2 - laplacian ** 2 / 16, 0.0) / (1 + laplacian / 4) ** 2
        q02 = (x[window].std() / x[window].mean()) ** 2
        c = np.clip(1.0 / (1.0 + (q2 - q02) / (q02 * (1 + q02) + 1e-12)), 0.0, 1.0)
        cp = np.pad(c, 1, mode="edge")
        x = x + step / 4 * (cp[2:, 1:-1] * south + c * north + cp[1:-1, 2:] * east + c * west)
    return _result(x - EPS)


def nlm(image: np.ndarray, h: float, patch: int = 7, search: int = 11) -> np.ndarray:
    """Non-local means (scikit-image, fast mode, its default patch and search sizes) with h = `h` x sigma,
    sigma the speckle sigma."""
    from skimage.restoration import denoise_nl_means

    sigma = speckle_sigma(image)
    x = np.asarray(image, dtype=np.float64)
    return _result(denoise_nl_means(x, h=h * sigma, sigma=sigma, patch_size=patch, patch_distance=search,
                                    fast_mode=True))


def _shifted(padded: np.ndarray, dy: int, dx: int, radius: int) -> np.ndarray:
    h, w = padded.shape[0] - 2 * radius, padded.shape[1] - 2 * radius
    return padded[radius + dy:radius + dy + h, radius + dx:radius + dx + w]


def obnlm(image: np.ndarray, h: float, block: int = 2, search: int = 5, gamma: float = 0.5) -> np.ndarray:
    """Optimised Bayesian non-local means (Coupe et al., IEEE TIP 18(10), 2009): blockwise NLM whose block
    distance is the Pearson distance mean((u_i - u_j)^2 / u_j^(2 gamma)) of the speckle model
    u = v + v^gamma n, weights exp(-d / h^2), the centre block weighted like its best neighbour, and
    every pixel the mean of the restored blocks (radius `block`) that cover it.

    Vectorised over the (2 search + 1)^2 offsets instead of over blocks; no block pre-selection (it
    only saves time)."""
    u = np.asarray(image, dtype=np.float64) + EPS
    padded = np.pad(u, search, mode="reflect")
    size = 2 * block + 1
    offsets = [(dy, dx) for dy in range(-search, search + 1) for dx in range(-search, search + 1) if dy or dx]

    def weights(dy: int, dx: int) -> tuple[np.ndarray, np.ndarray]:
        neighbour = _shifted(padded, dy, dx, search)
        distance = ndimage.uniform_filter((u - neighbour) ** 2 / neighbour ** (2 * gamma), size, mode="reflect")
        return neighbour, np.exp(-distance / h ** 2)

    total, best = np.zeros_like(u), np.zeros_like(u)
    for dy, dx in offsets:
        w = weights(dy, dx)[1]
        total += w
        np.maximum(best, w, out=best)
    total += best
    out = ndimage.uniform_filter(best / total, size, mode="reflect") * u
    for dy, dx in offsets:
        neighbour, w = weights(dy, dx)
        out += ndimage.uniform_filter(w / total, size, mode="reflect") * neighbour
    return _result(out - EPS)


def bm3d(image: np.ndarray, factor: float) -> np.ndarray:
    """BM3D (the `bm3d` package, non-commercial licence: a benchmark-only extra) with noise
    sigma = `factor` x the speckle sigma."""
    import bm3d as bm3d_package

    x = np.asarray(image, dtype=np.float64)
    return _result(bm3d_package.bm3d(x, sigma_psd=factor * speckle_sigma(x)))


def _sitk_filter(image: np.ndarray, name: str, iterations: int, conductance: float, step: float) -> np.ndarray:
    import SimpleITK as sitk

    flt = getattr(sitk, name + "ImageFilter")()
    flt.SetNumberOfIterations(iterations)
    flt.SetConductanceParameter(conductance)
    flt.SetTimeStep(step)
    result = flt.Execute(sitk.GetImageFromArray(np.asarray(image, dtype=np.float32)))
    return _result(sitk.GetArrayFromImage(result))


def curvature_diffusion(image: np.ndarray, conductance: float, iterations: int = 100,
                        step: float = 0.125) -> np.ndarray:
    """SimpleITK CurvatureAnisotropicDiffusion, as in Slicer's filter of that name. The time step is the
    largest ITK accepts in 2-D (1/8); Slicer's default of 1/16 would need twice the iterations."""
    return _sitk_filter(image, "CurvatureAnisotropicDiffusion", iterations, conductance, step)


def gradient_diffusion(image: np.ndarray, conductance: float, iterations: int = 100,
                       step: float = 0.125) -> np.ndarray:
    """SimpleITK GradientAnisotropicDiffusion (Perona-Malik), as in Slicer's filter of that name; time
    step as for `curvature_diffusion`."""
    return _sitk_filter(image, "GradientAnisotropicDiffusion", iterations, conductance, step)
