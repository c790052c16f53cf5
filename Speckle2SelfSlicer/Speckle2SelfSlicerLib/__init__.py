"""Qt-free 3D Slicer logic of Speckle2Self: despeckle volumes and sequences of an MRML scene.

Importing it needs slicer (the application or the slicer-core package), not torch.
"""
from .finetuned import FinetunedModel, default_models_dir, delete_finetuned_models, list_finetuned_models
from .logic import FINETUNE_STEPS, FRAMES, MODEL_ATTRIBUTE, SCALE_ATTRIBUTE, Speckle2SelfLogic
from .nodes import displayed_volume, first_volume, sequence_browser

__all__ = ["FINETUNE_STEPS", "FRAMES", "MODEL_ATTRIBUTE", "SCALE_ATTRIBUTE", "FinetunedModel", "Speckle2SelfLogic",
           "default_models_dir", "delete_finetuned_models", "displayed_volume", "first_volume",
           "list_finetuned_models", "sequence_browser"]
