"""Self-supervised training and fine-tuning: MSP, augmentation, reconstruction + consistency loss."""
from __future__ import annotations

import datetime
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import frames as fr
from .augment import augment_together, augmentation
from .errors import UserError
from .inference import resolve_device
from .jobs import Job
from .losses import LossWeights, speckle2self_loss
from .network import HEADS, SCALES, Speckle2SelfNet
from .perturbation import perturb
from .precision import autocast, resolve_precision
from .scale import factor_for, measure, resampled
from .weights import check_output_folder, load_checkpoint, load_optimiser_state, save_checkpoint, sha256


SCHEDULES = ("constant", "cosine")


def learning_rate(config: "TrainConfig", step: int, fraction: float) -> float:
    """The learning rate of step `step` (from 0) when `fraction` of the budget is spent."""
    rate = config.lr * (0.5 * (1 + math.cos(math.pi * min(1.0, fraction))) if config.schedule == "cosine" else 1.0)
    return rate * min(1.0, (step + 1) / config.warmup) if config.warmup else rate


@dataclass
class TrainConfig:
    """Training options; defaults are the released recipe except batch and size (CPU budget)."""

    steps: int | None = None
    minutes: float | None = None
    size: int = 256
    batch: int = 4
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    seed: int = 777
    width: int = 32
    head: str | None = None
    """Decoder head (network.HEADS). None: an `init` model keeps its own, a new model is faithful; a
    different head than the `init` model's is swapped in and calibrated (see `switch_head`)."""
    augment: bool = True
    loss: LossWeights = field(default_factory=LossWeights)
    checkpoint_minutes: float = 10.0
    precision: str = "auto"
    """'auto': the network runs in bf16 autocast where the device does that fast; 'fp32': reference."""
    compile: bool = False
    """Run the network through `torch.compile` (its compile time, tens of seconds, is paid on the first step;
    docs/performance.md measures whether it pays off)."""
    grain: float | None = None
    """Speckle grain (pixels, `scale`) every frame is resampled to before cropping, each by its own measured
    factor; None trains on the frames' own grids (fine-tuning resamples the user's frames itself)."""
    schedule: str = "constant"
    """Learning rate over the budget: 'constant', or 'cosine' (half a cosine from `lr` down to zero at the end of
    the steps or minutes)."""
    warmup: int = 0
    """Steps over which the learning rate rises linearly from zero (Adam's first steps on a trained network are
    as large as `lr` whatever the gradient: a warm-up keeps them from throwing it off)."""
    ema: float | None = None
    """Decay of an exponential moving average of the weights, which is then the result (None: the last weights)."""
    resume: bool = False
    """Restore Adam's state saved beside the `init` checkpoint (`weights.optimiser_path`), so a run that was
    stopped goes on where it was instead of restarting its moment estimates."""

    def validate(self) -> None:
        if (self.steps is None) == (self.minutes is None):
            raise UserError("Give exactly one of steps or minutes", "e.g. --steps 200 or --minutes 30")
        if (self.steps is not None and self.steps < 1) or (self.minutes is not None and self.minutes <= 0):
            raise UserError("The training length must be positive", "e.g. --steps 200 or --minutes 30")
        if self.size < fr.MIN_SIDE or self.size % 16:
            raise UserError(f"Training size {self.size} must be a multiple of 16, at least 16", "e.g. --size 256")
        if self.head is not None and self.head not in HEADS:
            raise UserError(f"Unknown decoder head {self.head!r}", f"use one of {', '.join(HEADS)}")
        if self.batch < 1:
            raise UserError(f"Batch size must be at least 1, got {self.batch}", "e.g. --batch 4")
        if self.grain is not None and not 0 < self.grain < float("inf"):
            raise UserError(f"Training grain {self.grain} must be a positive number of pixels", "e.g. --grain 6")
        if self.schedule not in SCHEDULES:
            raise UserError(f"Unknown learning-rate schedule {self.schedule!r}", f"use one of {', '.join(SCHEDULES)}")
        if self.warmup < 0 or (self.ema is not None and not 0 < self.ema < 1):
            raise UserError("Warm-up steps must be 0 or more and the EMA decay between 0 and 1",
                            "e.g. --warmup 20 --ema 0.99")
        if not 0 < self.lr <= 1:
            raise UserError(f"Learning rate {self.lr} must lie in (0, 1]", "e.g. --lr 1e-3")
        if not all(0 <= w < float("inf") for w in (*self.loss.reconstruction, *self.loss.consistency)):
            raise UserError("Loss weights must be finite and not negative", "e.g. --consistency 1 (the paper's)")


@dataclass
class TrainResult:
    model: Speckle2SelfNet
    card: dict
    history: list[tuple[int, float, float]]
    """(step, seconds, total loss) for every step."""


