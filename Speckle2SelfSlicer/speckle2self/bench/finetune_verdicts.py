"""Score the fine-tuning runs of `finetune_grid`: what each did to the clip against the method's published
output, and what each of the safeguard's no-reference checks said about it on the held-out frame.

    python -m speckle2self.bench.finetune_verdicts GRID [--weights W] > verdicts.jsonl

One JSON line per run: clip, lr, steps, SSIM / Hom of the clip's three frames before and after (despeckled at
the run's speckle scale), and each check's value before and after (`finetuning.quality_checks` on the held-out
frame, on the grid the run trained on). `finetune_verdicts --table verdicts.jsonl` prints docs/finetune.md's
agree / disagree table (`--margin 0.01`, `--held`: other readings), `--curve 3e-4` its fine-tuning curve.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..finetuning import check_frames, compare, held_out_frames, quality_checks
from ..inference import despeckle, resolve_device, training_grain
from ..weights import DEFAULT_WEIGHTS, load_checkpoint
from .finetune_grid import clip_split
from .published import DEFAULT_REFERENCE, clip_frames, scores

HURT = 0.005
"""A run hurt (helped) when the SSIM to the published output fell (rose) by more than this."""


def clip_scores(outputs: np.ndarray, published: list[np.ndarray]) -> dict:
    """Mean SSIM and Hom over a clip's frames, and each frame's SSIM."""
    values = [scores(o / 255.0, p) for o, p in zip(outputs, published)]
    return {**{m: round(float(np.mean([v[m] for v in values])), 4) for m in ("ssim", "hom")},
            "frames": [round(float(v["ssim"]), 4) for v in values]}


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


def table(rows: list[dict], margin: float = HURT, held: bool = False) -> str:
    """Per check (and the safeguard's decision): how its verdicts matched what the run did to the SSIM to the
    published output, of the whole clip or (`held`) of the held-out frames only; a run hurt when that SSIM fell
    by more than `margin` and helped when it rose by more than `margin`; runs in between are left out."""

    def ssim(scores: dict) -> float:
        frames = scores["frames"]
        return float(np.mean([frames[i] for i in held_out_frames(len(frames))])) if held else scores["ssim"]

    change = [ssim(r["after"]) - ssim(r["before"]) for r in rows]
    rows, hurt = [r for r, c in zip(rows, change) if abs(c) > margin], [c < 0 for c in change if abs(c) > margin]
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


def curve(rows: list[dict], lr: str) -> str:
    """SSIM (and Hom) to the published output of each clip against the steps of fine-tuning at `lr`, and the
    mean over the clips."""
    rows = [r for r in rows if r["lr"] == lr]
    clips, steps = sorted({r["clip"] for r in rows}), sorted({r["steps"] for r in rows})
    cell = {(r["clip"], r["steps"]): r["after"] for r in rows}
    start = {r["clip"]: r["before"] for r in rows}
    lines = ["| clip | out of the box | " + " | ".join(f"{n} steps" for n in steps) + " |",
             "|---|---|" + "---|" * len(steps)]
    for clip in clips:
        lines.append(f"| {clip} | {start[clip]['ssim']:.3f} / {start[clip]['hom']:.3f} | " + " | ".join(
            f"{cell[clip, n]['ssim']:.3f} / {cell[clip, n]['hom']:.3f}" if (clip, n) in cell else "-"
            for n in steps) + " |")
    full = [n for n in steps if all((clip, n) in cell for clip in clips)]
    mean = {n: (np.mean([cell[c, n]["ssim"] for c in clips]), np.mean([cell[c, n]["hom"] for c in clips]))
            for n in full}
    lines.append(f"| mean | {np.mean([start[c]['ssim'] for c in clips]):.3f} / "
                 f"{np.mean([start[c]['hom'] for c in clips]):.3f} | " + " | ".join(
                     f"{mean[n][0]:.3f} / {mean[n][1]:.3f}" if n in mean else "-" for n in steps) + " |")
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
    parser.add_argument("--margin", type=float, default=HURT, help="with --table: SSIM change that counts")
    parser.add_argument("--held", action="store_true", help="with --table: SSIM of the held-out frames only")
    parser.add_argument("--curve", metavar="LR", help="print SSIM / Hom per clip against the steps at this rate")
    args = parser.parse_args(argv)
    if args.table or args.curve:
        rows = [json.loads(line) for line in Path(args.grid).read_text().splitlines() if line.strip()]
        print(curve(rows, args.curve) if args.curve else table(rows, args.margin, args.held))
        return
    for row in score_runs(Path(args.grid), Path(args.weights), Path(args.reference)):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
