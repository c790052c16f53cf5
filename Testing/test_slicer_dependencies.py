"""Issue 27: which Python packages the Slicer module still has to install, read from the installed packages'
metadata: an older PyTorch than required is upgraded, not taken as installed."""
from __future__ import annotations

import tomllib
from pathlib import Path

from Speckle2SelfSlicerLib import dependencies
from Speckle2SelfSlicerLib.dependencies import unmet, version_range

REPO = Path(__file__).resolve().parents[1]


def test_an_older_torch_than_required_is_unmet():
    versions = {"1.13.1": True, "2.0.1+cu118": True, "2.1.0": False, "2.1.0+cpu": False, "2.13.0": False,
                "2.6.0.dev20240101+cu121": False, None: True}  # version -> unmet
    for found, expected in versions.items():
        assert unmet(["torch>=2.1"], lambda name: found if name == "torch" else None) == (
            ["torch>=2.1"] if expected else []), found


def test_requirements_are_checked_against_the_installed_packages():
    assert unmet(["torch>=2.1", "numpy>=1.0"]) == []  # what this test environment has
    assert unmet(["torch>=99", "numpy>=1.0", "speckle2self-no-such-package>=1"]) == [
        "torch>=99", "speckle2self-no-such-package>=1"]
    assert unmet(["scikit-image>=0.21"]) == []  # the distribution's name, not the module's (skimage)


def test_torch_version_range_for_the_pytorch_extension():
    assert version_range(dependencies.TORCH) == ">=2.1"


def test_the_module_asks_for_what_the_package_declares():
    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    asked = {dependencies.TORCH, *dependencies.REQUIRED, *dependencies.OPTIONAL, *dependencies.MEASURE}
    assert asked <= declared and {"monai>=1.3", "openvino>=2026.4", "nncf>=3.4"} <= asked
