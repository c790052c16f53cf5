"""Fine-tuning budgets the front ends offer (the CLI's --finetune, the Slicer module's presets, the browser page),
with what each gave on real scans the model never saw; torch-free, so a panel can list them before torch loads.

Measured with `python -m speckle2self.bench.finetune_grid` / `finetune_verdicts` (docs/finetune.md): the
shipped model fine-tuned on each carotid clip of the published reference, none of which it was trained on (on
two of the clip's three frames, the third held out for the safeguard, speckle-normalised grid, the product's
recipe), scored on the clip's three frames against the method's published output. A step is one batch of four
256 x 256 crops.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    name: str
    steps: int
    ssim_gain: float
    """Mean SSIM gain over the five carotid clips, the safeguard's refusals counted as no gain (docs/finetune.md)."""

    def label(self) -> str:
        return f"{self.name}: {self.steps} steps ({self.ssim_gain:+.3f} SSIM on unseen scans)"


PRESETS = (Budget("Quick", 30, -0.003), Budget("Short", 120, -0.001), Budget("Standard", 240, 0.000))
"""Gains of the shipped (stage-5) model, which already smooths like the method's output: fine-tuning on a clip's
two frames gains on clips 03 and 05 and loses up to 0.016 on clip 04 (kept by the safeguard); on the 15 frames
as one sequence 240 steps gain +0.008."""
FINETUNE_STEPS = PRESETS[-1].steps
"""The budget `--finetune`, the module and the page use unless told otherwise. Chosen with the stage-2 model: the
largest safeguarded gain on the clips the choice was made on (01-03: +0.034, against +0.030 after 30 steps and
+0.025 after 480, where the safeguard refused one run), confirmed on clips 04-05 (+0.021; the only budget that
raised every clip). With the stage-3 model it was still the largest gain (+0.019 after the safeguard's refusals),
and with the shipped stage-5 model it is the only one that does not lower the mean."""