class CropSampler:
    """Square crops: a source uniformly, then one of its frames, then a position. With `grain`, each frame is
    first resampled so that its speckle grain is `grain` pixels; else crops are at the frames' own grids."""

    def __init__(self, sources: Sequence[np.ndarray], size: int, rng: np.random.Generator,
                 grain: float | None = None):
        self.size, self.rng, self.grain = size, rng, grain
        self.factors: list[float] = []
        self.sources = [[self._prepare(f) for f in (s if s.ndim == 3 else s[None])] for s in sources]

    def _prepare(self, frame: np.ndarray) -> np.ndarray:
        unit, _, _ = fr.normalise(frame.astype(np.float32))
        if self.grain is not None:
            factor = factor_for(measure(unit), self.grain)
            self.factors.append(factor)
            unit = resampled(unit, factor)
        h, w = unit.shape
        pad = ((0, max(0, self.size - h)), (0, max(0, self.size - w)))
        return np.pad(unit, pad, mode="symmetric")

    def crop(self, tries: int = 10) -> np.ndarray:
        """A crop, avoiding flat ones (outside the imaging sector) when possible."""
        for _ in range(tries):
            source = self.sources[self.rng.integers(len(self.sources))]
            frame = source[self.rng.integers(len(source))]
            top = self.rng.integers(frame.shape[0] - self.size + 1)
            left = self.rng.integers(frame.shape[1] - self.size + 1)
            crop = frame[top:top + self.size, left:left + self.size]
            if crop.std() > 0.02:
                break
        return crop

    def batch(self, n: int) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.crop() for _ in range(n)])[:, None].copy())


