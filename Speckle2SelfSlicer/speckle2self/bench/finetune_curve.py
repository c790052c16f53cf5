"""Fine-tuning on one held-out real sequence: homogeneity and gCNR against CPU seconds of fine-tuning.

Each budget is a separate fine-tune from the same starting weights, configured exactly as the Slicer
module's fine-tuning (`speckle2self.finetuning.finetune_job`, its safeguard included: a refused run scores as
the un-tuned model).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import frames as fr
from ..errors import UserError
from ..image_io import read_image
from ..inference import despeckle
from ..metrics import gcnr, homogeneity
from ..finetuning import finetune_job
from ..training import FINETUNE_LR
from ..weights import DEFAULT_WEIGHTS
from .sets import REAL_IMAGES, RealImage, shape_mask

HELD_OUT = "pluslibdata/Prostate10_video.igs.mhd"


def _scores(stack: np.ndarray, marked: RealImage) -> dict:
    """Mean whole-frame homogeneity over the frames, and gCNR of the marked regions of the marked frame."""
    top, left, height, width = marked.crop
    crop = stack[marked.frame, top:top + height, left:left + width]
    target, outside = (shape_mask(crop.shape, region) for region in (marked.target, marked.background))
    return {"homogeneity": float(np.mean([homogeneity(frame) for frame in stack])),
            "gcnr": gcnr(crop, target, outside)}


def finetune_curve(data: Path, seconds: tuple[float, ...] = (30, 60, 120), weights: Path | None = None,
                   progress=None, lr: float = FINETUNE_LR) -> list[dict]:
    """Scores of the held-out sequence as given, despeckled by `weights` and after each fine-tuning budget
    (learning rate `lr`, default the module's)."""
    marked = next(image for image in REAL_IMAGES if image.file == HELD_OUT)
    path = Path(data) / HELD_OUT
    if not path.is_file():
        raise UserError(f"Held-out sequence {path} not found", "pass --data with the shared data folder")
    stack = fr.grey_stack(read_image(path).array)
    init = weights or DEFAULT_WEIGHTS
    jobs = [finetune_job([stack], weights=init, minutes=budget / 60, lr=lr) for budget in seconds]  # all checked
    rows = [{"seconds": None, "model": "input", **_scores(stack, marked)},
            {"seconds": 0.0, "model": Path(init).name, **_scores(despeckle(stack, weights=init), marked)}]
    for budget, job in zip(seconds, jobs):
        result = job.run(progress)
        rows.append({"seconds": float(budget), "model": "fine-tuned" if result.accepted else "refused (un-tuned)",
                     "steps": result.card["steps"], **_scores(despeckle(stack, model=result.model), marked)})
    return rows


def carotid_finetune(reference: Path, steps: int, weights: Path | None = None, progress=None) -> list[dict]:
    """Each real carotid clip (of CLIPS, those in the folder) of the published reference despeckled before and after fine-tuning on its own
    3 input frames for `steps` steps (the product's `finetune_job`, safeguard included), scored against the
    method's published output (SSIM, Hom: `published.scores`)."""
    from .published import CLIPS, carotid_set, scores

    rows = []
    for clip in [c for c in CLIPS if (Path(reference) / f"Input_{c}.gif").is_file()] or CLIPS:
        reference_set = carotid_set(Path(reference), (clip,))
        stack = np.stack(reference_set.images)
        result = finetune_job([stack], weights=weights, steps=steps).run(progress)
        outputs = {"before": despeckle(stack, weights=weights), "after": despeckle(stack, model=result.model)}
        row = {"clip": clip, "kept": result.accepted}
        for name, out in outputs.items():
            values = [scores(o, p) for o, p in zip(out, reference_set.published)]
            row[name] = {metric: float(np.mean([v[metric] for v in values])) for metric in ("ssim", "hom")}
        rows.append(row)
    return rows


def carotid_markdown(rows: list[dict]) -> str:
    lines = ["| clip | SSIM before | SSIM after | change | Hom before | Hom after | tuned model kept |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        b, a = r["before"], r["after"]
        lines.append(f"| {r['clip']} | {b['ssim']:.3f} | {a['ssim']:.3f} | {a['ssim'] - b['ssim']:+.3f} | "
                     f"{b['hom']:.3f} | {a['hom']:.3f} | {'yes' if r['kept'] else 'no'} |")
    mean = {k: {m: np.mean([r[k][m] for r in rows]) for m in ("ssim", "hom")} for k in ("before", "after")}
    lines.append(f"| mean | {mean['before']['ssim']:.3f} | {mean['after']['ssim']:.3f} | "
                 f"{mean['after']['ssim'] - mean['before']['ssim']:+.3f} | {mean['before']['hom']:.3f} | "
                 f"{mean['after']['hom']:.3f} | |")
    return "\n".join(lines)


def markdown(rows: list[dict]) -> str:
    lines = ["| fine-tuning (s) | steps | homogeneity | gCNR |", "|---|---|---|---|"]
    for row in rows:
        budget = "input" if row["seconds"] is None else f"{row['seconds']:.0f}"
        lines.append(f"| {budget} | {row.get('steps', 0)} | {row['homogeneity']:.3f} | {row['gcnr']:.3f} |")
    return "\n".join(lines)
