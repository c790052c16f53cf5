"""Speckle2Self loss: per-scale reconstruction (MSE) plus pairwise consistency (L1)."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    """Weights of the three reconstruction and three consistency terms (paper: all 1.0)."""

    reconstruction: tuple[float, float, float] = (1.0, 1.0, 1.0)
    consistency: tuple[float, float, float] = (1.0, 1.0, 1.0)  # pairs (0,1), (0,2), (1,2)


def reconstruction_loss(outputs, inputs, weights=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """Each output must reproduce its own perturbed input."""
    return sum(w * F.mse_loss(o, x) for w, o, x in zip(weights, outputs, inputs))


def consistency_loss(outputs, weights=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """All outputs must agree with each other."""
    pairs = combinations(range(len(outputs)), 2)
    return sum(w * F.l1_loss(outputs[a], outputs[b]) for w, (a, b) in zip(weights, pairs))


def speckle2self_loss(outputs, inputs, weights: LossWeights = LossWeights()) -> dict[str, torch.Tensor]:
    """Total loss with its two parts, as a dict of tensors."""
    rec = reconstruction_loss(outputs, inputs, weights.reconstruction)
    con = consistency_loss(outputs, weights.consistency)
    return {"total": rec + con, "reconstruction": rec, "consistency": con}
