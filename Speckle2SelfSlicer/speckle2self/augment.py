"""Augmentation applied after MSP, identical for the three perturbed images (MONAI transforms)."""
from __future__ import annotations

import math

import torch
from monai.transforms import Compose, RandAffine, RandFlip


def augmentation(size: int, seed: int) -> Compose:
    """Flips (p=0.3 each) and shift 0.1 / scale 0.2 / rotation 30 degrees (p=0.3), as released."""
    transform = Compose([
        RandFlip(prob=0.3, spatial_axis=1),
        RandFlip(prob=0.3, spatial_axis=0),
        RandAffine(prob=0.3, rotate_range=math.radians(30), translate_range=(0.1 * size, 0.1 * size),
                   scale_range=(0.2, 0.2), padding_mode="reflection", mode="bilinear"),
    ])
    transform.set_random_state(seed=seed)
    return transform


def augment_together(transform: Compose, perturbed: list[torch.Tensor]) -> list[torch.Tensor]:
    """Apply one random draw of `transform` to every scale's (1, H, W) image at once."""
    out = torch.as_tensor(transform(torch.cat(perturbed, dim=0))).as_subclass(torch.Tensor)
    return [o.unsqueeze(0).clamp(0.0, 1.0) for o in out]
