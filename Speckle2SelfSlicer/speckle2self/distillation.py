"""Distillation: a narrower Speckle2Self network trained to reproduce a trained one on unlabelled frames.

The student has the teacher's architecture at a smaller width (16: a quarter of the operations of the
paper's 32), so it loads, despeckles and fine-tunes like any checkpoint (`--model fast`). Each step the
student copies the teacher's full-scale branch (the despeckling path) and, in turn, one of the two
smaller-scale branches (so its three encoders stay fit for fine-tuning with the Speckle2Self loss).
The frames are random crops of the user's noisy images under the released augmentation plus a random
display gamma, so every crop is a new input; no clean image and no published output is involved. A teacher
trained at a speckle grain (its card's `speckle_grain`) is copied on frames resampled to that grain, the grid
it despeckles at, and the student inherits the grain.
"""
from __future__ import annotations

import datetime
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .augment import augment_together, augmentation
from .errors import UserError
from .inference import resolve_device
from .jobs import Job
from .network import SCALES, Speckle2SelfNet
from .perturbation import perturb
from .precision import autocast, resolve_precision
from .training import CropSampler, check_sources, initial_model, machine
from .weights import DEFAULT_WEIGHTS, check_output_folder, save_checkpoint

GAMMA_RANGE = (0.5, 2.0)
"""Display gammas drawn (log-uniformly) for the crops: the teacher is copied on brighter and darker frames than
the data holds."""


@dataclass
class DistilConfig:
    minutes: float | None = 60.0
    steps: int | None = None
    """The run's length: `minutes`, or instead (minutes None) a number of steps."""
    width: int = 16
    size: int = 256
    batch: int = 4
    lr: float = 1e-3
    """Adam's peak learning rate; it decays to zero along a cosine over the run's minutes."""
    seed: int = 777
    checkpoint_minutes: float = 5.0
    precision: str = "auto"

    def validate(self) -> None:
        if (self.steps is None) == (self.minutes is None):
            raise UserError("Give exactly one of steps or minutes", "e.g. --minutes 60")
        if not (self.steps or self.minutes or 0) > 0:
            raise UserError("The distillation length must be positive", "e.g. --minutes 60")
        if not 1 <= self.width <= 256:
            raise UserError(f"Student width {self.width} must lie in 1..256", "e.g. --width 16")
        if self.size < 16 or self.size % 16 or self.batch < 1:
            raise UserError(f"Crop size {self.size} must be a multiple of 16 and batch {self.batch} at least 1",
                            "e.g. --size 256 --batch 4")
        if not 0 < self.lr <= 1:
            raise UserError(f"Learning rate {self.lr} must lie in (0, 1]", "e.g. --lr 1e-3")


def _branch(model: Speckle2SelfNet, scale: int, x: torch.Tensor) -> torch.Tensor:
    return model.decoder(model.encoders[scale](x))


def _gamma_crops(sampler: CropSampler, n: int, rng: np.random.Generator) -> torch.Tensor:
    gammas = np.exp(rng.uniform(*np.log(GAMMA_RANGE), size=(n, 1, 1, 1))).astype(np.float32)
    return sampler.batch(n) ** torch.from_numpy(gammas)


