"""The real reference: the method's own published output on real carotid scans
(`../shared/reference/carotid_published`, evaluation only), scored with the protocol of its README, with
numbers identical to its `evaluate_published.py`.

Protocol: each GIF frame read as 8-bit grey; an output frame is shown as the file `despeckle` would write
(8-bit grey), then with display gamma 2 (min-max to [0, 1], squared, rounded to 8 bits); SSIM to the
published gamma-2 frame (both min-max to [0, 1], Gaussian window sigma 1.5) and Hom (GLCM homogeneity,
64 levels) of the shown frame, each the mean over the frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..metrics import homogeneity, ssim
from .calibration import calibrated
from .peers.learned import TrainingSet
from .sets import DEFAULT_DATA, TestSet, eight_bit

DEFAULT_REFERENCE = DEFAULT_DATA.parent / "reference" / "carotid_published"
"""The shared reference folder beside the repository."""
CLIPS = ("01", "02", "03", "04", "05")
PEER_CLIPS = ("01", "02", "03")
"""The clips on which the paper's peers' outputs are published."""
GAMMA = 2.0
PAPER_PEERS = {"nlm": "NLM", "bm3d": "BM3D", "srad": "SRAD", "obnlm": "OBNLM", "dipSingle": "Deep Image Prior",
               "n2v": "Noise2Void", "n2sSingle": "Noise2Self", "neigh2neigh": "Neighbor2Neighbor",
               "zsn2nSingle": "ZS-N2N"}
"""File prefix -> name of the paper's peer outputs (on PEER_CLIPS)."""
PUBLISHED = "Speckle2Self"
"""File prefix of the authors' own output without display gamma (on every clip)."""


def gif_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a (palette) GIF as 8-bit grey."""
    from PIL import Image

    if not Path(path).is_file():
        raise UserError(f"Reference file {path} is missing", "pass --reference with the carotid_published folder")
    with Image.open(path) as image:
        frames = []
        for k in range(getattr(image, "n_frames", 1)):
            image.seek(k)
            frames.append(np.array(image.convert("L")))
    return frames


def clip_frames(folder: Path, prefix: str, clips: tuple[str, ...]) -> list[np.ndarray]:
    return [frame for clip in clips for frame in gif_frames(Path(folder) / f"{prefix}_{clip}.gif")]


def unit(image: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] (a constant frame maps to zeros)."""
    image = np.asarray(image, dtype=np.float64)
    lo, hi = image.min(), image.max()
    return (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)


def gamma8(image: np.ndarray, gamma: float = GAMMA) -> np.ndarray:
    """The frame as the paper shows it: min-max, raised to `gamma`, rounded to 8 bits."""
    return np.round(255 * unit(image) ** gamma).astype(np.uint8)


def shown(output: np.ndarray) -> np.ndarray:
    """An output in the [0, 1] display domain as it is scored: written as 8-bit grey, then gamma 2."""
    return gamma8(eight_bit(output))


def scores(output: np.ndarray, published: np.ndarray) -> dict[str, float]:
    """SSIM of the shown output to the published gamma-2 frame, and its Hom."""
    frame = shown(output)
    return {"ssim": ssim(unit(frame), unit(published)), "hom": homogeneity(frame)}


def clip_of(label: str) -> str:
    """The clip of a frame label of `carotid_set`."""
    return label.split()[1]


def clip_span(labels: list[str]) -> str:
    """The clips of frame labels, as "clip 01" or "clips 01-05"."""
    first, last = clip_of(labels[0]), clip_of(labels[-1])
    return f"clip {first}" if first == last else f"clips {first}-{last}"


def carotid_set(folder: Path, clips: tuple[str, ...] = CLIPS, count: int | None = None) -> TestSet:
    """The input frames of `clips` (the first `count`, default all) in [0, 1] (8-bit grey / 255) with the
    published gamma-2 frame of each; the self-supervised methods train on these same inputs (allowed: they
    are not the published outputs)."""
    if not Path(folder).is_dir():
        raise UserError(f"Reference folder {folder} not found", "pass --reference with the carotid_published folder")
    inputs = [gif_frames(Path(folder) / f"Input_{clip}.gif") for clip in clips]
    labels = [f"clip {clip} frame {k + 1}" for clip, frames in zip(clips, inputs) for k in range(len(frames))]
    images = [(frame / 255).astype(np.float32) for frames in inputs for frame in frames][:count]
    return TestSet("carotid", images, labels[:count], [{} for _ in images], TrainingSet(noisy=images),
                   published=clip_frames(folder, f"{PUBLISHED}_gamma{GAMMA:.1f}", clips)[:count])


