"""Fine-tuning levers at an equal number of steps: each variant of the product's recipe fine-tunes the model on
each chosen carotid clip (its two non-held-out frames, speckle-normalised grid, as `finetune_grid`), scored on
the clip's three frames against the method's published output.

    python -m speckle2self.bench.finetune_levers [--weights W] [--steps 120] [--clips 01,02,03] [--variants ...]

One JSON line per (variant, clip) and a markdown table at the end (docs/ablation.md). Steps, not minutes, so
runs on a busy machine compare; the step cost of a variant (crop pixels per step) is the same unless its
name says otherwise. Adam's-state variant: the weights' training run must have saved it beside them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from ..inference import despeckle
from ..training import finetune_config, train_job
from ..weights import DEFAULT_WEIGHTS
from .finetune_grid import clip_split
from .finetune_verdicts import clip_scores
from .published import DEFAULT_REFERENCE, clip_frames

VARIANTS = {
    "recipe (lr 3e-4, constant)": {},
    "lr 1e-3": {"lr": 1e-3},
    "lr 1e-3, 20-step warm-up": {"lr": 1e-3, "warmup": 20},
    "lr 3e-4, cosine decay": {"schedule": "cosine"},
    "lr 3e-4, EMA 0.95": {"ema": 0.95},
    "crops 128 x 128, batch 16 (same pixels)": {"size": 128, "batch": 16},
    "crops 512 x 512, batch 1 (same pixels)": {"size": 512, "batch": 1},
    "fp32 (no bf16 autocast)": {"precision": "fp32"},
    "Adam's state from training restored (needs WEIGHTS.adam.pt)": {"resume": True},
}


def run(frames: np.ndarray, weights: Path, steps: int, overrides: dict) -> dict:
    """Fine-tune on the clip's non-held-out frames with the recipe changed by `overrides`; the clip's scores."""
    info, tuned, _ = clip_split(frames, weights)
    config = dataclasses.replace(finetune_config(tuned, steps=steps), **overrides)
    torch.manual_seed(0)
    model = train_job(tuned, config, init=weights).run().model
    return despeckle(frames, model=model, scale=info["factor"], precision="fp32")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--clips", default="01,02,03")
    parser.add_argument("--variants", help="comma-separated indices into VARIANTS (default all)")
    parser.add_argument("--reference", default=str(DEFAULT_REFERENCE))
    args = parser.parse_args(argv)
    names = list(VARIANTS)
    chosen = [names[int(i)] for i in args.variants.split(",")] if args.variants else names
    rows = []
    for name in chosen:
        for clip in args.clips.split(","):
            frames = np.stack(clip_frames(Path(args.reference), "Input", (clip,)))
            published = clip_frames(Path(args.reference), "Speckle2Self_gamma2.0", (clip,))
            scores = clip_scores(run(frames, Path(args.weights), args.steps, VARIANTS[name]), published)
            rows.append({"variant": name, "clip": clip, **scores})
            print(json.dumps(rows[-1]), flush=True)
    print("| variant | " + " | ".join(f"SSIM {c}" for c in args.clips.split(",")) + " | mean SSIM | mean Hom |")
    print("|---|" + "---|" * (len(args.clips.split(",")) + 2))
    for name in chosen:
        mine = [r for r in rows if r["variant"] == name]
        print(f"| {name} | " + " | ".join(f"{r['ssim']:.3f}" for r in mine) +
              f" | {np.mean([r['ssim'] for r in mine]):.4f} | {np.mean([r['hom'] for r in mine]):.3f} |")


if __name__ == "__main__":
    main()
