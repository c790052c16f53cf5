"""Shared fixtures: the bundled sample, the shared data and reference folders, a tiny random checkpoint."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "Speckle2SelfSlicer" / "Resources" / "SampleData" / "BkCurvilinearScanConvertedData.nrrd"
CINE = REPO / "Testing" / "data" / "Prostate10_3frames.igs.mha"
"""Three real frames of a PLUS cine (Testing/data/README.md)."""
SHARED_DATA = REPO.parent / "shared" / "data"
PUBLISHED_REFERENCE = REPO.parent / "shared" / "reference" / "carotid_published"


@pytest.fixture(scope="session", autouse=True)
def int8_cache(tmp_path_factory):
    """Quantised models go to a fresh folder of this session (children inherit it), not the user's cache."""
    import os

    folder = tmp_path_factory.mktemp("cache")
    before = os.environ.get("SPECKLE2SELF_CACHE")
    os.environ["SPECKLE2SELF_CACHE"] = str(folder)
    yield folder
    if before is None:
        del os.environ["SPECKLE2SELF_CACHE"]
    else:
        os.environ["SPECKLE2SELF_CACHE"] = before


@pytest.fixture(scope="session")
def sample_array() -> np.ndarray:
    """The bundled real B-mode image, (400, 600) uint8."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE)))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (it is not part of the repository)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def published_reference() -> Path:
    """The method's published output on real carotid scans, with its scoring script."""
    if not PUBLISHED_REFERENCE.is_dir():
        pytest.skip(f"reference folder {PUBLISHED_REFERENCE} is absent (it is not part of the repository)")
    return PUBLISHED_REFERENCE


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A random width-8 checkpoint with its card: fast stand-in where the weights do not matter."""
    import torch

    from speckle2self.network import Speckle2SelfNet
    from speckle2self.weights import save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_checkpoint(Speckle2SelfNet(width=8), path, {"config": {"width": 8}})
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of many tiny runs: torch's threads would cost more than they give, most of all on a busy
    machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def file_with(data: bytes):
    """A maker that writes `data` to the path it is given (for bad-file cases)."""
    def make(path: Path) -> Path:
        path.write_bytes(data)
        return path
    return make
