"""Multi-scale perturbation (MSP): resample down and straight back up, then min-max normalise."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .network import SCALES


def minmax(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalise each image of a (B, C, H, W) batch to [0, 1] on its own."""
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(eps)


def resample(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Bilinear down to scale*H x scale*W and back to H x W, without antialiasing (like OpenCV INTER_LINEAR)."""
    if scale == 1.0:
        return x
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, int(h * scale)), max(1, int(w * scale))), mode="bilinear",
                          align_corners=False, antialias=False)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False, antialias=False)


def perturb(x: torch.Tensor, scales: tuple[float, ...] = SCALES) -> list[torch.Tensor]:
    """The perturbed images of a (B, 1, H, W) batch, one per scale, each normalised to [0, 1]."""
    return [minmax(resample(x, s)) for s in scales]
