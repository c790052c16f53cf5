"""What a despeckling run in Slicer's process (logic) and one in a separate process (subprocess_job) share:
frames batched by shape, the output's model and scale labels, the error of a scene closed meanwhile."""
from __future__ import annotations

import numpy as np

from speckle2self.errors import UserError
from speckle2self.weights import SHIPPED


def scene_closed() -> UserError:
    return UserError("The scene was closed while despeckling, so no result was added",
                     "load the input again and rerun")


SCALE_ATTRIBUTE = "Speckle2Self.Scale"
"""Output node attribute: the speckle-scale resampling used (JSON: factor, measured and model grain)."""
NOT_SAVED = ", fine-tuned, not saved"


def model_label(weights, note: str = "") -> str:
    """The MODEL_ATTRIBUTE value of an output made with `weights` (None: the shipped model) and `note`: what
    fine-tuning did when no fine-tuned model was saved (NOT_SAVED, or "; " and the safeguard's verdict)."""
    shipped = {str(path): name for name, path in SHIPPED.items()}
    return (shipped.get(str(weights), str(weights)) if weights else "default") + note


def frame_groups(arrays: list[np.ndarray], batch_size: float):
    """Indices of consecutive arrays with the same frame shape and type, at most `batch_size` frames a group
    (a volume with more frames is a group alone): frames of a cine loop are despeckled in batches."""
    group: list[int] = []
    for i, array in enumerate(arrays):
        if group:
            first = arrays[group[0]]
            frames = sum(len(arrays[j]) for j in group) + len(array)
            if array.shape[1:] != first.shape[1:] or array.dtype != first.dtype or frames > batch_size:
                yield group
                group = []
        group.append(i)
    if group:
        yield group
