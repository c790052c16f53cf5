"""The Python packages despeckling needs in Slicer's environment, and which of them are missing or too old.

Found from the installed packages' metadata, without importing them: an outdated PyTorch that was not imported can
still be replaced (Windows keeps an imported package's files locked).
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Callable, Iterable

from packaging.requirements import Requirement

TORCH = "torch>=2.1"
"""Installed through Slicer's PyTorch extension, which picks the build for the computer's GPU."""
REQUIRED = ("monai>=1.3",)
OPTIONAL = ("openvino>=2026.4", "nncf>=3.4")
"""The fast int8 path on the CPU; without them despeckling runs on torch."""
MEASURE = ("scikit-image>=0.21",)
"""The Measure section's metrics (speckle2self.metrics)."""


def installed_version(name: str) -> str | None:
    """The installed version of distribution `name`, None if it is not installed."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def unmet(requirements: Iterable[str], installed: Callable[[str], str | None] = installed_version) -> list[str]:
    """The requirements whose package is not installed, or is of a version the requirement excludes (a later
    pre-release or nightly build meets a lower bound)."""
    missing = []
    for text in requirements:
        requirement = Requirement(text)
        found = installed(requirement.name)
        if found is None or not requirement.specifier.contains(found, prereleases=True):
            missing.append(text)
    return missing


def version_range(requirement: str) -> str:
    """The version part of a requirement: '>=2.1' of 'torch>=2.1' (what PyTorchUtils.installTorch takes)."""
    return str(Requirement(requirement).specifier)
