"""Before/after speckle measurements on files: `speckle2self evaluate`."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import frames as fr
from .image_io import read_image
from .inference import despeckle_job
from .metrics import homogeneity


def mean_homogeneity(array: np.ndarray) -> float:
    """GLCM homogeneity averaged over the frames (each frame's own 8-bit display mapping)."""
    layout = fr.validate(array)
    return float(np.mean([homogeneity(fr.grey_frame(array, layout, i)) for i in range(fr.frame_count(layout))]))


def outside_kept(before: np.ndarray, after: np.ndarray) -> float:
    """Share of the pixels outside the imaging sector (frames.background of the input) that are still exactly
    0 after despeckling: 1.0 means no halo; NaN when the input has no such area."""
    layout = fr.validate(before)
    outside = kept = 0
    for i in range(fr.frame_count(layout)):
        mask = fr.background(fr.grey_frame(before, layout, i))
        outside += int(mask.sum())
        kept += int((fr.grey_frame(after, layout, i)[mask] == 0).sum())
    return kept / outside if outside else float("nan")


def evaluate_file(path: Path, **options) -> dict:
    """Homogeneity before and after despeckling one file, with the time per frame."""
    image = read_image(path)
    job = despeckle_job(image.array, **options)
    start = time.perf_counter()
    result = job.run()
    seconds = time.perf_counter() - start
    count = fr.frame_count(fr.validate(image.array))
    return {"file": Path(path).name, "frames": count, "shape": list(image.array.shape),
            "dtype": str(image.array.dtype), "hom_before": mean_homogeneity(image.array),
            "hom_after": mean_homogeneity(result), "outside_kept": outside_kept(image.array, result),
            "ms_per_frame": 1000 * seconds / count}


def markdown_table(rows: list[dict]) -> str:
    lines = ["| file | frames | shape | Hom before | Hom after | outside-sector zeros kept | ms/frame |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['file']} | {r['frames']} | {'x'.join(map(str, r['shape']))} {r['dtype']} | "
              f"{r['hom_before']:.3f} | {r['hom_after']:.3f} | {_share(r['outside_kept'])} | {r['ms_per_frame']:.0f} |"
              for r in rows]
    return "\n".join(lines)


def _share(value: float) -> str:
    return "no such area" if np.isnan(value) else f"{100 * value:.2f}%"
