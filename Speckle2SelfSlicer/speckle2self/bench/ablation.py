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

from ..inference import despeckle
from ..jobs import Job, Progress
from ..losses import LossWeights
from ..training import TrainConfig, train_job
from .benchmark import measure
from .sets import simulated_set


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
    Variant("MSP scales 0.5 and 1 (no 0.25 branch)",
            {"loss": LossWeights(reconstruction=(0.0, 1.0, 1.0), consistency=(0.0, 0.0, 1.0))}),
    Variant("MSP scales 0.25 and 1 (no 0.5 branch)",
            {"loss": LossWeights(reconstruction=(1.0, 0.0, 1.0), consistency=(0.0, 1.0, 0.0))}),
    Variant("no MSP: full scale only (an autoencoder)",
            {"loss": LossWeights(reconstruction=(0.0, 0.0, 1.0), consistency=(0.0, 0.0, 0.0))}),
    Variant("consistency weight 3", {"loss": LossWeights(consistency=(3.0, 3.0, 3.0))}),
    Variant("width 16", {"width": 16}),
    Variant("width 8", {"width": 8}),
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
            train_s = round(time.perf_counter() - began, 1)
            model = training.result.model
            despeckle(data.images[0], model=model, device=device)  # warm-up, not timed
            started = time.perf_counter()
            outputs = [despeckle(image, model=model, device=device) for image in data.images]
            ms_per_frame = 1000 * (time.perf_counter() - started) / len(outputs)
            scores = [measure(output, regions, clean, setting)
                      for output, regions, clean in zip(outputs, data.regions, data.clean)]
            rows.append({"variant": variant.name, "steps": training.result.card["steps"], "ms": ms_per_frame,
                         "train_s": train_s, "images": len(noisy),
                         **{k: float(np.nanmean([s[k] for s in scores])) for k in ("psnr", "ssim", "hom", "gcnr")}})
        return rows

    return Job(work, "ablation")


def markdown(rows: list[dict]) -> str:
    lines = ["| variant | training images | steps | PSNR | SSIM | Hom | gCNR | ms / frame |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['images']} | {r['steps']} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
              f"{r['hom']:.3f} | {r['gcnr']:.3f} | {r['ms']:.0f} |" for r in rows]
    return "\n".join(lines)
