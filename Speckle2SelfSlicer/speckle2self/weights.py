"""Checkpoints: save with a model card beside them, load safely (weights_only, sha256 and tensor digest checked)."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import subprocess
import tempfile
import warnings
from pathlib import Path

from typing import TYPE_CHECKING

from . import __version__
from .errors import UserError

if TYPE_CHECKING:  # torch is imported on use, so cards can be read and deleted without it
    from .network import Speckle2SelfNet

MODELS = Path(__file__).resolve().parent / "models"
SHIPPED = {"default": MODELS / "speckle2self_default.pt", "fast": MODELS / "speckle2self_fast.pt"}
"""The shipped models by name: the full network, and its width-16 student (`distillation`: a quarter of the
operations)."""
DEFAULT_WEIGHTS = SHIPPED["default"]
FORMAT = "speckle2self-checkpoint"
MAX_WIDTH = 256
"""Widest network a checkpoint may ask for (the paper's is 32), so a damaged one cannot exhaust memory."""
TENSOR_DIGEST = "tensor_sha256"
"""Key of the tensor digest in a checkpoint and its card (checkpoints before it have none and still load)."""


def shipped_weights(name: str) -> Path:
    """The weights file of the shipped model `name` (SHIPPED)."""
    if name not in SHIPPED:
        raise UserError(f"Unknown model {name!r}", f"use one of {', '.join(SHIPPED)}, or --weights FILE")
    return SHIPPED[name]


def card_path(weights: Path) -> Path:
    """The model card (JSON) that sits beside a weights file."""
    return Path(weights).with_suffix(".json")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stamped_sha256(path: Path) -> str:
    """`sha256` of a file, hashed once per process while its inode, size and modification time stay the same."""
    stat = Path(path).stat()
    return _stamped_sha256(str(Path(path).resolve()), (stat.st_ino, stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=16)
def _stamped_sha256(path: str, stamp: tuple[int, int, int]) -> str:
    return sha256(Path(path))


def tensor_digest(state: dict) -> str:
    """sha256 over a state dict's tensors in key order (each key, dtype, shape and raw bytes): any changed
    value, name or order changes it. Travels inside the checkpoint, so it holds without the card."""
    import torch

    digest = hashlib.sha256()
    for key, tensor in state.items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def code_version() -> str:
    """Package version plus the git commit of the source tree, when it is a checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit}"


def atomic_write(path: Path, write) -> None:
    """Let `write(tmp)` write a temporary file beside `path`, then move it into place (readable by all)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; weights and cards are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_output_folder(path: Path | str) -> None:
    """Refuse a checkpoint path whose folder does not exist: training jobs call it before their first step."""
    if not Path(path).parent.is_dir():
        raise UserError(f"Output folder {Path(path).parent} does not exist", "create it or choose another --out")


def optimiser_path(weights: Path | str) -> Path:
    """Where Adam's state is kept beside a training checkpoint (float32; a run resumes from it)."""
    return Path(weights).with_suffix(".adam.pt")


def load_optimiser_state(weights) -> dict | None:
    """Adam's state saved beside the checkpoint `weights` (a path), or None when there is none."""
    import torch

    if not isinstance(weights, (str, Path)) or not optimiser_path(weights).is_file():
        return None
    try:
        return torch.load(optimiser_path(weights), map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for a damaged file
        raise UserError(f"Cannot load the optimiser state {optimiser_path(weights)}: it is damaged",
                        "delete it to restart Adam's moment estimates") from None


def save_checkpoint(model: "Speckle2SelfNet", path: Path, card: dict, optimiser=None, half: bool = True) -> dict:
    """Write the full training model (all three encoders, for fine-tuning) and its card; return the card. A
    training run also gives its `optimiser`: Adam's state (`optimiser_path`) and the card's loss curve as a
    picture (`loss_curve_path`) are then written beside the checkpoint."""
    import torch

    path = Path(path)
    check_output_folder(path)
    if optimiser is not None:
        atomic_write(optimiser_path(path), lambda tmp: torch.save(optimiser.state_dict(), tmp))
        if card.get("loss_curve"):
            write_loss_curve(loss_curve_path(path), card["loss_curve"])
    dtype = torch.float16 if half else torch.float32
    state = {k: v.detach().to("cpu", dtype) for k, v in model.state_dict().items()}
    checkpoint = {"format": FORMAT, "width": model.width, "head": model.head, "state_dict": state,
                  "config": json.dumps(card.get("config", {})), "code_version": code_version(),
                  TENSOR_DIGEST: tensor_digest(state)}
    atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))
    card = {**card, "width": model.width, "head": model.head, "code_version": checkpoint["code_version"],
            "weights_file": path.name, "sha256": sha256(path), TENSOR_DIGEST: checkpoint[TENSOR_DIGEST]}
    write_card(path, card)
    return card


def loss_curve_path(weights: Path | str) -> Path:
    return Path(weights).with_suffix(".loss.png")


def write_loss_curve(path: Path, curve: list) -> None:
    """Plot [cumulative step, loss] points to a PNG (skipped where matplotlib is not installed)."""
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    steps, losses = zip(*curve)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, losses, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("cumulative training step")
    ax.set_ylabel("Speckle2Self loss (mean of 50 steps)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def write_card(weights: Path, card: dict) -> None:
    """Write the model card beside `weights`, atomically."""
    atomic_write(card_path(weights), lambda tmp: Path(tmp).write_text(json.dumps(card, indent=2) + "\n"))


def read_card(weights: Path) -> dict:
    """The model card beside `weights`, or {} when there is none."""
    card = card_path(weights)
    if not card.is_file():
        return {}
    try:
        content = json.loads(card.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"Model card {card} is unreadable ({err})", "restore it or delete it") from None
    if not isinstance(content, dict):
        raise UserError(f"Model card {card} is not a JSON object", "restore it or delete it")
    return content


def load_checkpoint(weights: Path | str | None = None) -> tuple["Speckle2SelfNet", dict]:
    """Load a checkpoint into a float32 model on the CPU; return it with its model card.

    A shipped model must match the sha256 in its card; any other file is checked when it has one. The
    tensors must match the digest in the checkpoint and in the card, where they carry one.
    """
    import torch

    from .network import HEADS, Speckle2SelfNet

    path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise UserError(f"Weights file {path} not found", "check --weights or reinstall the package")
    card = read_card(path)
    if path in SHIPPED.values() and "sha256" not in card:
        raise UserError(f"Model card {card_path(path)} is missing", "reinstall the package")
    if "sha256" in card and sha256(path) != card["sha256"]:
        raise UserError(f"Weights file {path} does not match the sha256 in its model card",
                        "the file is damaged or was replaced; restore it or retrain")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of a file it then refuses
            warnings.simplefilter("ignore", UserWarning)
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refuses anything but tensors and plain containers
        raise UserError(f"Cannot load weights {path}: it holds Python objects other than weights (refused for "
                        "safety) or is no checkpoint at all",
                        "use a checkpoint written by `speckle2self train`") from None
    except Exception:  # torch raises many types for a damaged file
        raise UserError(f"Cannot load weights {path}: the file is truncated or damaged",
                        "restore it, or use a checkpoint written by `speckle2self train`") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UserError(f"{path} is not a Speckle2Self checkpoint",
                        "use a checkpoint written by `speckle2self train`")
    width, state = checkpoint.get("width"), checkpoint.get("state_dict")
    head = checkpoint.get("head", "faithful")  # checkpoints before the head option were faithful
    misfit = UserError(f"Weights {path} do not fit the Speckle2Self network (width {width!r}, head {head!r})",
                       "use a checkpoint written by `speckle2self train`")
    if not (isinstance(width, int) and 1 <= width <= MAX_WIDTH and isinstance(state, dict) and head in HEADS):
        raise misfit
    model = Speckle2SelfNet(width=width, head=head)
    try:
        _check_digest(path, state, [checkpoint.get(TENSOR_DIGEST), card.get(TENSOR_DIGEST)])
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except (RuntimeError, AttributeError):  # other shapes or names; values that are not tensors
        raise misfit from None
    return model, card


def _check_digest(path: Path, state: dict, expected: list) -> None:
    """Refuse tensors that differ from the digests written at saving (None: not recorded)."""
    recorded = {str(e) for e in expected if e is not None}
    if recorded and recorded != {tensor_digest(state)}:
        raise UserError(f"Weights file {path} is damaged or was altered: its tensors do not match the digest "
                        "written when it was saved", "restore it from a good copy or retrain")