def fitting_size(sources: Sequence[np.ndarray], size: int) -> int:
    """The crop side for fine-tuning on `sources`: `size`, or the largest multiple of 16 that fits every frame."""
    return min(size, *(min(np.shape(s)[-2:]) // 16 * 16 for s in sources))


FINETUNE_LR = 3e-4
"""Adam learning rate of fine-tuning on the user's data: at least as good as 1e-3 at every budget on the held-out
sequence (docs/finetune.md), and below the 1e-3 of training from scratch, as fine-tuning usually is."""


def finetune_config(sources: Sequence[np.ndarray], steps: int | None = None, minutes: float | None = None,
                    size: int = 256, precision: str = "auto", lr: float = FINETUNE_LR) -> TrainConfig:
    """The one fine-tuning recipe of the CLI, the Slicer module and the fine-tuning curve."""
    return TrainConfig(steps=steps, minutes=minutes, size=fitting_size(sources, size), precision=precision, lr=lr)


def check_sources(sources: Sequence[np.ndarray]) -> list[np.ndarray]:
    if not len(sources):
        raise UserError("No training images were given", "pass at least one image, volume or sequence")
    checked = []
    for s in sources:
        s = np.asarray(s)
        if s.ndim not in (2, 3) or min(s.shape[-2:]) < fr.MIN_SIDE:
            raise UserError(f"Training data of shape {s.shape} is not a grey image or stack of frames",
                            "give (H, W) or (N, H, W) arrays of at least 16x16")
        if not np.isfinite(s).all():
            raise UserError("Training data contains NaN or infinite pixels", "replace them first")
        checked.append(s)
    return checked


def switch_head(model: Speckle2SelfNet, head: str, images: torch.Tensor) -> Speckle2SelfNet:
    """`model`'s weights under another decoder head. The heads share every parameter, so the new model
    loads them all; a linear head then scales and shifts the last transposed convolution so that its
    output fits `images` (the full-scale inputs, which the reconstruction loss asks for) in least squares."""
    switched = Speckle2SelfNet(model.width, head).to(images.device)
    switched.load_state_dict(model.state_dict())
    if head == "linear":
        last = switched.decoder[-1].conv
        with torch.no_grad():
            raw = switched([images] * len(SCALES))[-1].flatten()
            gain, offset = np.polyfit(raw.cpu().double().numpy(), images.flatten().cpu().double().numpy(), 1)
            last.weight.mul_(gain)
            last.bias.mul_(gain).add_(offset)
    return switched


def initial_model(init, width: int = 32, head: str | None = None) -> tuple[Speckle2SelfNet, dict]:
    """The model training starts from, with the card of its checkpoint: a new one for `init` None, `init` itself
    for a model, else the checkpoint at path `init` (its sha256 recorded as the card's init_sha256)."""
    if init is None:
        return Speckle2SelfNet(width, head or "faithful"), {}
    if isinstance(init, Speckle2SelfNet):
        return init, {}
    model, card = load_checkpoint(init)
    return model, {**card, "init_sha256": sha256(Path(init)), "init_file": Path(init).name}


def machine(device: torch.device) -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def train_job(sources: Sequence[np.ndarray], config: TrainConfig | None = None, init=None,
              device: str | torch.device = "auto", out: Path | str | None = None,
              card_extra: dict | None = None, init_card: dict | None = None) -> Job[TrainResult]:
    """A job that trains (or, with `init`, fine-tunes) Speckle2Self on noisy frames only.

    `sources`: grey (H, W) images or (N, H, W) stacks, any intensity range. `init`: None (a new model), a
    checkpoint path or a model (`init_card`: its card, for the cumulative counts). With `out`, the model and
    its card are saved every `checkpoint_minutes` and at the end; on cancel nothing more is written.
    The model is trained in place.
    """
    config = config or TrainConfig()
    config.validate()
    sources = check_sources(sources)
    if out is not None:
        check_output_folder(out)
    dev = resolve_device(device)
    precision = resolve_precision(config.precision, dev)
    model, init_card = initial_model(init, config.width, config.head) if init_card is None else (init, init_card)
    model = model.to(dev)

    resumed = load_optimiser_state(init) if config.resume else None

    def work(job: Job):
        nonlocal model
        seed = config.seed + init_card.get("cumulative_steps", 0)  # a resumed run does not repeat its crops
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        sampler = CropSampler(sources, config.size, rng, config.grain)
        if config.head is not None and config.head != model.head:
            model = switch_head(model.eval(), config.head, sampler.batch(16).to(dev))
        model.train()
        transform = augmentation(config.size, seed)
        optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas)
        if resumed is not None:
            optimiser.load_state_dict(resumed)
            for group in optimiser.param_groups:
                group["betas"] = config.betas
        forward = torch.compile(model) if config.compile else model
        averaged = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema)) if config.ema else None
        history: list[tuple[int, float, float]] = []
        total = config.steps if config.steps is not None else config.minutes * 60
        start = last_save = time.perf_counter()
        step = 0

        def card() -> dict:
            seconds = time.perf_counter() - start
            grain = {"speckle_grain": config.grain, "resampling_factors": _spread(sampler.factors)} \
                if config.grain is not None else {}
            return {**(card_extra or {}), **grain,
                    "config": {**{k: v for k, v in asdict(config).items() if k != "checkpoint_minutes"},
                               "precision": precision, "head": model.head, "width": model.width},
                    "steps": step, "seconds": round(seconds, 1),
                    "cumulative_steps": init_card.get("cumulative_steps", 0) + step,
                    "cumulative_hours": round(init_card.get("cumulative_hours", 0.0) + seconds / 3600, 4),
                    "cumulative_pixels": init_card.get("cumulative_pixels", 0) + step * config.batch * config.size ** 2,
                    "init_sha256": init_card.get("init_sha256") if init is not None else None,
                    "final_loss": history[-1][2] if history else None,
                    "loss_curve": init_card.get("loss_curve", []) + _binned(history, init_card),
                    "machine": machine(dev), "created": datetime.datetime.now().isoformat(timespec="seconds"),
                    "frames": sum(len(s) for s in sampler.sources)}

        yield job.progress(0, total, "training")
        while True:
            elapsed = time.perf_counter() - start
            if (config.steps is not None and step >= config.steps) or \
                    (config.minutes is not None and elapsed >= config.minutes * 60):
                break
            job.check()
            fraction = step / config.steps if config.steps is not None else elapsed / (config.minutes * 60)
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(config, step, fraction)
            perturbed = perturb(sampler.batch(config.batch).to(dev))
            if config.augment:
                per_sample = [augment_together(transform, [p[b] for p in perturbed]) for b in range(config.batch)]
                perturbed = [torch.stack([s[k] for s in per_sample]) for k in range(len(perturbed))]
            with autocast(precision, dev):
                outputs = forward(perturbed)
            losses = speckle2self_loss([o.float() for o in outputs], perturbed, config.loss)
            optimiser.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimiser.step()
            if averaged is not None:
                averaged.update_parameters(model)
            step += 1
            now = time.perf_counter()
            history.append((step, now - start, float(losses["total"].detach())))
            if out is not None and now - last_save >= config.checkpoint_minutes * 60:
                save_checkpoint(model, Path(out), card(), optimiser)
                last_save = now
            done = step if config.steps is not None else now - start
            yield job.progress(done, total, f"step {step} loss {history[-1][2]:.4f}")
        if averaged is not None:
            model.load_state_dict(averaged.module.state_dict())
        model.eval()
        final = save_checkpoint(model, Path(out), card(), optimiser) if out is not None else card()
        return TrainResult(model, final, history)

    return Job(work, "training")


LOSS_BIN = 50
"""Steps averaged into one point of a card's loss curve."""


def _binned(history: list[tuple[int, float, float]], init_card: dict) -> list[list[float]]:
    """This run's losses as [cumulative step, mean loss] every LOSS_BIN steps (the card's loss curve)."""
    offset = init_card.get("cumulative_steps", 0)
    return [[offset + history[min(k + LOSS_BIN, len(history)) - 1][0],
             round(float(np.mean([h[2] for h in history[k:k + LOSS_BIN]])), 6)]
            for k in range(0, len(history), LOSS_BIN)]


def _spread(factors: list[float]) -> dict:
    """Summary of the per-frame resampling factors of a grain-normalised training set."""
    if not factors:
        return {}
    return {"frames": len(factors), "min": min(factors), "median": float(np.median(factors)), "max": max(factors)}


def train(sources: Sequence[np.ndarray], config: TrainConfig | None = None, **options) -> TrainResult:
    """Train or fine-tune and return the result; options as for `train_job`."""
    return train_job(sources, config, **options).run()
