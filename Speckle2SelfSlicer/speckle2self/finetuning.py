"""Fine-tuning on the user's own frames, as the CLI, the Python API and the Slicer module do it.

It always starts from the chosen weights (the shipped model unless others are given) and ends with a
safeguard: some of the user's frames are held out of fine-tuning (`held_out_split`), the tuned and the
un-tuned model despeckle them, and the tuned one is kept only if it is not worse on the deciding no-reference
checks (DECIDING: the Speckle2Self loss on those unseen frames, the structure left in their residual, and their
homogeneity).
Otherwise the un-tuned model is returned and the result says why. Nothing here looks at a clean image.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import frames as fr
from . import scale as sc
from .inference import despeckle, resolve_device, training_grain
from .jobs import Job, follow
from .losses import speckle2self_loss
from .metrics import edge_sharpness, homogeneity, residual_structure
from .network import DOWNSAMPLING, Speckle2SelfNet
from .perturbation import perturb
from .training import FINETUNE_LR, TrainResult, check_sources, finetune_config, initial_model, train_job
from .weights import DEFAULT_WEIGHTS

CHECK_FRAMES = 8
"""Frames (evenly spread over the sources) the safeguard despeckles with both models."""
CHECK_SIDE = 512
"""The safeguard looks at the central CHECK_SIDE x CHECK_SIDE part of larger frames (bounded cost)."""
MAX_FRAMES = 64
"""Frames (evenly spread over the sources) fine-tuning trains on: a long cine's neighbouring frames add little
and every frame is held in memory on the resampled grid."""
HELD_OUT_EVERY = 4
"""One frame in HELD_OUT_EVERY is kept out of fine-tuning for the safeguard."""
MIN_HELD_WIDTH = 128
"""Narrowest held-out part of a single image: the network's quarter-scale branch needs 2 x 2 positions."""
TOLERANCE = {"loss": 0.02, "homogeneity": 0.01, "sharpness": 0.02, "residual": 0.05}
"""How much worse than the un-tuned model each check may come out (relative for RELATIVE ones, else absolute)
before it counts as worse."""
RELATIVE = frozenset({"loss", "sharpness"})
LOWER_IS_BETTER = frozenset({"loss", "residual"})
DECIDING = ("loss", "residual", "homogeneity")
"""The checks whose 'worse' refuses a fine-tuned model: the loss on unseen frames and the residual check (fixed
before any comparison with a reference), and homogeneity, which stops a run from undoing the smoothing of a
model that was trained to smooth more than the paper's loss asks (both other checks prefer a less smooth
output, docs/finetune.md); edge sharpness is reported. docs/finetune.md compares every check's verdicts with
the method's published output on real carotid clips and with the clean images of simulated scans."""


@dataclass
class FinetuneResult(TrainResult):
    accepted: bool = True
    """False when the safeguard kept the un-tuned model (`model` is then the un-tuned one)."""
    checks: dict | None = None
    """Each check's value for the un-tuned ('before') and the tuned ('after') model."""

    @property
    def verdict(self) -> str:
        """One line for the user on what the safeguard decided."""
        if self.accepted:
            return "Fine-tuning kept: not worse than the un-tuned model on the frames it did not train on"
        worse = ", ".join(name for name, c in self.checks.items() if c["worse"] and c["decides"])
        return f"Fine-tuning made the result worse ({worse}): the un-tuned model was used"


def _evenly(sources: Sequence[np.ndarray], most: int) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """The sources as stacks, and (stack, frame) of up to `most` of their frames, evenly spread over all."""
    stacks = [s if s.ndim == 3 else s[None] for s in sources]
    every = [(k, i) for k, s in enumerate(stacks) for i in range(len(s))]
    return stacks, [every[j] for j in sc.spread(len(every), most)]


def check_frames(sources: Sequence[np.ndarray]) -> np.ndarray:
    """Up to CHECK_FRAMES frames of `sources`, evenly spread, centre-cropped to a common side of at most
    CHECK_SIDE (a multiple of the network's stride), normalised to [0, 1]."""
    stacks, picked = _evenly(sources, CHECK_FRAMES)
    side = min(CHECK_SIDE, *(min(s.shape[-2:]) for s in stacks)) // DOWNSAMPLING * DOWNSAMPLING
    crops = []
    for k, i in picked:
        frame = stacks[k][i]
        top, left = (frame.shape[0] - side) // 2, (frame.shape[1] - side) // 2
        crops.append(fr.normalise(frame[top:top + side, left:left + side].astype(np.float32))[0])
    return np.stack(crops)


def quality_checks(model: Speckle2SelfNet, frames: np.ndarray, device: torch.device,
                   grain: float = sc.REFERENCE_GRAIN) -> dict[str, float]:
    """No-reference scores of `model` on normalised `frames` (speckle grain `grain` pixels): the Speckle2Self
    loss of the network (how well its outputs fit the perturbed frames and agree; lower is better), and of the
    frames as `despeckle` delivers them (post-processing included: what the user sees) the homogeneity and edge
    sharpness (both higher is better) and the structure left in the residual (`metrics.residual_structure`
    over a grain; lower is better)."""
    x = torch.from_numpy(frames[:, None]).to(device)
    model = model.to(device).eval()
    with torch.inference_mode():
        perturbed = perturb(x)
        loss = float(speckle2self_loss(model(perturbed), perturbed)["total"])
    out = despeckle(frames, model=model, device=device, precision="fp32", scale=1)
    return {"loss": loss, "homogeneity": float(np.mean([homogeneity(o) for o in out])),
            "sharpness": float(np.mean([edge_sharpness(o) for o in out])),
            "residual": float(np.mean([residual_structure(f, o, grain) for f, o in zip(frames, out)]))}


