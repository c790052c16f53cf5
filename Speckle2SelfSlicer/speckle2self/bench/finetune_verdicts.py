"""Score the fine-tuning runs of `finetune_grid`: what each did to the clip against the method's published
output, and what each of the safeguard's no-reference checks said about it on the held-out frame.

    python -m speckle2self.bench.finetune_verdicts GRID [--weights W] > verdicts.jsonl

One JSON line per run: clip, lr, steps, SSIM / Hom of the clip's three frames before and after (despeckled at
the run's speckle scale), and each check's value before and after (`finetuning.quality_checks` on the held-out
frame, on the grid the run trained on). `finetune_verdicts --table verdicts.jsonl` prints docs/finetune.md's
agree / disagree table.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..finetuning import check_frames, compare, quality_checks
from ..inference import despeckle, resolve_device, training_grain
from ..weights import DEFAULT_WEIGHTS, load_checkpoint
from .finetune_grid import clip_split
from .published import DEFAULT_REFERENCE, clip_frames, scores

HURT = 0.005
"""A run hurt when the clip's mean SSIM to the published output fell by more than this."""


def clip_scores(outputs: np.ndarray, published: list[np.ndarray]) -> dict:
    values = [scores(o / 255.0, p) for o, p in zip(outputs, published)]
    return {m: round(float(np.mean([v[m] for v in values])), 4) for m in ("ssim", "hom")}


def score_runs(grid: Path, weights: Path, reference: Path):
    """Yield one row per saved run in `grid`."""
    device = resolve_device("cpu")
    initial = load_checkpoint(weights)[0]
    grain = training_grain(weights)
    cache: dict[str, tuple] = {}
    for path in sorted(grid.glob("*_*_*.pt"), key=lambda p: (p.stem.split("_")[0], p.stem.split("_")[1],
                                                              int(p.stem.split("_")[2]))):
        clip, lr, steps = path.stem.split("_")
        if clip not in cache:
            inputs = np.stack(clip_frames(reference, "Input", (clip,)))
            published = clip_frames(reference, "Speckle2Self_gamma2.0", (clip,))
            info, _, held_frames = clip_split(inputs, weights)
            factor, held = info["factor"], check_frames(held_frames)
            before = clip_scores(despeckle(inputs, model=initial, scale=factor, precision="fp32"), published)
            cache[clip] = (inputs, published, factor, held, before, quality_checks(initial, held, device, grain))
        inputs, published, factor, held, before, checks_before = cache[clip]
        model = load_checkpoint(path)[0]
        after = clip_scores(despeckle(inputs, model=model, scale=factor, precision="fp32"), published)
        yield {"clip": clip, "lr": lr, "steps": int(steps), "factor": factor, "before": before, "after": after,
               "checks": compare(checks_before, quality_checks(model, held, device, grain))}


def table(rows: list[dict], clips: set[str] | None = None) -> str:
    """Per check (and the product's combination): runs where its verdict agreed with the published output."""
    rows = [r for r in rows if clips is None or r["clip"] in clips]
    hurt = [r["after"]["ssim"] < r["before"]["ssim"] - HURT for r in rows]
    names = list(rows[0]["checks"]) if rows else []
    lines = ["| check | refused runs that hurt | kept runs that hurt | refused runs that helped | agree |",
             "|---|---|---|---|---|"]
    for name in names:
        worse = [r["checks"][name]["worse"] for r in rows]
        lines.append(_line(name, worse, hurt))
    refused = [any(c["worse"] and c["decides"] for c in r["checks"].values()) for r in rows]
    deciding = " + ".join(name for name in names if rows[0]["checks"][name]["decides"])
    lines.append(_line(f"**the safeguard** ({deciding})", refused, hurt))
    return "\n".join(lines)


def _line(name: str, refused: list[bool], hurt: list[bool]) -> str:
    pairs = list(zip(refused, hurt))
    return (f"| {name} | {sum(r and h for r, h in pairs)} of {sum(hurt)} | {sum(not r and h for r, h in pairs)} | "
            f"{sum(r and not h for r, h in pairs)} of {len(pairs) - sum(hurt)} | "
            f"{sum(r == h for r, h in pairs)} of {len(pairs)} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", help="a finetune_grid folder, or with --table its verdicts.jsonl")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--reference", default=str(DEFAULT_REFERENCE))
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args(argv)
    if args.table:
        print(table([json.loads(line) for line in Path(args.grid).read_text().splitlines() if line.strip()]))
        return
    for row in score_runs(Path(args.grid), Path(args.weights), Path(args.reference)):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
