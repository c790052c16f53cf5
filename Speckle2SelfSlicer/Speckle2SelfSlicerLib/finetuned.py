"""Fine-tuned models kept on disk for reuse: where they live, naming, listing and deleting them."""
from __future__ import annotations

import datetime
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

MODELS_DIR_VARIABLE = "SPECKLE2SELF_MODELS_DIR"
SCANNER_ATTRIBUTE = "Speckle2Self.Scanner"
"""Node attribute naming the scanner and probe of an input (set from the file's DICOM tags when it is read, or
by the module from Slicer's DICOM database); a model fine-tuned on the input records it in its card."""
SCANNER_TAGS = ("0008|0070", "0008|1090", "0018|5010")
"""DICOM Manufacturer, Manufacturer's Model Name and Transducer Data, in SimpleITK's key form."""


def scanner_label(tags: dict) -> str | None:
    """'Manufacturer Model Transducer' from the DICOM tags present in `tags`, or None when none is."""
    words = [str(tags[key]).strip() for key in SCANNER_TAGS if str(tags.get(key, "")).strip()]
    return " ".join(words) or None


def scanner_entry(scanner: str | None) -> dict:
    """The model card's "scanner" entry of a model fine-tuned on scans from `scanner` (none when unknown)."""
    return {"scanner": scanner} if scanner else {}


def default_models_dir() -> Path:
    """$SPECKLE2SELF_MODELS_DIR, else Speckle2Self/fine-tuned in the user's application data folder."""
    if os.environ.get(MODELS_DIR_VARIABLE):
        return Path(os.environ[MODELS_DIR_VARIABLE]).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "Speckle2Self" / "fine-tuned"


@dataclass(frozen=True)
class FinetunedModel:
    """A fine-tuned checkpoint and its model card."""

    path: Path
    card: dict

    def describe(self) -> str:
        """One line for a list shown to the user."""
        details = [self.card.get("source"), self.card.get("scanner"),
                   self.card.get("steps") and f"{self.card['steps']} steps", self.card.get("created")]
        return f"{self.path.name} ({', '.join(str(d) for d in details if d)})"


def file_stem(name: str) -> str:
    """A node name as a portable file name stem."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", name).strip("._") or "model"


def new_model_path(folder: Path, source_name: str) -> Path:
    """A new, unused checkpoint path in `folder` (created if needed), named after the data it was tuned on."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{file_stem(source_name)}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    path, number = folder / f"{stem}.pt", 1
    while path.exists():
        number += 1
        path = folder / f"{stem}-{number}.pt"
    return path


def list_finetuned_models(folder: Path) -> list[FinetunedModel]:
    """The checkpoints in `folder`, newest first (an unreadable card is shown as empty)."""
    from speckle2self.errors import UserError
    from speckle2self.weights import read_card

    def card(path: Path) -> dict:
        try:
            return read_card(path)
        except UserError:
            return {}

    paths = sorted(Path(folder).glob("*.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
    return [FinetunedModel(p, card(p)) for p in paths]


def latest_for_scanner(folder: Path, scanner: str | None) -> FinetunedModel | None:
    """The newest model in `folder` fine-tuned on scans from `scanner` (and kept by the safeguard), if any: the
    one to offer for the next scan from that scanner and probe."""
    if not scanner or not Path(folder).is_dir():
        return None
    return next((m for m in list_finetuned_models(folder) if m.card.get("scanner") == scanner), None)


def delete_finetuned_models(models: list[FinetunedModel]) -> None:
    """Delete checkpoints and their model cards."""
    from speckle2self.weights import card_path

    for model in models:
        model.path.unlink(missing_ok=True)
        card_path(model.path).unlink(missing_ok=True)