@dataclass
class PaperRow:
    """A published output scored as a benchmarked method is: the frames it covers and, per chain ("raw",
    "calibrated": the chain every benchmarked method gets) and metric, one value per frame."""

    name: str
    labels: list[str]
    scores: dict[str, dict[str, list[float]]]


def paper_rows(folder: Path, clips: tuple[str, ...], count: int | None = None) -> list[PaperRow]:
    """The published outputs as rows: the authors' Speckle2Self (no gamma) on `clips`, then each of the
    paper's peers on the PEER_CLIPS among them; the first `count` frames of each (default all)."""
    peer_clips = tuple(c for c in clips if c in PEER_CLIPS)
    files = [(f"{PUBLISHED} (authors' model, published)", PUBLISHED, clips)]
    files += [(name, prefix, peer_clips) for prefix, name in PAPER_PEERS.items() if peer_clips]
    rows = []
    for name, prefix, chosen in files:
        reference = carotid_set(folder, chosen, count)
        outputs = [frame / 255 for frame in clip_frames(folder, prefix, chosen)[:count]]
        chains = {"raw": outputs, "calibrated": [calibrated(o, i) for o, i in zip(outputs, reference.images)]}
        per_chain = {}
        for chain, frames in chains.items():
            values = [scores(o, p) for o, p in zip(frames, reference.published)]
            per_chain[chain] = {metric: [v[metric] for v in values] for metric in ("ssim", "hom")}
        rows.append(PaperRow(name, reference.labels, per_chain))
    return rows


def clip_scores(outputs: np.ndarray, published: list[np.ndarray]) -> dict[str, float]:
    """Mean SSIM and Hom of a clip's despeckled 8-bit frames (as `despeckle` writes them) with the protocol."""
    values = [scores(o / 255, p) for o, p in zip(outputs, published)]
    return {metric: float(np.mean([v[metric] for v in values])) for metric in ("ssim", "hom")}


def comparison_figure(folder: Path, out: Path, weights: Path | None = None,
                      frames: tuple[tuple[str, int], ...] = (("01", 0), ("03", 1), ("05", 2)),
                      finetune_steps: int | None = None) -> tuple[Path, dict[str, dict[str, dict[str, float]]]]:
    """A PNG of real carotid frames, one row each: input | published | ours, all shown at display gamma 2 as
    the paper shows them (ours: `despeckle` of the clip's frames as one sequence, with its defaults and `weights`,
    default the shipped model); with `finetune_steps`, a fourth column: the same after fine-tuning on the clip's
    own input frames for that many steps (the product's `finetune_job`, safeguard included). Also returns
    each shown clip's scores over all its frames (`clip_scores`), per column of ours."""
    from ..finetuning import finetune_job
    from ..image_io import write_image
    from ..inference import despeckle

    rows, scored = [], {}
    for clip, k in frames:
        inputs = gif_frames(Path(folder) / f"Input_{clip}.gif")
        published = gif_frames(Path(folder) / f"{PUBLISHED}_gamma{GAMMA:.1f}_{clip}.gif")
        sequence = np.stack(inputs)
        ours = {"out of the box": despeckle(sequence, weights=weights)}
        if finetune_steps:
            tuned = finetune_job([sequence], weights=weights, steps=finetune_steps).run().model
            ours[f"fine-tuned {finetune_steps} steps"] = despeckle(sequence, model=tuned)
        scored[clip] = {name: clip_scores(output, published) for name, output in ours.items()}
        columns = [gamma8(inputs[k]), published[k], *(gamma8(output[k]) for output in ours.values())]
        gap = np.zeros((inputs[k].shape[0], 4), np.uint8)
        rows.append(np.concatenate([c for column in columns for c in (column, gap)][:-1], axis=1))
    band = np.zeros((4, rows[0].shape[1]), np.uint8)
    write_image(Path(out), np.concatenate([r for row in rows for r in (row, band)][:-1]), force=True)
    return Path(out), scored
