"""Qt-free 3D Slicer logic of Speckle2Self: despeckle volumes and sequences of an MRML scene.

Importing it needs slicer (the application or the slicer-core package), not torch.
"""
from speckle2self.budgets import FINETUNE_STEPS

from .finetuned import (SCANNER_ATTRIBUTE, FinetunedModel, default_models_dir, delete_finetuned_models,
                        latest_for_scanner, list_finetuned_models, scanner_label)
from .logic import FRAMES, MODEL_ATTRIBUTE, SCALE_ATTRIBUTE, Speckle2SelfLogic
from .nodes import displayed_volume, first_volume, sequence_browser

__all__ = ["FINETUNE_STEPS", "FRAMES", "MODEL_ATTRIBUTE", "SCALE_ATTRIBUTE", "SCANNER_ATTRIBUTE", "FinetunedModel",
           "Speckle2SelfLogic", "default_models_dir", "delete_finetuned_models", "displayed_volume", "first_volume",
           "latest_for_scanner", "list_finetuned_models", "scanner_label", "sequence_browser"]
