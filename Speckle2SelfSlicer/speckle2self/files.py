"""One image file in, one out: the per-file work of `speckle2self despeckle` and of each `batch` task."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import numpy as np

from . import frames as fr
from .image_io import read_image, write_image
from .inference import despeckle_job
from .jobs import Job


SCALE_KEY = "Speckle2Self_scale"
"""Metadata key of a despeckled file: the resampling factor, the measured grain and the model's grain."""


def despeckle_file(source: Path, target: Path, *, weights: Path | str | None = None, force: bool = False,
                   compress: bool | None = None, preview: Path | None = None,
                   run: Callable[[Job], np.ndarray] = Job.run,
                   tune: Callable[[np.ndarray], object] | None = None, **options) -> int:
    """Despeckle the file `source` into `target` (same format, geometry and metadata, written atomically)
    and return its number of frames. The target, pixels, weights and memory are checked before any work.
    `options` go to `despeckle_job`; `tune(grey frames)` may return a fine-tuned model to use instead of
    `weights`; `run(job)` drives the job (e.g. under a progress bar); `preview` also writes a before/after
    PNG of the middle frame. The output's metadata records the speckle scale the job used (SCALE_KEY, JSON)."""
    image = read_image(source)
    write_image(target, image.array, like=image, force=force, check_only=True)
    job = despeckle_job(image.array, weights=weights, **options)  # checks pixels, weights, memory first
    if tune is not None:
        job = despeckle_job(image.array, model=tune(fr.grey_stack(image.array)), weights=weights, **options)
    frames = fr.frame_count(fr.validate(image.array))
    result = run(job)
    image = dataclasses.replace(image, metadata={**image.metadata, SCALE_KEY: json.dumps(job.info["scale"])})
    if preview is None:  # free the input before writing: SimpleITK copies the result once more
        del job
        image = image.without_pixels()
    write_image(target, result, like=image, force=force, compress=compress)
    if preview is not None:
        from .preview import side_by_side

        write_image(Path(preview), side_by_side(image.array, result), force=force)
    return frames
