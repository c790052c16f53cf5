"""The page of `speckle2self view`: its layout and callbacks.

The work is Speckle2SelfSlicerLib's and speckle2self's, as in the Slicer module: files are read by speckle2self's
readers into the scene (Speckle2SelfSlicerLib.files), despeckled and fine-tuned by the module's separate-process
job (Speckle2SelfLogic.process_in_subprocess), polled on the server's loop, and saved by speckle2self's writers
for the browser to download. Reading and writing files run in an executor, off the loop.
"""
from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from trame.app.file_upload import ClientFile
from trame.ui.vuetify3 import SinglePageLayout
from trame.widgets import html
from trame.widgets import vuetify3 as v3

from speckle2self.errors import UserError
from speckle2self.frames import frame_count, frame_shape, validate
from speckle2self.image_io import SUPPORTED_EXTENSIONS, ImageData, extension, read_image, write_image
from speckle2self.jobs import Progress, duration
from Speckle2SelfSlicerLib import FINETUNE_STEPS, MODEL_ATTRIBUTE, Speckle2SelfLogic, displayed_volume
from Speckle2SelfSlicerLib.cli_process import ProcessFailed
from Speckle2SelfSlicerLib.files import add_image, result_array, result_name

from .views import NAMES, LinkedViews

POLL_SECONDS = 0.1
"""How often the page reads the separate process's progress."""
FILE_INPUT = "speckle2self-open"
log = logging.getLogger(__name__)


@dataclass
class Opened:
    """A file open in the page: what it was read as (without its pixels), its node in the scene (a volume, or a
    cine's sequence browser) and the last result (a volume or sequence, None before)."""

    name: str
    image: ImageData
    description: str
    node: object
    result: object = None


def one_line(error: Exception) -> str:
    """What the status line says of a failure: a user's mistake or a failed process as its one-line message,
    anything else with its type (its traceback goes to the server's log)."""
    if isinstance(error, ProcessFailed):
        log.error("%s\n%s", error, error.log)
    elif not isinstance(error, UserError):
        log.exception("speckle2self view", exc_info=error)
        return " ".join(f"{type(error).__name__}: {error}".split())
    return " ".join(str(error).split())


def describe(image: ImageData) -> str:
    """"3 frames of 480 x 640 pixels", "image of 400 x 600 pixels" and the like; UserError for an image that cannot
    be despeckled."""
    layout = validate(image.array)
    rows, columns = frame_shape(image.array, layout)
    count = frame_count(layout)
    what = {"sequence": "frame", "volume": "slice"}.get(image.kind, "image")
    return f"{count} {what}s of {rows} x {columns} pixels" if count > 1 else f"{what} of {rows} x {columns} pixels"


def read_uploads(files: list[dict]) -> list[ImageData]:
    """Read uploaded files (trame file dicts) in a temporary folder: every image among them (a header and its data
    file are uploaded together)."""
    with tempfile.TemporaryDirectory(prefix="speckle2self-upload-") as folder:
        paths = []
        for upload in map(ClientFile, files):
            paths.append(Path(folder) / Path(upload.name).name)  # a name only, never a path of the client's
            paths[-1].write_bytes(upload.content or b"")
        images = [p for p in paths if extension(p) in SUPPORTED_EXTENSIONS] or paths
        return [read_image(p) for p in images]


def written(name: str, array, like: ImageData) -> bytes:
    """The file `name` as speckle2self's writer makes it from `array` with the geometry and metadata of `like`."""
    with tempfile.TemporaryDirectory(prefix="speckle2self-save-") as folder:
        path = Path(folder) / name
        write_image(path, array, like=like)
        return path.read_bytes()