def distil_job(sources: Sequence[np.ndarray], teacher=None, config: DistilConfig | None = None,
               device: str | torch.device = "auto", out: Path | str | None = None,
               card_extra: dict | None = None, init: Path | str | None = None) -> Job[tuple[Speckle2SelfNet, dict]]:
    """A job that trains a student of `config.width` to reproduce `teacher` (a checkpoint path, a model, or
    None: the shipped model) on crops of `sources`; with `out` it is saved every `checkpoint_minutes` and at
    the end. `init`: a student checkpoint of the same teacher and width to go on from (its card's counts carry
    over). Returns the student and its card."""
    config = config or DistilConfig()
    config.validate()
    sources = check_sources(sources)
    if out is not None:
        check_output_folder(out)
    dev = resolve_device(device)
    precision = resolve_precision(config.precision, dev)
    teacher, teacher_card = initial_model(teacher if teacher is not None else DEFAULT_WEIGHTS)
    teacher = teacher.to(dev).eval().requires_grad_(False)
    grain = teacher_card.get("speckle_grain")
    start_student, init_card = _initial_student(init, config.width, teacher, teacher_card)

    def work(job: Job):
        seed = config.seed + init_card.get("cumulative_steps", 0)  # a continued run does not repeat its crops
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        sampler = CropSampler(sources, config.size, rng, grain)
        transform = augmentation(config.size, seed)
        student = (start_student or Speckle2SelfNet(config.width, teacher.head)).to(dev).train()
        optimiser = torch.optim.Adam(student.parameters(), lr=config.lr)
        budget = config.steps if config.minutes is None else config.minutes * 60
        start = last_save = time.perf_counter()
        step, loss = 0, float("nan")

        def done() -> float:
            return step if config.minutes is None else time.perf_counter() - start

        def card() -> dict:
            seconds = time.perf_counter() - start
            return {**(card_extra or {}), **({"speckle_grain": grain} if grain is not None else {}),
                    "distillation": {**asdict(config), "precision": precision},
                    "teacher_sha256": teacher_card.get("init_sha256"), "steps": step,
                    "seconds": round(seconds, 1), "cumulative_steps": init_card.get("cumulative_steps", 0) + step,
                    "cumulative_hours": round(init_card.get("cumulative_hours", 0.0) + seconds / 3600, 4),
                    **({"init_sha256": init_card["init_sha256"]} if init_card else {}), "final_loss": loss,
                    "machine": machine(dev), "created": datetime.datetime.now().isoformat(timespec="seconds")}

        yield job.progress(0, budget, "distilling")
        while (progress := done()) < budget:
            job.check()
            for group in optimiser.param_groups:
                group["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * progress / budget))
            crops = [augment_together(transform, [c])[0] for c in _gamma_crops(sampler, config.batch, rng)]
            perturbed = perturb(torch.stack(crops).to(dev))
            branches = (len(SCALES) - 1, step % (len(SCALES) - 1))
            with torch.no_grad(), autocast(precision, dev):
                targets = [_branch(teacher, b, perturbed[b]).float() for b in branches]
            with autocast(precision, dev):
                outputs = [_branch(student, b, perturbed[b]).float() for b in branches]
            total = sum(F.mse_loss(o, t) for o, t in zip(outputs, targets))
            optimiser.zero_grad(set_to_none=True)
            total.backward()
            optimiser.step()
            step, loss = step + 1, float(total.detach())
            now = time.perf_counter()
            if out is not None and now - last_save >= config.checkpoint_minutes * 60:
                save_checkpoint(student, Path(out), card())
                last_save = now
            yield job.progress(done(), budget, f"step {step} loss {loss:.2e}")
        student.eval()
        return student, (save_checkpoint(student, Path(out), card()) if out is not None else card())

    return Job(work, "distilling")


def _initial_student(init, width: int, teacher: Speckle2SelfNet, teacher_card: dict
                     ) -> tuple[Speckle2SelfNet | None, dict]:
    """The student checkpoint `init` and its card, checked to be of `width` and distilled from this teacher
    (a student of another teacher is no head start and its counts would mislead); (None, {}) without `init`."""
    if init is None:
        return None, {}
    student, card = initial_model(init)
    if (student.width, student.head) != (width, teacher.head):
        raise UserError(f"The student {init} has width {student.width} and head {student.head}, not {width} and "
                        f"{teacher.head}", f"pass --width {student.width} or start without --init")
    if card.get("teacher_sha256") != teacher_card.get("init_sha256"):
        raise UserError(f"The student {init} was distilled from another teacher",
                        "pass that teacher with --teacher, or start without --init")
    return student, card

