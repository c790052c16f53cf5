"""The benchmark's methods: our two rows and every peer, with their fixed parameter values.

Each method's main parameter was tuned once on S-II (`speckle2self bench --tune`, best mean PSNR) and
is fixed here; the benchmark never tunes at run time. A method is either a denoiser `function(image,
**params)` or, when `trains`, a trainer `function(data, budget, **params)` (see `learned`).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from ...errors import UserError
from . import classical, learned, ours
from .learned import Budget, Denoiser, Trainer, TrainingSet

KINDS = {
    "input": "noisy input",
    "classical": "classical filter",
    "per-image": "learned, fitted per image",
    "self-supervised": "learned from noisy images only",
    "clean-data": "learned with clean data (simulations only)",
}


@dataclass(frozen=True)
class Method:
    key: str
    """Short name for --methods."""
    name: str
    kind: str
    function: Callable
    params: dict = field(default_factory=dict)
    tuned: str | None = None
    """The parameter tuned on S-II (None: published defaults kept)..."""
    grid: tuple = ()
    """...and the values tried."""
    trajectory: Callable | None = None
    """For tuning an iteration count in one run: (image, budget, iterations, every, **params) yields
    (iteration, output)."""
    trains: bool = False
    needs_budget: bool = False
    """The denoiser takes the budget (device, seed, precision) as its second argument."""
    requires: str | None = None
    """A module that must be importable (an optional extra), else the row is skipped."""
    note: str = ""
    """What a reader of the table should know about the method's set-up."""

    @property
    def uses_clean_data(self) -> bool:
        return self.kind == "clean-data"

    def available(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires) is not None

    def denoiser(self, budget: Budget) -> Denoiser:
        """The method as image -> image (methods that do not train)."""
        if self.needs_budget:
            return partial(self.function, budget=budget, **self.params)
        return partial(self.function, **self.params)

    def train(self, data: TrainingSet, budget: Budget) -> Trainer:
        return self.function(data, budget, **self.params)


def _identity(image: np.ndarray) -> np.ndarray:
    return np.asarray(image, dtype=np.float32).copy()


METHODS: tuple[Method, ...] = (
    Method("input", "Noisy input", "input", _identity),
    Method("median", "Median", "classical", classical.median, {"size": 21}, "size", (5, 9, 15, 21, 31, 41)),
    Method("lee", "Lee", "classical", classical.lee, {"size": 31}, "size", (9, 15, 21, 31, 41, 61)),
    Method("srad", "SRAD", "classical", classical.srad, {"iterations": 800}, "iterations",
           (100, 200, 400, 800, 1600)),
    Method("nlm", "NLM", "classical", classical.nlm, {"h": 2.0}, "h", (0.8, 1.2, 1.6, 2.0, 2.5, 3.0, 4.0)),
    Method("obnlm", "OBNLM", "classical", classical.obnlm, {"h": 0.2}, "h", (0.1, 0.15, 0.2, 0.25, 0.3, 0.4)),
    Method("bm3d", "BM3D", "classical", classical.bm3d, {"factor": 8.0}, "factor",
           (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0), requires="bm3d",
           note="noise sigma = factor x the speckle sigma: speckle is correlated, white-noise BM3D needs more"),
    Method("curvature", "Curvature diffusion (SimpleITK)", "classical", classical.curvature_diffusion,
           {"conductance": 12.0}, "conductance", (0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0),
           note="PSNR still rose by 0.08 dB from 8 to 12: it tends to plain Gaussian smoothing"),
    Method("gradient", "Gradient diffusion (SimpleITK)", "classical", classical.gradient_diffusion,
           {"conductance": 5.0}, "conductance", (0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0)),
    Method("zs-n2n", "ZS-N2N (per image)", "per-image", learned.zs_n2n, {"iterations": 500}, needs_budget=True,
           note="500 iterations, not the published 2000: PSNR on S-II moved < 0.05 dB from 100 to 300"),
    Method("dip", "Deep Image Prior (per image)", "per-image", learned.dip, {"iterations": 100, "width": 8},
           "iterations", (25, 50, 75, 100, 150, 200, 300, 400), trajectory=learned.dip_trajectory,
           needs_budget=True, note="our backbone at width 8; tuned on 2 images"),
    Method("n2v", "Noise2Void", "self-supervised", learned.blind_spot, {"scheme": "random"}, trains=True),
    Method("n2s", "Noise2Self", "self-supervised", learned.blind_spot, {"scheme": "grid"}, trains=True),
    Method("ne2ne", "Neighbor2Neighbor", "self-supervised", learned.neighbor2neighbor, trains=True),
    Method("s2s-budget", "Speckle2Self (same budget)", "self-supervised", ours.same_budget, trains=True),
    Method("s2s", "Speckle2Self (shipped)", "self-supervised", ours.shipped, needs_budget=True,
           note="network output, brightness-matched to the input (no smoothing, no log-bias step)"),
    Method("n2n", "Noise2Noise", "clean-data", learned.noise2noise, trains=True),
    Method("supervised", "Supervised (clean targets)", "clean-data", learned.supervised, trains=True),
)
QUICK = ("input", "median", "lee", "srad", "nlm", "gradient", "n2v", "s2s-budget", "s2s", "supervised")
"""The methods of `bench --quick`: a few of each kind that run in seconds on tiny images."""


def candidate(weights: str) -> Method:
    """A row for other Speckle2Self weights (a model in the making), run as the shipped model is."""
    return Method("s2s-candidate", f"Speckle2Self ({Path(weights).name})", "self-supervised", ours.shipped,
                  {"weights": str(weights)}, needs_budget=True)


def select(keys: list[str] | None = None) -> list[Method]:
    """The methods named by `keys` (all when None), in table order; the noisy input always comes first."""
    known = {m.key: m for m in METHODS}
    if keys is None:
        return list(METHODS)
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise UserError(f"Unknown benchmark method(s): {', '.join(unknown)}", f"choose from {', '.join(known)}")
    return [m for m in METHODS if m.key in keys or m.key == "input"]
