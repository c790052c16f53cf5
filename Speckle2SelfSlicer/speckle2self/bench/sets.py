"""The benchmark's image sets: simulated S-I/S-II/S-III (train and test splits with disjoint seeds) and
real B-mode images from the shared data folder with hand-marked regions.

Every image is float32 (H, W) in the 8-bit display domain scaled to [0, 1], the domain all methods
receive. Regions are bool masks: "target" and "background" (compared by gCNR), "homogeneous" (SNR,
ENL) and, on simulations, "edges" (edge beta) and "points" (point scatterers: FWHM). The real reference
set, scored against the method's published output, is in `published`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import frames as fr
from ..errors import UserError
from .peers.learned import TrainingSet
from .simulate import PHANTOMS, SETTINGS, realisation, simulate_set

TRAIN_SEED = 10_000
"""Training images use seeds from here on; test images from 0: the splits never share a phantom."""
SECOND_REALISATION_SEED = 1
DEFAULT_DATA = Path(__file__).resolve().parents[4] / "shared" / "data"
"""The shared data folder beside the repository (as in Testing/conftest.py)."""


@dataclass
class TestSet:
    """Images to despeckle, with clean references (simulations only) and regions, and the training data the
    learned methods get for this set."""

    name: str
    images: list[np.ndarray]
    labels: list[str]
    regions: list[dict[str, np.ndarray]]
    training: TrainingSet
    clean: list[np.ndarray] | None = None
    published: list[np.ndarray] | None = None
    """The method's published (gamma-2, 8-bit) output of each image: the real reference set only."""

    @property
    def simulated(self) -> bool:
        return self.clean is not None

    @property
    def against_published(self) -> bool:
        """Scored against the method's published output (`published`), not with marked regions."""
        return self.published is not None

    @property
    def marked(self) -> bool:
        """Real images with marked regions (Hom, gCNR, SNR, ENL)."""
        return not self.simulated and not self.against_published


def eight_bit(image: np.ndarray) -> np.ndarray:
    """[0, 1] display values to 8-bit grey levels, without stretching (what the screen would show)."""
    return np.rint(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def simulated_set(setting: str, test_count: int, train_count: int, size: int,
                  phantoms: tuple[str, ...] = PHANTOMS) -> TestSet:
    """Test and training images of one setting, the test images cycling through `phantoms`; training gets
    clean references and a second, independent speckle realisation of each image (for the clean-data upper
    bounds). Regions add "points", the point scatterers (empty but in the points phantom)."""
    test = simulate_set(setting, test_count, size, seed=0, phantoms=phantoms)
    train = simulate_set(setting, train_count, size, seed=TRAIN_SEED)
    training = TrainingSet(noisy=[s.noisy for s in train], clean=[s.clean for s in train],
                           second=[realisation(s, SECOND_REALISATION_SEED) for s in train])
    return TestSet(setting, [s.noisy for s in test], [f"{s.phantom} (seed {s.seed})" for s in test],
                   [{**s.regions, "points": s.points} for s in test], training, clean=[s.clean for s in test])


def simulated_sets(test_count: int, train_count: int, size: int, phantoms: tuple[str, ...] = PHANTOMS) -> list[TestSet]:
    return [simulated_set(name, test_count, train_count, size, phantoms) for name in SETTINGS]


# A region is ("rect", top, left, height, width) or ("circle", row, col, radius), in crop coordinates.
Shape = tuple


@dataclass(frozen=True)
class RealImage:
    """One frame of a shared file, cropped, with regions marked by eye (checked on overlays)."""

    label: str
    file: str
    frame: int
    crop: tuple[int, int, int, int]
    """top, left, height, width."""
    target: Shape
    background: Shape
    homogeneous: Shape


REAL_IMAGES: tuple[RealImage, ...] = (
    RealImage("BK phantom, inclusion", "pluslibdata/BkCurvilinearScanConvertedData.igs.mha", 0, (100, 170, 256, 256),
              target=("circle", 112, 120, 14), background=("rect", 95, 30, 40, 60),
              homogeneous=("rect", 60, 80, 30, 100)),
    RealImage("carotid, lumen", "pymust_examples/carotid.jpg", 0, (0, 0, 251, 385),
              target=("rect", 60, 20, 32, 120), background=("rect", 150, 290, 25, 80),
              homogeneous=("rect", 150, 290, 25, 80)),
    RealImage("rotating disk phantom", "pymust_examples/bmode_PWI_disk.mat", 0, (0, 0, 251, 251),
              target=("rect", 222, 20, 24, 200), background=("circle", 125, 120, 80),
              homogeneous=("circle", 125, 120, 50)),
    RealImage("prostate phantom, urethra gap", "pluslibdata/Prostate10_video.igs.mhd", 0, (100, 220, 256, 280),
              target=("rect", 115, 121, 45, 18), background=("rect", 110, 180, 50, 40),
              homogeneous=("rect", 130, 190, 60, 55)),
)
"""Regions: the target is dark (inclusion, lumen, the dark surround of the disk, the gap between the
lobes), the background is speckle beside it, the homogeneous region the most uniform speckle in view."""


def shape_mask(shape: tuple[int, int], region: Shape) -> np.ndarray:
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    if region[0] == "circle":
        _, row, col, radius = region
        return (rows - row) ** 2 + (cols - col) ** 2 <= radius ** 2
    _, top, left, height, width = region
    return (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)


def load_real(image: RealImage, data: Path) -> np.ndarray:
    """The cropped grey frame in [0, 1] (8-bit grey / 255)."""
    from ..image_io import read_image

    path = data / image.file
    if not path.is_file():
        raise UserError(f"Real benchmark image {path} is missing", "pass --data with the shared data folder")
    array = read_image(path).array
    grey = fr.grey_frame(array, fr.validate(array), image.frame)
    top, left, height, width = image.crop
    return (np.clip(grey[top:top + height, left:left + width], 0, 255) / 255).astype(np.float32)


def real_set(data: Path, count: int | None = None) -> TestSet:
    """The first `count` (default all) real images; the self-supervised methods train on these same noisy
    images (no clean data exists for them)."""
    if not Path(data).is_dir():
        raise UserError(f"Real data folder {data} not found", "pass --data with the shared data folder")
    chosen = REAL_IMAGES[:count]
    images = [load_real(image, Path(data)) for image in chosen]
    regions = [{name: shape_mask(pixels.shape, getattr(image, name)) for name in ("target", "background",
                                                                                   "homogeneous")}
               for image, pixels in zip(chosen, images)]
    return TestSet("real", images, [image.label for image in chosen], regions, TrainingSet(noisy=images))
