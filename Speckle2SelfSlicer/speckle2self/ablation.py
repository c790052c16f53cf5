"""Ablation of Speckle2Self's design choices (`speckle2self ablation`): each variant is trained from scratch
on one simulated setting's training images under the same short CPU budget and scored on its test images.

Short budgets rank variants early in training; the shipped model trains for hours, so a small gap here is
a hint, not a verdict.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Generator

import numpy as np

from .benchmark import measure
from .benchmark_sets import simulated_set
from .inference import despeckle
from .jobs import Job, Progress
from .losses import LossWeights
from .training import TrainConfig, train_job


@dataclass(frozen=True)
class Variant:
    name: str
    config: dict
    """TrainConfig fields that differ from the reference variant."""
    images: float = 1.0
    """Fraction of the training images used."""
    budget: float = 1.0
    """Multiple of the reference budget."""


VARIANTS = (
    Variant("reference: linear head, width 32, all MSP scales, consistency 1", {}),
    Variant("faithful head (InstanceNorm + ReLU)", {"head": "faithful"}),
    Variant("no consistency term", {"loss": LossWeights(consistency=(0.0, 0.0, 0.0))}),
    Variant("no MSP: full scale only (an autoencoder)",
            {"loss": LossWeights(reconstruction=(0.0, 0.0, 1.0), consistency=(0.0, 0.0, 0.0))}),
    Variant("consistency weight 3", {"loss": LossWeights(consistency=(3.0, 3.0, 3.0))}),
    Variant("width 16", {"width": 16}),
    Variant("a quarter of the training images", {}, images=0.25),
    Variant("half the budget (steps)", {}, budget=0.5),
    Variant("twice the budget (steps)", {}, budget=2.0),
)


def ablation_job(seconds: float = 120.0, setting: str = "S-II", test_count: int = 8, train_count: int = 32,
                 size: int = 256, variants: tuple[Variant, ...] = VARIANTS,
                 device: str = "cpu") -> Job[list[dict]]:
    """Train and score every variant; the result is one row per variant (means over the test images)."""
    reference = TrainConfig(minutes=seconds / 60, size=min(size, 256), head="linear")

    def work(job: Job) -> Generator[Progress, None, list[dict]]:
        data = simulated_set(setting, test_count, train_count, size)
        total = sum(v.budget for v in variants) * seconds
        done, rows = 0.0, []
        for variant in variants:
            config = replace(reference, minutes=reference.minutes * variant.budget, **variant.config)
            noisy = data.training.noisy[:max(1, round(len(data.training.noisy) * variant.images))]
            training = train_job([np.stack(noisy)], config, device=device)
            began = time.perf_counter()
            for progress in training:
                job.check()
                yield job.progress(done + progress.fraction * variant.budget * seconds, total,
                                   f"{variant.name}: {progress.message}")
            done += variant.budget * seconds
            model = training.result.model
            scores = [measure(despeckle(image, model=model, device=device), regions, clean)
                      for image, regions, clean in zip(data.images, data.regions, data.clean)]
            rows.append({"variant": variant.name, "steps": training.result.card["steps"],
                         "train_s": round(time.perf_counter() - began, 1), "images": len(noisy),
                         **{k: float(np.nanmean([s[k] for s in scores])) for k in ("psnr", "ssim", "hom", "gcnr")}})
        return rows

    return Job(work, "ablation")


def markdown(rows: list[dict]) -> str:
    lines = ["| variant | training images | steps | PSNR | SSIM | Hom | gCNR |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['images']} | {r['steps']} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
              f"{r['hom']:.3f} | {r['gcnr']:.3f} |" for r in rows]
    return "\n".join(lines)
