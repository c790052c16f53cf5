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
            "hom_after": mean_homogeneity(result), "ms_per_frame": 1000 * seconds / count}


def markdown_table(rows: list[dict]) -> str:
    lines = ["| file | frames | shape | Hom before | Hom after | ms/frame |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['file']} | {r['frames']} | {'x'.join(map(str, r['shape']))} {r['dtype']} | "
              f"{r['hom_before']:.3f} | {r['hom_after']:.3f} | {r['ms_per_frame']:.0f} |" for r in rows]
    return "\n".join(lines)