class ReviewPage:
    """Open, Despeckle, Fine-tune, Cancel and Save; the Input and Output views side by side, Fade and Frame."""

    def __init__(self, server, models_dir: Path | str | None = None):
        self.server, self.state = server, server.state
        self.views = LinkedViews(server)
        self.logic = Speckle2SelfLogic(self.views.sequences, models_dir)
        self.opened: list[Opened] = []
        self.job = None
        self._uploads: list[dict] = []
        self.state.update({"trame__title": "Speckle2Self review", "files": [], "current": None, "status": "",
                           "progress": 0, "progress_text": "", "busy": False, "has_result": False,
                           "fade": 1.0, "frame": 0, "frames": 0})
        self.state.change("fade")(lambda fade, **_: self.views.set_fade(float(fade)))
        self.state.change("frame")(lambda frame, **_: self._select_frame(int(frame)))
        self._layout()

    # Files

    async def upload(self, files: list) -> None:
        """A chunk of files from the Open button; an empty one ends the upload and opens them."""
        if files:
            self._uploads.extend(files)
            return
        files, self._uploads = self._uploads, []
        with self.state:
            self.state.status = "Opening..."
        try:
            images = await asyncio.get_running_loop().run_in_executor(None, read_uploads, files)
            with self.state:
                for image in images:
                    self.add(image)
        except Exception as error:
            with self.state:
                self.state.status = one_line(error)

    def add(self, image: ImageData) -> None:
        """Open a file read by speckle2self's reader."""
        name, description = image.path.name, describe(image)  # checked before anything is added
        node = add_image(self.views.scene, image, name[:len(name) - len(extension(image.path))],
                         self.views.sequences)
        self.opened.append(Opened(name, image.without_pixels(), description, node))
        self.state.files = [{"title": o.name, "value": i} for i, o in enumerate(self.opened)]
        self.state.current = len(self.opened) - 1
        self.state.status = f"Opened {name}: {description}."
        self._show()

    def choose(self, current: int) -> None:
        """Show another open file."""
        self.state.current = current
        self.state.status = f"{self.opened[current].name}: {self.opened[current].description}."
        self._show()

    def _current(self) -> Opened | None:
        return self.opened[self.state.current] if self.state.current is not None else None

    # Review

    def _show(self) -> None:
        """Show the current file and its result; the Frame slider goes over a cine's frames."""
        opened = self._current()
        if opened is None:
            return
        browser = opened.node if opened.node.IsA("vtkMRMLSequenceBrowserNode") else None
        self.state.frames = browser.GetNumberOfItems() if browser is not None else 0
        self.state.frame = browser.GetSelectedItemNumber() if browser is not None else 0
        self.state.has_result = opened.result is not None
        result = displayed_volume(opened.result) if opened.result is not None else None
        self.views.show(displayed_volume(opened.node), result, float(self.state.fade))

    def _select_frame(self, frame: int) -> None:
        opened = self._current()
        if opened is not None and opened.node.IsA("vtkMRMLSequenceBrowserNode"):
            opened.node.SetSelectedItemNumber(frame)

    # Despeckling

    def despeckle(self, finetune: bool = False) -> None:
        """Despeckle the current file in a separate process (fine-tuning the model on it first), as the module
        does; the result appears when the job has finished."""
        opened = self._current()
        if opened is None or self.job is not None:
            return
        options = {"finetune_steps": FINETUNE_STEPS} if finetune else {}
        try:
            self.job = self.logic.process_in_subprocess(opened.node, **options)
        except Exception as error:
            self.state.status = one_line(error)
            return
        doing = "Fine-tuning on and despeckling" if finetune else "Despeckling"
        self.state.update({"busy": True, "progress": 0, "progress_text": "Starting...",
                           "status": f"{doing} {opened.name}"})
        asyncio.get_running_loop().create_task(self._follow(self.job, opened, time.perf_counter()))

    async def _follow(self, job, opened: Opened, start: float) -> None:
        try:
            while job.poll():
                with self.state:
                    self._show_progress(job.last)
                await asyncio.sleep(POLL_SECONDS)
        except Exception as error:
            if self.job is job:
                with self.state:
                    self._end(one_line(error))
            return
        if self.job is not job:  # cancelled meanwhile
            return
        opened.result = job.result
        with self.state:
            self._end(f"Done in {duration(time.perf_counter() - start)}: '{job.result.GetName()}' "
                      f"(model: {job.result.GetAttribute(MODEL_ATTRIBUTE)}).")
            self.state.progress = 100
            if opened is self._current():
                self._show()

    def _show_progress(self, progress: Progress | None) -> None:
        if progress is None:
            return
        left = progress.seconds_left
        self.state.progress = round(100 * progress.fraction)
        self.state.progress_text = progress.message + ("" if left is None else f" - about {duration(left)} left")

    def cancel(self) -> None:
        """Stop the running job: its process ends, nothing is added to the scene or written."""
        if self.job is not None:
            self.job.cancel()
            self._end("Cancelled. Nothing was added.")

    def _end(self, status: str) -> None:
        self.job = None
        self.state.update({"busy": False, "progress_text": "", "status": status})

    # Saving

    async def save(self) -> dict | None:
        """The current result as a file for the browser to download: the input's format (in one file), geometry and
        metadata, written by speckle2self's writer."""
        opened = self._current()
        if opened is None or opened.result is None:
            return None
        name = result_name(opened.name)
        array = result_array(opened.result, opened.image)
        try:
            content = await asyncio.get_running_loop().run_in_executor(None, written, name, array, opened.image)
        except Exception as error:
            with self.state:
                self.state.status = one_line(error)
            return None
        with self.state:
            self.state.status = f"Saved {name}."
        return {"name": name, "content": self.server.protocol.addAttachment(content)}

    # Layout

    def _layout(self) -> None:
        upload = self.server.controller.trigger_name(self.upload)
        save = self.server.controller.trigger_name(self.save)
        with SinglePageLayout(self.server, full_height=True) as layout:
            layout.title.set_text("Speckle2Self review")
            layout.icon.hide()
            layout.footer.hide()
            with layout.toolbar:
                v3.VSpacer()
                html.Input(type="file", multiple=True, style="display: none", raw_attrs=[f'id="{FILE_INPUT}"'],
                           change=f"window.load_files_by_chunks($event.target.files, {{trigger_name: '{upload}'}})"
                                  ".finally(() => { $event.target.value = null })")
                v3.VBtn("Open", click=f"window.document.getElementById('{FILE_INPUT}').click()", disabled=("busy",))
                v3.VSelect(model_value=("current",), update_modelValue=(self.choose, "[$event]"), items=("files",),
                           label="File", density="compact",
                           hide_details=True, disabled=("busy || !files.length",), style="max-width: 320px")
                v3.VBtn("Despeckle", click=self.despeckle, disabled=("busy || current === null",))
                v3.VBtn("Fine-tune", click=(self.despeckle, "[true]"), disabled=("busy || current === null",))
                v3.VBtn("Cancel", click=self.cancel, disabled=("!busy",))
                v3.VBtn("Save", disabled=("busy || !has_result",),
                        click=f"trigger('{save}').then(file => file && utils.download(file.name, file.content, "
                              "'application/octet-stream'))")
            with layout.content, html.Div(style="display: flex; flex-direction: column; height: 100%"):
                with html.Div(classes="d-flex align-center flex-wrap pa-2", style="gap: 24px"):
                    with html.Label(classes="d-flex align-center", style="gap: 8px"):
                        html.Span("Fade")
                        html.Input(type="range", min=0, max=1, step=0.05, v_model_number=("fade",))
                    with html.Label(classes="d-flex align-center", style="gap: 8px"):
                        html.Span("Frame")
                        html.Input(type="range", min=0, max=("Math.max(frames - 1, 0)",), step=1,
                                   v_model_number=("frame",), disabled=("frames < 2",))
                        html.Span("{{ frames ? `${frame + 1} / ${frames}` : '' }}")
                    with html.Div(style="flex: 1; min-width: 240px"):
                        v3.VProgressLinear(model_value=("progress",), height=8, raw_attrs=['aria-label="Progress"'])
                        html.Div("{{ progress_text }}", classes="text-caption")
                html.Div("{{ status }}", classes="px-2 pb-2", raw_attrs=['role="status"'])
                with html.Div(style="display: flex; flex: 1; min-height: 0; background: black"):
                    for name in NAMES:
                        with html.Div(style="flex: 1; display: flex; position: relative; border: 1px solid #333",
                                      raw_attrs=['role="region"', f'aria-label="{name}"']):
                            self.views.template(name)


def serve(files, port: int, host: str, models_dir: Path | str | None = None) -> None:
    """Open `files` (each checked first) and serve the page at host:port until interrupted."""
    from trame.app import get_server

    images = [read_image(Path(path)) for path in files]
    server = get_server("speckle2self", client_type="vue3")
    page = ReviewPage(server, models_dir)
    for image in images:
        page.add(image)
    server.start(port=port, host=host, open_browser=False, timeout=0)