def compare(before: dict[str, float], after: dict[str, float]) -> dict[str, dict]:
    """Each check with its two values, whether the tuned model is worse beyond TOLERANCE, and whether that check
    decides (DECIDING)."""

    def worse(name: str) -> bool:
        margin = TOLERANCE[name] * (abs(before[name]) if name in RELATIVE else 1.0)
        if name in LOWER_IS_BETTER:
            return after[name] > before[name] + margin
        return after[name] < before[name] - margin

    return {name: {"before": round(before[name], 5), "after": round(after[name], 5), "worse": worse(name),
                   "decides": name in DECIDING} for name in before}


def on_grid(sources: Sequence[np.ndarray], factor: float) -> list[np.ndarray]:
    """Up to MAX_FRAMES frames of `sources`, evenly spread, each normalised to [0, 1] and resampled by
    `factor` (as despeckling resamples them), one float32 stack per source that keeps any."""
    stacks, picked = _evenly(sources, MAX_FRAMES)
    kept: dict[int, list[np.ndarray]] = {}
    for k, i in picked:
        kept.setdefault(k, []).append(sc.resampled(fr.normalise(stacks[k][i])[0], factor))
    return [np.stack(frames) for frames in kept.values()]


def held_out_frames(count: int) -> list[int]:
    """Which of `count` (two or more) frames the safeguard holds out: one in HELD_OUT_EVERY, at least one, at
    most CHECK_FRAMES, evenly spread."""
    held_count = min(CHECK_FRAMES, max(1, round(count / HELD_OUT_EVERY)))
    return [int((j + 0.5) * count / held_count) for j in range(held_count)]


def held_out_split(stacks: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The frames fine-tuning trains on and those the safeguard judges it on, which it never saw: of two frames
    or more, those of `held_out_frames`; of a single image, its right quarter (at least MIN_HELD_WIDTH; an
    image narrower than twice that is judged on itself)."""
    count = sum(len(s) for s in stacks)
    if count == 1:
        frame = stacks[0][0]
        if frame.shape[1] < 2 * MIN_HELD_WIDTH:
            return list(stacks), list(stacks)
        cut = frame.shape[1] - max(MIN_HELD_WIDTH, frame.shape[1] // 4 // DOWNSAMPLING * DOWNSAMPLING)
        return [frame[None, :, :cut]], [frame[None, :, cut:]]
    held = held_out_frames(count)
    tuned: list[np.ndarray] = []
    unseen: list[np.ndarray] = []
    start = 0
    for stack in stacks:
        mask = np.isin(np.arange(start, start + len(stack)), held)
        start += len(stack)
        tuned += [stack[~mask]] if (~mask).any() else []
        unseen += [stack[mask]] if mask.any() else []
    return tuned, unseen


def finetune_job(sources: Sequence[np.ndarray], weights: Path | str | None = None, steps: int | None = None,
                 minutes: float | None = None, size: int = 256, precision: str = "auto", lr: float = FINETUNE_LR,
                 device: str | torch.device = "auto", card_extra: dict | None = None,
                 scale: float | str = "auto") -> Job[FinetuneResult]:
    """A job that fine-tunes the model in `weights` (None: the shipped model) on `sources` (grey (H, W)
    images or (N, H, W) stacks) for `steps` or `minutes`, then keeps it only if the safeguard finds it no
    worse than the un-tuned model on the user's own frames. It trains and checks on the grid despeckling
    uses (`scale` as for `despeckle_job`: 'auto' resamples the frames so that their speckle grain is the
    model's training grain); the job's `info` says which. Options are checked before any work; the
    despeckling precision 'int8' fine-tunes at 'auto'."""
    sources = check_sources(sources)
    grain = training_grain(weights)
    stacks, picked = _evenly(sources, sc.MEASURED_FRAMES)
    info = sc.choose([stacks[k][i] for k, i in picked], scale, grain)
    tuned, held = held_out_split(on_grid(sources, info["factor"]))
    config = finetune_config(tuned, steps, minutes, size, "auto" if precision == "int8" else precision, lr)
    model, card = initial_model(Path(weights) if weights is not None else DEFAULT_WEIGHTS)
    initial = copy.deepcopy(model)  # training moves `model` in place
    extra = {**(card_extra or {}), "speckle_grain": grain, "finetune_scale": info}
    training = train_job(tuned, config, init=model, init_card=card, device=device, card_extra=extra)
    frames = check_frames(held)
    dev = resolve_device(device)

    def work(job: Job):
        before = quality_checks(initial, frames, dev, grain)
        result = yield from follow(job, training)
        checks = compare(before, quality_checks(result.model, frames, dev, grain))
        accepted = not any(c["worse"] and c["decides"] for c in checks.values())
        card = {**result.card, "finetune_checks": checks, "finetune_accepted": accepted}
        return FinetuneResult(result.model if accepted else initial.eval(), card, result.history, accepted, checks)

    return Job(work, "fine-tuning", info={"scale": info})


def finetune(sources: Sequence[np.ndarray], **options) -> FinetuneResult:
    """Fine-tune and return the result; options as for `finetune_job`."""
    return finetune_job(sources, **options).run()
