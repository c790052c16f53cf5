"""Fine-tuning runs on each carotid clip of the published reference, saved at several step counts, to judge
fine-tuning budgets and the safeguard's checks against what a clinician would see.

    python -m speckle2self.bench.finetune_grid OUT [--weights W] [--lrs 3e-4,3e-3] [--steps 30,60,120,240,480]
        [--clips 01,02,03,04,05]

Each clip's middle frame is held out (as the product's safeguard holds frames out); the model fine-tunes on
the other two, on the speckle-normalised grid, with the product's recipe (`finetune_config`) at each learning
rate, one run per (clip, rate) saved at each step count: `OUT/<clip>_<lr>_<steps>.pt`, then scored by
`python -m speckle2self.bench.finetune_verdicts OUT`. The published outputs are only read there, to score.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from .. import scale as sc
from ..finetuning import held_out_split, on_grid
from ..inference import training_grain
from ..training import finetune_config, initial_model, train_job
from ..weights import DEFAULT_WEIGHTS, save_checkpoint
from .published import CLIPS, DEFAULT_REFERENCE, clip_frames


def clip_split(frames: np.ndarray, weights: Path) -> tuple[dict, list[np.ndarray], list[np.ndarray]]:
    """The speckle scale chosen for a clip's frames, and its frames on that grid: trained on, held out."""
    info = sc.choose(list(frames), "auto", training_grain(weights))
    return (info, *held_out_split(on_grid([frames], info["factor"])))


def run_clip(frames: np.ndarray, weights: Path, lr: float, steps: list[int], out: Path, name: str) -> dict:
    """Fine-tune on `frames` minus the held-out ones at `lr`; save the model at each of `steps`."""
    info, tuned, held = clip_split(frames, weights)
    model, card = initial_model(weights)
    job = train_job(tuned, finetune_config(tuned, steps=max(steps), lr=lr), init=model, init_card=card)
    wanted = set(steps)

    def snapshot(progress) -> None:
        if progress.done in wanted:
            wanted.discard(progress.done)
            save_checkpoint(model, out / f"{name}_{int(progress.done)}.pt",
                            {"steps": int(progress.done), "lr": lr, "finetune_scale": info})

    job.run(snapshot)
    return {"factor": info["factor"], "held_out": [len(h) for h in held]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--lrs", default="3e-4,3e-3")
    parser.add_argument("--steps", default="30,60,120,240,480")
    parser.add_argument("--clips", default=",".join(CLIPS))
    parser.add_argument("--reference", default=str(DEFAULT_REFERENCE))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = [int(s) for s in args.steps.split(",")]
    for clip in args.clips.split(","):
        frames = np.stack(clip_frames(Path(args.reference), "Input", (clip,)))
        for lr in args.lrs.split(","):
            torch.manual_seed(0)
            info = run_clip(frames, Path(args.weights), float(lr), steps, out, f"{clip}_{lr}")
            print(json.dumps({"clip": clip, "lr": lr, **info}), flush=True)


if __name__ == "__main__":
    main()
