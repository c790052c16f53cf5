"""The default model's training set: real B-mode frames of five scanners from the shared data folder, cropped
of burned-in text, logos and black margins, as one grey uint8 stack per source (`speckle2self train` reads them
and resamples each frame to the training grain itself).

    python -m speckle2self.bench.trainingset OUT_FOLDER [--data ../shared/data]

Writes OUT_FOLDER/<source>.npy and OUT_FOLDER/sources.json (each source's files, crop, licence and
attribution, which the model card copies). The method's published carotid reference is never part of it, nor
are the PyMUST files (held out for the int8 fidelity and the benchmark's real set).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import frames as fr
from ..image_io import read_image
from .sets import DEFAULT_DATA


@dataclass(frozen=True)
class Source:
    name: str
    pattern: str
    """Glob under the shared data folder."""
    crop: tuple[int, int, int, int]
    """Rows and columns kept: (top, bottom, left, right), negative counting from the end; applied after
    every frame of the source is centre-cropped to the source's smallest frame."""
    licence: str
    attribution: str


SOURCES = (
    Source("hc18_fetal_head", "training/hc18_fetal_head/*.png", (0, 540, 100, 738), "CC BY 4.0",
           "HC18 challenge data, T. L. A. van den Heuvel et al. 2018, Zenodo 10.5281/zenodo.1327317 (GE Voluson "
           "E8/730, fetal head); grey-scale bar and scanner text columns cropped"),
    Source("carotid_momot", "training/carotid_momot/*.png", (0, 749, 0, 709), "CC BY 4.0",
           "Common Carotid Artery Ultrasound Images, A. Momot 2022, Mendeley Data 10.17632/d4xt63mgjm.1 "
           "(Mindray UMT-500Plus, L13-3s); RGB with grey content taken as luminance"),
    Source("muscle_vanderzee", "training/muscle_vanderzee/*.png", (0, 458, 30, 486), "CC0 1.0",
           "M. van der Zee, TimTrack data sets, data set 1 (GE Logiq E9, vastus lateralis); logo corner and "
           "black margin strip cropped"),
    Source("pluslib_spine_phantom", "pluslibdata/SpinePhantomFreehand.igs.mha", (0, 616, 0, 820), "BSD-3-Clause",
           "PlusToolkit/PlusLibData, SpinePhantomFreehand.igs.mha (linear probe, spine phantom)"),
    Source("pluslib_prostate_phantom", "pluslibdata/Prostate10_video.igs.mhd", (0, 480, 0, 640), "BSD-3-Clause",
           "PlusToolkit/PlusLibData, Prostate10_video.igs.mhd (transrectal probe, prostate phantom)"),
)


def _grey_frames(path: Path) -> list[np.ndarray]:
    grey = fr.grey_stack(read_image(path).array)
    return [np.clip(np.rint(f), 0, 255).astype(np.uint8) for f in grey]


def _centre_crop(frame: np.ndarray, h: int, w: int) -> np.ndarray:
    top, left = (frame.shape[0] - h) // 2, (frame.shape[1] - w) // 2
    return frame[top:top + h, left:left + w]


def build(source: Source, data: Path) -> tuple[np.ndarray, list[str]]:
    """The source's frames as one (N, H, W) uint8 stack, and the files they came from."""
    files = sorted(data.glob(source.pattern))
    frames = [f for path in files for f in _grey_frames(path)]
    h, w = min(f.shape[0] for f in frames), min(f.shape[1] for f in frames)
    top, bottom, left, right = source.crop
    return np.stack([_centre_crop(f, h, w)[top:bottom, left:right] for f in frames]), [p.name for p in files]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    described = []
    for source in SOURCES:
        stack, files = build(source, args.data)
        np.save(args.out / f"{source.name}.npy", stack)
        described.append({**asdict(source), "frames": len(stack), "shape": list(stack.shape[1:]), "files": len(files)})
        print(f"{source.name}: {stack.shape}")
    (args.out / "sources.json").write_text(json.dumps(described, indent=2) + "\n")


if __name__ == "__main__":
    main()
