"""Despeckle volumes and sequences of an MRML scene with Speckle2Self, as one cancellable job.

torch and MONAI are imported when a job is made, never when this module is imported.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speckle2self.errors import Cancelled, UserError
from speckle2self.jobs import Job, Progress, follow

from . import nodes
from .finetuned import SCANNER_ATTRIBUTE, default_models_dir, new_model_path, scanner_entry
from .runs import NOT_SAVED, SCALE_ATTRIBUTE, frame_groups, model_label, scene_closed

FRAMES = ("all", "current")
"""For a sequence: despeckle every frame into a new synchronized sequence, or only the current frame."""
MODEL_ATTRIBUTE = "Speckle2Self.Model"
"""Output node attribute: the checkpoint that made it ("default" for the shipped model)."""
GROUP_FRAMES = 16
"""Frames of small volumes (a cine's 2-D frames) gathered into one stack when no batch size is given."""


@dataclass
class _Input:
    """What one run reads: volumes (one, or the frames of a sequence), their sequence, browser and scene."""

    volumes: list
    sequence: object = None
    browser: object = None
    arrays: list = field(default_factory=list)
    scene: object = None

    @property
    def node(self):
        """The node that stands for the input: its sequence, or its one volume."""
        return self.sequence if self.sequence is not None else self.volumes[0]

    @property
    def name(self) -> str:
        return self.node.GetName()

    @property
    def scanner(self) -> str | None:
        """The input's SCANNER_ATTRIBUTE, if set."""
        return self.node.GetAttribute(SCANNER_ATTRIBUTE)


@dataclass
class _Trainer:
    """A fine-tuning job and its progress total (steps, or seconds for a time budget)."""

    job: Job
    total: float


class _Phase:
    """Progress of one phase of a job (fine-tuning, despeckling), timed from the phase's start."""

    def __init__(self, job: Job, total: float, label: str):
        self.job, self.total, self.label, self.start = job, total, label, time.perf_counter()

    def report(self, done: float, detail: str) -> Progress:
        return self.job.progress(done, self.total, f"{self.label}: {detail}", since=self.start)


class _SceneWatch:
    """Within it, closing (clearing) the scene cancels `job`, which then ends in a UserError saying so."""

    def __init__(self, scene, job: Job):
        self.scene, self.job, self.closed = scene, job, False

    def _close(self, *_) -> None:
        self.closed = True
        self.job.cancel()

    def __enter__(self):
        self.tag = self.scene.AddObserver(self.scene.StartCloseEvent, self._close)

    def __exit__(self, kind, error, trace) -> bool:
        self.scene.RemoveObserver(self.tag)
        if self.closed and kind is Cancelled:
            raise scene_closed() from None
        return False


class Speckle2SelfLogic:
    """Despeckle scalar or RGB volumes, 3-D volumes (frame by frame) and volume sequences in an MRML scene.

    `sequencesLogic` (Slicer's vtkSlicerSequencesLogic) creates the proxy volume of a new output sequence;
    without it the sequence is still synchronized with the browser. Fine-tuned models are saved in `modelsDir`.
    """

    def __init__(self, sequencesLogic=None, modelsDir: Path | str | None = None):
        self.sequencesLogic = sequencesLogic
        self.modelsDir = Path(modelsDir) if modelsDir else default_models_dir()

    def process(self, inputNode, outputNode=None, **options):
        """Despeckle `inputNode` and return the output node; options as for `process_job`."""
        return self.process_job(inputNode, outputNode, **options).run()

    def process_job(self, inputNode, outputNode=None, frames: str = "all", weights: Path | str | None = None,
                    device: str = "auto", gamma: float = 1.0, batch_size: int | None = None, precision: str = "auto",
                    finetune_steps: int | None = None, finetune_minutes: float | None = None,
                    finetune_size: int = 256, save_finetuned: bool = True, log_bias: bool = False,
                    scale: float | str = "auto") -> Job:
        """A job that despeckles `inputNode` into `outputNode` (None: a new node) and returns the output node.

        Input: a scalar or vector (RGB, RGBA) volume, 2-D or 3-D (frames along the slowest axis), a sequence
        browser, a volume sequence, or a proxy volume of a browser. For sequences `frames` is "all" (a new
        sequence synchronized in the same browser, returned) or "current" (a volume of the current frame).
        With `finetune_steps` or `finetune_minutes` the model is first fine-tuned on the input's frames
        (crops of `finetune_size`) and, with `save_finetuned`, saved in `modelsDir`. The input is never
        modified; a cancelled or failed job leaves the scene as it was. `log_bias` True shows the log of the
        mean echo intensity instead of the input's mean brightness (see `speckle2self.postprocess`).
        `scale` resamples the frames as `speckle2self.inference.despeckle_job` does ('auto': to the model's
        speckle grain), chosen once for all frames; the output's attribute SCALE_ATTRIBUTE records it.
        """
        source, output = self._prepare(inputNode, outputNode, frames)
        resampling = self._scale(source, weights, scale)
        finetune = finetune_steps is not None or finetune_minutes is not None
        trainer = (self._trainer(source, weights, device, precision, finetune_steps, finetune_minutes,
                                 finetune_size, resampling["factor"]) if finetune else None)
        model = None if trainer is not None else self._model(weights, device)
        despeckle_options = {"device": device, "gamma": gamma, "batch_size": batch_size, "precision": precision,
                             "log_bias": log_bias, "scale": resampling["factor"]}

        def work(job: Job):
            with _SceneWatch(source.scene, job):
                job.check()
                net, used = model, model_label(weights)
                if trainer is not None:
                    phase = _Phase(job, trainer.total, "Fine-tuning")
                    result = yield from follow(job, trainer.job, lambda p: phase.report(p.done, p.message))
                    if not result.accepted:  # the safeguard kept the un-tuned model: nothing to save
                        net, used = result.model, model_label(weights, f"; {result.verdict}")
                    elif save_finetuned:  # despeckle with the model as saved: reusing it gives the same result
                        used = str(self._save(result, source.name))
                        net = self._model(used, device)
                    else:
                        net, used = result.model, model_label(weights, NOT_SAVED)
                arrays = yield from self._despeckle(job, source.arrays, net, **despeckle_options)
                return self._store(source, output, arrays, used, resampling)

        return Job(work, f"Speckle2Self: {source.name}")

    def process_in_subprocess(self, inputNode, outputNode=None, frames: str = "all", python: str | None = None,
                              **options):
        """Start despeckling `inputNode` in a separate process, so that the calling thread stays free: the
        speckle2self command line, run by `python` (default: this interpreter; inside Slicer, PythonSlicer).
        Returns a SubprocessJob to `poll()`; its `result` is then the output node, stored as `process_job`
        stores it. Options as for `process_job`; they are checked by the command line, whose one-line error
        `poll()` raises. The speckle scale is chosen here once, so that every file the process despeckles
        (frames of different sizes go as several) gets the factor `process_job` would use."""
        from .cli_process import python_command
        from .subprocess_job import SubprocessJob

        source, output = self._prepare(inputNode, outputNode, frames)
        resampling = self._scale(source, options.get("weights"), options.get("scale", "auto"))
        return SubprocessJob(self, source, output, {**options, "scale": resampling["factor"]}, python_command(python),
                             resampling)

    def _prepare(self, inputNode, outputNode, frames: str) -> tuple[_Input, object]:
        """The input's volumes and arrays, and the existing output node (or None), checked."""
        if frames not in FRAMES:
            raise UserError(f"Unknown frames option {frames!r}", f"use one of {', '.join(FRAMES)}")
        source = self._input(inputNode, frames)
        output = self._output(source, outputNode)
        source.arrays = [nodes.volume_array(v) for v in source.volumes]
        source.scene = inputNode.GetScene()  # kept: the user may delete the input while it runs
        self._check_frame_size(source)
        return source, output

    @staticmethod
    def _model(weights, device):
        from speckle2self.inference import inference_model

        return inference_model(weights, device)

    @staticmethod
    def _input(node, frames: str) -> _Input:
        if node is None:
            raise UserError("No input was given", "select an input volume or sequence")
        if node.GetScene() is None:
            raise UserError(f"Node '{node.GetName()}' is not in a scene", "add it to the scene first")
        browser = nodes.sequence_browser(node)
        if node.IsA("vtkMRMLSequenceBrowserNode"):
            sequence = nodes.volume_sequence(node)
        elif node.IsA("vtkMRMLSequenceNode"):
            sequence = node
        elif nodes.is_volume(node):
            sequence = browser.GetSequenceNode(node) if browser is not None else None
            if sequence is None or frames == "current":
                return _Input([node])
        else:
            raise UserError(f"'{node.GetName()}' is a {node.GetClassName()}",
                            "choose a scalar or vector (RGB) volume, or a volume sequence")
        if frames == "current":
            if browser is None:
                raise UserError(f"Sequence '{sequence.GetName()}' is in no sequence browser, so it has no current "
                                "frame", "despeckle all frames")
            proxy = browser.GetProxyNode(sequence)
            if proxy is None:
                raise UserError(f"Sequence '{sequence.GetName()}' has no proxy volume showing its current frame",
                                "show the sequence in the Sequences module or despeckle all frames")
            return _Input([proxy])
        volumes = [sequence.GetNthDataNode(i) for i in range(sequence.GetNumberOfDataNodes())]
        if not volumes or not all(nodes.is_volume(v) for v in volumes):
            raise UserError(f"Sequence '{sequence.GetName()}' holds no volume frames",
                            "choose a sequence of images (cine loop)")
        return _Input(volumes, sequence, browser)

    @staticmethod
    def _output(source: _Input, node):
        """The existing node to overwrite (None: create one); refuses the input and mismatched classes."""
        if node is None:
            return None
        if source.sequence is None:
            like = source.volumes[0]
            if nodes.same(node, like):
                raise UserError(f"The output '{node.GetName()}' is the input", "choose 'Create new volume'")
            if node.GetClassName() != like.GetClassName():
                raise UserError(f"The output '{node.GetName()}' is a {node.GetClassName()} but the input is a "
                                f"{like.GetClassName()}", "choose 'Create new volume' or a volume of that type")
            return node
        browser = nodes.sequence_browser(node)
        sequence = node if node.IsA("vtkMRMLSequenceNode") else (
            browser.GetSequenceNode(node) if nodes.same(browser, source.browser) else None)
        if sequence is None or nodes.same(sequence, source.sequence):
            raise UserError(f"The output '{node.GetName()}' is not a separate sequence of this browser",
                            "choose 'Create new volume' to make a new sequence")
        return sequence

    @staticmethod
    def _check_frame_size(source: _Input) -> None:
        from speckle2self.frames import MIN_SIDE

        for volume, array in zip(source.volumes, source.arrays):
            rows, columns = array.shape[1:3]
            if min(rows, columns) < MIN_SIDE:
                raise UserError(f"Volume '{volume.GetName()}' has frames of {rows}x{columns} pixels (frames run "
                                f"along its slowest axis), fewer than {MIN_SIDE}x{MIN_SIDE}",
                                "despeckle B-mode images or volumes made of B-mode frames")

    @staticmethod
    def _scale(source: _Input, weights, scale) -> dict:
        """The resampling of every frame of the input (`speckle2self.scale.choose`), decided once."""
        from speckle2self import scale as sc
        from speckle2self.frames import grey_frame, validate
        from speckle2self.inference import training_grain

        frames = [(a, i) for a in source.arrays for i in range(len(a))]
        picked = [frames[k] for k in sc.spread(len(frames))]
        grey = [grey_frame(a, validate(a), i, sc.MEASURED_SIDE) for a, i in picked]
        return sc.choose(grey, scale, training_grain(weights))

    @staticmethod
    def _trainer(source: _Input, weights, device, precision, steps, minutes, size, factor):
        """A fine-tuning job on the input's grey frames at the resampling `factor`, starting from `weights`,
        with its progress total."""
        from speckle2self.finetuning import finetune_job
        from speckle2self.frames import grey_stack

        sources = [grey_stack(a) for a in source.arrays]
        extra = {"source": source.name, "application": "3D Slicer (Speckle2SelfSlicer)",
                 **scanner_entry(source.scanner)}
        job = finetune_job(sources, weights, steps, minutes, size, precision, device=device, card_extra=extra,
                           scale=factor)
        return _Trainer(job, steps if steps is not None else minutes * 60)

    def _save(self, result, source_name: str) -> Path:
        from speckle2self.weights import save_checkpoint

        path = new_model_path(self.modelsDir, source_name)
        save_checkpoint(result.model, path, result.card)
        return path

    @staticmethod
    def _despeckle(job: Job, arrays: list[np.ndarray], model, batch_size: int | None, **options):
        """Despeckle every frame of every array, batching small volumes together; returns the new arrays."""
        from speckle2self.inference import despeckle_job

        total = sum(len(a) for a in arrays)
        phase = _Phase(job, total, "Despeckling")
        results: list[np.ndarray] = []
        for group in frame_groups(arrays, batch_size or GROUP_FRAMES):
            offset = sum(len(r) for r in results)
            stack = np.concatenate([arrays[i] for i in group]) if len(group) > 1 else arrays[group[0]]
            inner = despeckle_job(stack, model=model, batch_size=batch_size, **options)
            out = yield from follow(job, inner, lambda p: phase.report(
                offset + p.done, f"frame {offset + p.done:g} of {total}"))
            results += np.split(out, np.cumsum([len(arrays[i]) for i in group])[:-1])
        return results

    def _store(self, source: _Input, output, arrays: list[np.ndarray], used: str, resampling: dict):
        """Write the results into the scene, labelled with the model `used` and the speckle-scale `resampling`; on
        any failure undo every change made to the scene."""
        undo: list = []
        try:
            if source.sequence is None:
                node = self._store_volume(source, output, arrays[0], undo)
            else:
                node = self._store_sequence(source, output, arrays, undo)
            node.SetAttribute(MODEL_ATTRIBUTE, used)
            node.SetAttribute(SCALE_ATTRIBUTE, json.dumps(resampling))
            return node
        except BaseException:
            for action in reversed(undo):
                action()
            raise

    @staticmethod
    def _store_volume(source: _Input, output, array: np.ndarray, undo: list):
        like, node = source.volumes[0], output
        if node is None:
            node = source.scene.AddNewNodeByClass(
                like.GetClassName(), source.scene.GenerateUniqueName(f"{like.GetName()} despeckled"))
            undo.append(lambda: nodes.remove(node))
        nodes.write_volume(node, like, array)
        nodes.place_beside(node, like)
        return node

    def _store_sequence(self, source: _Input, output, arrays: list[np.ndarray], undo: list):
        sequence = output
        if sequence is None:
            name = source.scene.GenerateUniqueName(f"{source.sequence.GetName()} despeckled")
            sequence = source.scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
            undo.append(lambda: nodes.remove(sequence))
        sequence.RemoveAllDataNodes()
        sequence.SetIndexName(source.sequence.GetIndexName())
        sequence.SetIndexUnit(source.sequence.GetIndexUnit())
        sequence.SetIndexType(source.sequence.GetIndexType())
        for i, (like, array) in enumerate(zip(source.volumes, arrays)):
            frame = like.NewInstance()
            frame.SetName(like.GetName())
            nodes.write_volume(frame, like, array)
            sequence.SetDataNodeAtValue(frame, source.sequence.GetNthIndexValue(i))
        if source.browser is not None and source.browser.GetScene() is not None:  # not deleted meanwhile
            self._synchronize(source, sequence, undo)
        return sequence

    def _synchronize(self, source: _Input, sequence, undo: list) -> None:
        """Add `sequence` to the input's browser and, with the sequences logic, make its proxy volume."""
        browser = source.browser
        had_proxy = browser.GetProxyNode(sequence) is not None
        added = not browser.IsSynchronizedSequenceNodeID(sequence.GetID())
        if added:
            browser.AddSynchronizedSequenceNodeID(sequence.GetID())
        if self.sequencesLogic is not None:
            self.sequencesLogic.UpdateProxyNodesFromSequences(browser)
        proxy = browser.GetProxyNode(sequence)
        if proxy is not None and not had_proxy:
            undo.append(lambda: nodes.remove(proxy))
        if added:  # undone first: a proxy removed while its sequence is still synchronized comes back
            undo.append(lambda: browser.RemoveSynchronizedSequenceNode(sequence.GetID()))
        like = browser.GetProxyNode(source.sequence)
        if proxy is not None and like is not None:
            proxy.CreateDefaultDisplayNodes()
            nodes.copy_display(proxy, like)
            nodes.place_beside(proxy, like)

