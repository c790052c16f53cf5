"""Speckle2Self as two benchmark rows: the shipped model, and a model trained from scratch on the
benchmark's own training images under the same budget as the learned peers. Both are the network's output
with brightness matching only (RAW): the benchmark's calibration chain, the same for every method, does the
rest."""
from __future__ import annotations

from functools import partial

import numpy as np

from ...inference import despeckle
from ...training import TrainConfig, train_job
from .learned import Budget, Trainer, TrainingSet, crop_size

RAW = {"smoothing": 0.0, "log_bias": False}
"""`despeckle` options that leave the output as the network gives it, brightness-matched to its input (the
network's own level is a compromise between the training scales, see `postprocess.brightness_matched`)."""


def shipped(image: np.ndarray, budget: Budget, weights: str | None = None) -> np.ndarray:
    """The shipped weights (or a candidate's `weights`), as `speckle2self despeckle` runs them by default."""
    return despeckle(image, weights=weights, device=budget.device, precision=budget.precision, **RAW)


def same_budget(data: TrainingSet, budget: Budget) -> Trainer:
    """Self-supervised Speckle2Self training (`train_job`) for `budget.seconds` on the noisy images, with the
    shipped model's linear head."""
    config = TrainConfig(minutes=budget.seconds / 60, size=crop_size(budget.size, data.noisy), batch=budget.batch,
                         width=budget.width, seed=budget.seed, precision=budget.precision, head="linear")
    job = train_job(list(data.noisy), config, device=budget.device)
    for progress in job:
        yield progress.message
    return partial(_despeckle_with, job.result.model, budget)


def _despeckle_with(model, budget: Budget, image: np.ndarray) -> np.ndarray:
    return despeckle(image, model=model, device=budget.device, precision=budget.precision, **RAW)
