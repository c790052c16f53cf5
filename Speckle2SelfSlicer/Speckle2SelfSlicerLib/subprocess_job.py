"""Despeckling in a separate process, as SlicerNNUnet and MONAIAuto3DSeg run their networks.

The input's frames are written to a temporary folder with their geometry, the speckle2self command line
despeckles them there (fine-tuning first when asked) and reports progress in JSON lines, and the results go
into the scene as on the in-process path. The calling (main) thread only writes the input, polls and stores.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from speckle2self.errors import UserError
from speckle2self.image_io import ImageData, read_image, write_image
from speckle2self.jobs import Progress
from speckle2self.weights import atomic_write, read_card, write_card

from . import nodes
from .cli_process import CliProcess
from .finetuned import file_stem, new_model_path, scanner_entry
from .runs import NOT_SAVED, frame_groups, model_label, scene_closed

CLI_OPTIONS = {"weights": "--weights", "device": "--device", "gamma": "--gamma", "batch_size": "--batch",
               "precision": "--precision", "finetune_steps": "--finetune-steps",
               "finetune_minutes": "--finetune-minutes", "finetune_size": "--finetune-size", "scale": "--scale"}
"""Options of Speckle2SelfLogic.process_job and the command-line options they become (None: left out, so the
command's default applies, which is the in-process default)."""
SWITCHES = ("log_bias", "save_finetuned")
"""The other options: log_bias True becomes --log-bias, save_finetuned False leaves --save-finetuned out."""


def cli_arguments(options: dict) -> list[str]:
    """The command-line options of `process_job` options (but save_finetuned, which needs a path)."""
    unknown = sorted(set(options) - set(CLI_OPTIONS) - set(SWITCHES))
    if unknown:
        raise TypeError(f"Unknown option {', '.join(unknown)}")
    arguments = []
    for name, flag in CLI_OPTIONS.items():
        if options.get(name) is not None:
            arguments += [flag, str(options[name])]
    return arguments + (["--log-bias"] if options.get("log_bias") else [])


def write_inputs(folder: Path, name: str, volumes: list, arrays: list[np.ndarray]) -> list[tuple[Path, list[int]]]:
    """Write the arrays of `volumes` to `folder` as uncompressed NRRD files with the geometry of their volume,
    consecutive ones of one frame shape and type stacked in one file; return each file with its arrays' indices."""
    groups = list(frame_groups(arrays, float("inf")))
    written = []
    for number, group in enumerate(groups, 1):
        stack = np.concatenate([arrays[i] for i in group]) if len(group) > 1 else arrays[group[0]]
        path = folder / (f"{file_stem(name)}.nrrd" if len(groups) == 1 else f"{file_stem(name)}-{number}.nrrd")
        geometry = nodes.itk_geometry(volumes[group[0]])
        write_image(path, stack, like=ImageData(stack, kind="volume", **geometry), compress=False)
        written.append((path, group))
    return written


class SubprocessJob:
    """A despeckling running in a separate process (made by Speckle2SelfLogic.process_in_subprocess).

    Call `poll()` from a timer: True while it runs; once it returns False, `result` is the output node. `last`
    is the latest Progress (fine-tuning steps, then frames of all inputs). `cancel()` terminates the process;
    a cancelled or failed job leaves the scene, the models folder and the temporary folder as they were.
    """

    def __init__(self, logic, source, output, options: dict, command: list[str], resampling: dict):
        self.logic, self.source, self.output = logic, source, output
        self._resampling = resampling  # the speckle scale chosen for the input, recorded on the output
        self.last: Progress | None = None
        self.result = None
        self._ended = False
        self._closed = False
        self._elapsed: dict[str, dict[int, float]] = {"fine-tuning": {}, "despeckling": {}}
        self._weights = options.get("weights")
        self._verdict: dict | None = None  # the safeguard's decision, after fine-tuning
        finetune = options.get("finetune_steps") is not None or options.get("finetune_minutes") is not None
        arguments = cli_arguments(options)
        folder = Path(tempfile.mkdtemp(prefix="speckle2self-"))
        try:
            self._inputs = write_inputs(folder, source.name, source.volumes, source.arrays)
            if finetune and len(self._inputs) > 1:
                raise UserError(f"Sequence '{source.name}' has frames of different sizes or types, so the separate "
                                "process cannot fine-tune one model on all of them",
                                "fine-tune in Slicer's process (logic.process from the Python console) or "
                                "despeckle without fine-tuning")
            self._tuned = folder / "finetuned.pt" if finetune and options.get("save_finetuned", True) else None
            if self._tuned is not None:
                arguments += ["--save-finetuned", str(self._tuned)]
            (folder / "out").mkdir()
            arguments = ["despeckle", *(str(p) for p, _ in self._inputs), "-o", str(folder / "out"),
                         "--progress", "json", *arguments]
            self._process = CliProcess(arguments, folder, self._on_line, command)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._frames = [sum(len(source.arrays[i]) for i in group) for _, group in self._inputs]
        self._observer = source.scene.AddObserver(source.scene.StartCloseEvent, self._on_close)

    @property
    def process(self):
        """The running subprocess.Popen."""
        return self._process.process

    def poll(self) -> bool:
        """Take in the process's progress; True while it runs. When it has succeeded, store the result (see
        `result`) and return False. A failure raises the command's one-line UserError or ProcessFailed."""
        if self._ended:
            return False
        try:
            if self._closed:
                raise scene_closed()
            running = self._process.poll()
            if not running:
                self.result = self._store()
        except BaseException:
            self._end()
            raise
        if not running:
            self._end()
        return running

    def cancel(self) -> None:
        """Stop now: terminate the process, remove its temporary folder; nothing is added anywhere."""
        self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._process.cancel()
            self.source.scene.RemoveObserver(self._observer)

    def _on_close(self, *_) -> None:
        self._closed = True

    def _on_line(self, line: dict) -> None:
        """One line of the command: progress of fine-tuning steps (one input) or of the frames of input `input`,
        or the fine-tuning safeguard's verdict."""
        if "verdict" in line:
            self._verdict = line
            return
        phase, number = line["phase"], line["input"]
        self._elapsed[phase][number] = line["elapsed"]
        elapsed = sum(seconds for n, seconds in self._elapsed[phase].items() if n <= number)
        if phase == "fine-tuning":
            self.last = Progress(line["done"], line["total"], elapsed, f"Fine-tuning: {line['message']}")
            return
        done, total = sum(self._frames[:number - 1]) + line["done"], sum(self._frames)
        self.last = Progress(done, total, elapsed, f"Despeckling: frame {done:g} of {total}")

    def _store(self):
        """Read the results, keep the fine-tuned model (if saved) and store the output as `process_job` does."""
        arrays: list[np.ndarray] = [None] * len(self.source.arrays)  # type: ignore[list-item]
        for path, group in self._inputs:
            result = read_image(self._process.folder / "out" / path.name).array
            ends = np.cumsum([len(self.source.arrays[i]) for i in group])[:-1]
            for i, part in zip(group, np.split(result, ends)):
                arrays[i] = part.reshape(self.source.arrays[i].shape)
        return self.logic._store(self.source, self.output, arrays, self._model_used(), self._resampling)

    def _model_used(self) -> str:
        """MODEL_ATTRIBUTE of the output, as `process_job` gives it; keeps the fine-tuned model if it was saved."""
        if self._verdict is None:
            return model_label(self._weights)
        if not self._verdict["accepted"]:
            return model_label(self._weights, f"; {self._verdict['verdict']}")
        return model_label(self._weights, NOT_SAVED) if self._tuned is None else str(self._keep_model())

    def _keep_model(self) -> Path:
        """Move the saved fine-tuned model into the models folder, as the in-process path names it."""
        path = new_model_path(self.logic.modelsDir, self.source.name)
        card = {**read_card(self._tuned), "weights_file": path.name, **scanner_entry(self.source.scanner)}
        atomic_write(path, lambda tmp: shutil.copyfile(self._tuned, tmp))  # the checkpoint first: a card names it
        write_card(path, card)
        return path
