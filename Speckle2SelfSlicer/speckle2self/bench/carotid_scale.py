"""SSIM / Hom to the method's published carotid output, per clip, of a model at several speckle scales.

    python -m speckle2self.bench.carotid_scale [--weights FILE] [--scales 1,auto,2]

The 15 input frames of clips 01-05 are despeckled as one stack (fp32), as `evaluate_published.py` does, and
scored with `published.scores`; one JSON line per scale. Evaluation only: nothing here trains or tunes.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from ..inference import despeckle
from .published import CLIPS, DEFAULT_REFERENCE, clip_frames, scores


def carotid_scores(outputs: np.ndarray, published: list[np.ndarray]) -> dict:
    """Mean SSIM and Hom over the frames, and the SSIM of each clip (three frames each)."""
    per = [scores(o / 255.0, p) for o, p in zip(outputs, published)]
    clips = {c: round(float(np.mean([s["ssim"] for s in per[3 * i:3 * i + 3]])), 3) for i, c in enumerate(CLIPS)}
    return {"ssim": round(float(np.mean([s["ssim"] for s in per])), 4),
            "hom": round(float(np.mean([s["hom"] for s in per])), 4), "clips": clips}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights")
    parser.add_argument("--scales", default="1,auto")
    parser.add_argument("--reference", default=str(DEFAULT_REFERENCE))
    args = parser.parse_args(argv)
    inputs = np.stack(clip_frames(args.reference, "Input", CLIPS))
    published = clip_frames(args.reference, "Speckle2Self_gamma2.0", CLIPS)
    for scale in args.scales.split(","):
        out = despeckle(inputs, weights=args.weights, scale=scale, precision="fp32")
        print(json.dumps({"scale": scale, **carotid_scores(out, published)}), flush=True)


if __name__ == "__main__":
    main()
