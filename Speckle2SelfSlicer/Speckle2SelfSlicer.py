"""3D Slicer module: despeckle ultrasound images, volumes and cine sequences with Speckle2Self.

The work is done by Speckle2SelfSlicerLib (Qt-free, tested on slicer-core) and the speckle2self package;
this file holds the module description, the GUI and an in-application test. Despeckling and fine-tuning run
in a separate process (PythonSlicer running the speckle2self command line), polled from a timer, so Slicer
stays responsive. PyTorch and MONAI are installed on the first Despeckle click and never imported when Slicer
loads the module.
"""
import contextlib
import enum
import importlib
import logging
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated, Optional, Union

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from speckle2self.errors import UserError
from speckle2self.budgets import PRESETS
from speckle2self.jobs import duration as _duration
from Speckle2SelfSlicerLib import (FINETUNE_STEPS, MODEL_ATTRIBUTE, SCANNER_ATTRIBUTE, Speckle2SelfLogic,
                                   delete_finetuned_models, displayed_volume, first_volume, latest_for_scanner,
                                   list_finetuned_models, scanner_label, sequence_browser)
from Speckle2SelfSlicerLib.finetuned import SCANNER_TAGS
from Speckle2SelfSlicerLib.cli_process import ProcessFailed

HOMEPAGE = "https://github.com/speckle2self/SlicerSpeckle2Self"
SAMPLE_NAME = "Speckle2SelfBMode"
SAMPLE_FILE = "BkCurvilinearScanConvertedData.nrrd"
SAMPLE_SHA256 = "45bffd517f343b46b3e47e3d4bb90b50e169b8ac58627071361307a4398c2742"
POLL_MS = 100
"""How often the panel reads the separate process's progress."""


class Frames(enum.Enum):
    """Values are Speckle2SelfSlicerLib.FRAMES."""

    ALL = "all"
    CURRENT = "current"

    def label(self):
        return {Frames.ALL: _("All frames"), Frames.CURRENT: _("Current frame")}[self]


class Model(enum.Enum):
    """DEFAULT and FAST are the shipped models of speckle2self.weights.SHIPPED."""

    DEFAULT = "default"
    FAST = "fast"
    FILE = "file"

    def label(self):
        return {Model.DEFAULT: _("Default (shipped)"), Model.FAST: _("Fast (shipped, a quarter of the work)"),
                Model.FILE: _("Weights file")}[self]


class Device(enum.Enum):
    """Values are the devices of speckle2self.inference.resolve_device."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"

    def label(self):
        return {Device.AUTO: _("Auto"), Device.CPU: _("CPU"), Device.CUDA: _("GPU (CUDA)")}[self]


class FinetuneUnit(enum.Enum):
    STEPS = "steps"
    MINUTES = "minutes"

    def label(self):
        return {FinetuneUnit.STEPS: _("steps"), FinetuneUnit.MINUTES: _("minutes")}[self]


class ReviewMode(enum.Enum):
    SIDE_BY_SIDE = "side by side"
    OVERLAY = "overlay"

    def label(self):
        return {ReviewMode.SIDE_BY_SIDE: _("Side by side (linked views)"),
                ReviewMode.OVERLAY: _("Overlay (fade)")}[self]


Volume = Union[slicer.vtkMRMLScalarVolumeNode, slicer.vtkMRMLVectorVolumeNode, None]


@parameterNodeWrapper
class Speckle2SelfParameterNode:
    """The panel's choices, saved with the scene (bound to the widgets named in the .ui file's SlicerParameterName
    properties). The weights file is not among them: its path box keeps its own history."""

    inputVolume: Volume
    outputVolume: Volume
    frames: Frames = Frames.ALL
    model: Model = Model.DEFAULT
    device: Device = Device.AUTO
    gamma: Annotated[float, WithinRange(0.3, 3.0)] = 1.0
    keepLogBias: bool = True
    finetune: bool = False
    finetuneLength: Annotated[int, WithinRange(1, 100000)] = FINETUNE_STEPS
    finetuneUnit: FinetuneUnit = FinetuneUnit.STEPS
    finetuneSize: Annotated[int, Choice([128, 256, 384, 512])] = 256
    saveFinetuned: bool = True
    reviewMode: ReviewMode = ReviewMode.SIDE_BY_SIDE
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    tissueRegion: Optional[slicer.vtkMRMLMarkupsROINode]
    darkRegion: Optional[slicer.vtkMRMLMarkupsROINode]


class Speckle2SelfSlicer(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Speckle2Self Despeckle")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Ultrasound")]
        self.parent.dependencies = []
        self.parent.contributors = ["Speckle2Self for 3D Slicer developers"]
        self.parent.helpText = _("""
Reduces speckle in ultrasound B-mode images, 3-D volumes (slice by slice) and cine sequences with
Speckle2Self, a self-supervised network trained without clean images.
<ol>
<li>Load an image, volume or sequence (NRRD, NIfTI, MHA, PLUS .igs.mha, DICOM ultrasound cine),
or the bundled <i>Speckle2SelfBMode</i> phantom image from the Sample Data module.</li>
<li>Select it as input. Keep <i>Create new volume</i> as output: the input is never changed.</li>
<li>For a sequence choose <i>All frames</i> (a new sequence that plays along with the input) or
<i>Current frame</i>.</li>
<li>Click <b>Despeckle</b>. The first time, PyTorch and MONAI are installed (a few minutes).</li>
<li>Review input and output side by side (linked views) or as an overlay with an opacity slider.</li>
</ol>
Optionally fine-tune the model on your own data first (no clean images needed); fine-tuned models can be
saved and reused. RGB images are despeckled as grey (luminance) written to R, G and B.
See <a href="{homepage}">the documentation</a>.
""").format(homepage=HOMEPAGE)
        self.parent.acknowledgementText = _("""
Speckle2Self is the method of Li, Navab and Jiang: "Speckle2Self: Self-Supervised Ultrasound Speckle
Reduction Without Clean Data", Medical Image Analysis 2025, 103755. Please cite it when you use this module.
The sample image comes from the PLUS toolkit test data (PlusLibData, BSD-3-Clause).
""")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Register the bundled B-mode phantom image with the Sample Data module."""
    import SampleData

    resources = Path(__file__).parent / "Resources"
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="Speckle2Self",
        sampleName=SAMPLE_NAME,
        thumbnailFileName=str(resources / "Icons" / "Speckle2SelfSlicer.png"),
        uris=(resources / "SampleData" / SAMPLE_FILE).as_uri(),
        fileNames=SAMPLE_FILE,
        checksums=f"SHA256:{SAMPLE_SHA256}",
        nodeNames="BkCurvilinearScanConvertedData",
    )


def pythonSlicer() -> str:
    """Slicer's Python interpreter outside the application (PythonSlicer, on the PATH Slicer sets, as its pip
    helpers find it; sys.executable points to it too, as SlicerNNUnet relies on)."""
    return shutil.which("PythonSlicer") or sys.executable


def installTorch(ask: bool = True) -> bool:
    """Install PyTorch, or upgrade one older than Speckle2Self needs, through the PyTorch extension (after asking,
    with `ask`); False if it is still missing or too old."""
    from Speckle2SelfSlicerLib import dependencies

    if not dependencies.unmet([dependencies.TORCH]):
        return True
    try:
        import PyTorchUtils
    except ModuleNotFoundError:
        slicer.util.errorDisplay(_("Speckle2Self needs the PyTorch extension. Install 'PyTorch' in the Extensions "
                                   "Manager, restart 3D Slicer and click Despeckle again."))
        return False
    requirement = dependencies.version_range(dependencies.TORCH)
    if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=ask, torchVersionRequirement=requirement) is None:
        return False
    if dependencies.unmet([dependencies.TORCH]):  # e.g. its files were in use
        slicer.util.errorDisplay(_("PyTorch {version} is older than Speckle2Self needs ({requirement}) and could not "
                                   "be upgraded. Restart 3D Slicer and click Despeckle again.").format(
            version=dependencies.installed_version("torch"), requirement=requirement))
        return False
    return True


def installPackages(required, optional=(), ask: bool = True, report=logging.info) -> bool:
    """Install the missing ones of the pip requirements `required` and `optional` after one question (with `ask`),
    telling `report` what is being installed; True when every required one is installed. An optional one that fails
    to install is left out with a warning."""
    from Speckle2SelfSlicerLib import dependencies

    required, optional = dependencies.unmet(required), dependencies.unmet(optional)
    if not required and not optional:
        return True
    if ask:
        question = " ".join(filter(None, [
            _("Speckle2Self needs the Python packages {packages}.").format(packages=", ".join(required))
            if required else "",
            _("The optional packages {packages} make despeckling on the CPU faster.").format(
                packages=", ".join(optional)) if optional else "",
            _("Install them now? This takes a few minutes.")]))
        if not slicer.util.confirmOkCancelDisplay(question, _("Speckle2Self: Python packages")):
            return not required
    report(_("Installing {packages}...").format(packages=", ".join(required + optional)))
    if required:
        slicer.util.pip_install(required)
    if optional:
        try:
            slicer.util.pip_install(list(optional))
        except Exception as error:  # optional: whatever pip raised, despeckling runs on torch without them
            logging.warning(f"Speckle2Self: {', '.join(optional)} not installed ({error}); despeckling runs on torch")
    importlib.invalidate_caches()
    return not dependencies.unmet(required)


def scannerOf(volume) -> Optional[str]:
    """The scanner and probe of `volume`: its SCANNER_ATTRIBUTE, else read from Slicer's DICOM database for a volume
    loaded from DICOM (and then stored on it and on its sequence, where fine-tuning reads it)."""
    label = volume.GetAttribute(SCANNER_ATTRIBUTE)
    uids = volume.GetAttribute("DICOM.instanceUIDs")
    if label or not uids or getattr(slicer, "dicomDatabase", None) is None:
        return label
    uid = uids.split()[0]
    tags = {tag: slicer.dicomDatabase.instanceValue(uid, tag.replace("|", ",")) for tag in SCANNER_TAGS}
    label = scanner_label(tags)
    browser = sequence_browser(volume)
    for node in (volume, browser.GetMasterSequenceNode() if browser is not None else None):
        if label and node is not None:
            node.SetAttribute(SCANNER_ATTRIBUTE, label)
    return label


class Speckle2SelfSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: choices in a typed parameter node, the work in a separate process polled by a timer,
    review and measurement of the result."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._dependenciesReady = False
        self._optionalAsked = False
        self._job = None
        self._jobInput = None
        self._jobStart = 0.0
        self._lastResult = None
        self._offeredFor = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/Speckle2SelfSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = Speckle2SelfSlicerLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_MS)
        self._timer.connect("timeout()", self._pollJob)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.weightsPathLineEdit.connect("currentPathChanged(QString)", self._updateEnabledState)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.deleteModelsButton.connect("clicked(bool)", self.onDeleteModels)
        self.ui.showResultButton.connect("clicked(bool)", self.showResult)
        self.ui.measureButton.connect("clicked(bool)", self.onMeasure)
        self.ui.opacitySlider.connect("valueChanged(double)", self._setOverlayOpacity)
        for budget in PRESETS:
            self.ui.finetunePresetComboBox.addItem(budget.label())
        self.ui.finetunePresetComboBox.setCurrentIndex(-1)
        self.ui.finetunePresetComboBox.connect("activated(int)", self._chooseBudget)
        self.ui.progressBar.visible = False

        self.initializeParameterNode()

    def cleanup(self):
        self._stopJob()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        """Keep the parameter node (a running job still reads it) but stop updating the panel from it."""
        self._unbindParameterNode()

    def onSceneStartClose(self, caller, event):
        with self._errorsShown(_("Cannot stop despeckling")):
            self._stopJob()
        self._lastResult = None
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # Parameter node

    def initializeParameterNode(self):
        """Use the module's parameter node; preselect the first volume as input (not a labelmap)."""
        self.setParameterNode(Speckle2SelfParameterNode(self.logic.getParameterNode()))
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = first_volume(slicer.mrmlScene)

    def setParameterNode(self, parameterNode):
        """Bind the widgets to `parameterNode` (a Speckle2SelfParameterNode, or None)."""
        self._unbindParameterNode()
        self._parameterNode = parameterNode
        if self._parameterNode is not None:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)  # refills the combo boxes
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateEnabledState)
            self._updateDeviceChoices()
            self._updateEnabledState()

    def _unbindParameterNode(self):
        if self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateEnabledState)

    def _updateEnabledState(self, caller=None, event=None):
        with self._errorsShown(_("Cannot update the panel")):
            parameters = self._parameterNode
            if parameters is None:
                return
            self.ui.framesComboBox.enabled = sequence_browser(parameters.inputVolume) is not None
            if parameters.inputVolume is not self._offeredFor:
                self._offeredFor = parameters.inputVolume
                self._offerTunedModel(parameters.inputVolume)
            weightsFile = parameters.model is Model.FILE
            self.ui.weightsPathLineEdit.enabled = weightsFile
            for widget in (self.ui.finetunePresetComboBox, self.ui.finetuneLengthSpinBox, self.ui.finetuneUnitComboBox,
                           self.ui.finetuneSizeComboBox, self.ui.saveFinetunedCheckBox):
                widget.enabled = parameters.finetune
            self.ui.opacitySlider.enabled = parameters.reviewMode is ReviewMode.OVERLAY
            self.ui.showResultButton.enabled = self._lastResult is not None
            self.ui.measureButton.enabled = (self._lastResult is not None and parameters.tissueRegion is not None
                                             and parameters.darkRegion is not None)
            if self._job is not None:
                return
            missing = (_("Select an input volume.") if parameters.inputVolume is None else
                       _("Choose a weights file.") if weightsFile and not self.ui.weightsPathLineEdit.currentPath
                       else "")
            self.ui.applyButton.enabled = not missing
            self.ui.applyButton.toolTip = missing or _("Despeckle the input.")

    def _updateDeviceChoices(self):
        """Offer the GPU only when the installed PyTorch can use CUDA (an outdated one is not imported: it could not
        be upgraded while in use)."""
        from Speckle2SelfSlicerLib import dependencies

        cuda = False
        if not dependencies.unmet([dependencies.TORCH]):
            try:
                import torch

                cuda = torch.cuda.is_available()
            except Exception as error:  # a broken PyTorch install must not break the panel
                logging.warning(f"Speckle2Self: cannot import PyTorch: {error}")
        item = self.ui.deviceComboBox.model().item(list(Device).index(Device.CUDA))
        item.setEnabled(cuda)
        item.setToolTip("" if cuda else _("No CUDA GPU is available to PyTorch (or PyTorch is not installed yet)."))
        if not cuda and self._parameterNode is not None and self._parameterNode.device is Device.CUDA:
            self._parameterNode.device = Device.AUTO

    def _weights(self, model: Model) -> Optional[str]:
        """The weights file of the chosen model (None: the shipped default)."""
        if model is Model.FILE:
            return self.ui.weightsPathLineEdit.currentPath
        from speckle2self.weights import shipped_weights

        return None if model is Model.DEFAULT else str(shipped_weights(model.value))

    def _options(self) -> dict:
        """Keyword options of Speckle2SelfLogic.process_in_subprocess from the parameter node."""
        parameters = self._parameterNode
        options = {
            "frames": parameters.frames.value,
            "weights": self._weights(parameters.model),
            "device": parameters.device.value,
            "gamma": parameters.gamma,
            "log_bias": not parameters.keepLogBias,
        }
        if parameters.finetune:
            length = "finetune_steps" if parameters.finetuneUnit is FinetuneUnit.STEPS else "finetune_minutes"
            options.update({length: parameters.finetuneLength, "finetune_size": parameters.finetuneSize,
                            "save_finetuned": parameters.saveFinetuned})
        return options

    # Dependencies

    def _ensureDependencies(self) -> bool:
        """Install PyTorch (upgrading an old one) and MONAI on first use, offering the optional int8 packages in the
        same question once a session; False if a required one is missing."""
        if self._dependenciesReady:
            return True
        from Speckle2SelfSlicerLib import dependencies

        if dependencies.unmet([dependencies.TORCH]):
            self._setStatus(_("Installing PyTorch (this can take several minutes)..."))
            if not installTorch():
                self._setStatus(_("PyTorch is not installed, so despeckling cannot run."))
                return False
        optional = () if self._optionalAsked else dependencies.OPTIONAL
        self._optionalAsked = True
        if not installPackages(dependencies.REQUIRED, optional, report=self._setStatus):
            self._setStatus(_("MONAI is not installed, so despeckling cannot run."))
            return False
        self._setStatus("")
        self._dependenciesReady = True
        self._updateDeviceChoices()
        return True

    @contextlib.contextmanager
    def _errorsShown(self, title: str):
        """Show an error raised inside as the module's message (see _showError): raised out of a Qt slot it would
        only reach the Python console."""
        try:
            yield
        except Exception as error:
            self._showError(title, error)

    # Running

    def onApplyButton(self):
        """Start despeckling in a separate process, or cancel the running one."""
        with self._errorsShown(_("Cannot despeckle")):
            if self._job is not None:
                self._stopJob(_("Cancelled. Nothing was added to the scene."))
                return
            if not self._ensureDependencies():  # pip's failure (e.g. no network) is shown as the error
                return
            inputNode = self._parameterNode.inputVolume
            with slicer.util.WaitCursor():
                self._job = self.logic.process_in_subprocess(inputNode, self._parameterNode.outputVolume,
                                                             python=pythonSlicer(), **self._options())
            self._jobInput, self._jobStart = inputNode, time.perf_counter()
            self._setRunning(True)
            self._timer.start()

    def _pollJob(self):
        """Show the separate process's progress; store its result when it has finished."""
        with self._errorsShown(_("Despeckling failed")):
            try:
                running = self._job.poll()
                if running:
                    self._showProgress(self._job.last)
                    return
                output = self._job.result
                self._lastResult = (self._jobInput, displayed_volume(output))
            except Exception as error:  # the timer stops: one message, not one every POLL_MS
                self._stopJob(_("Failed: {error}").format(error=error))
                raise
            self._stopJob(_("Done in {time}: '{output}' (model: {model}).").format(
                time=_duration(time.perf_counter() - self._jobStart), output=output.GetName(),
                model=output.GetAttribute(MODEL_ATTRIBUTE)))
            logging.info(self.ui.statusLabel.text)
            self.showResult()

    def _stopJob(self, message: str = ""):
        """Stop polling; a job still running is cancelled (its process terminated, nothing added)."""
        self._timer.stop()
        if self._job is not None:
            self._job.cancel()
        self._job = None
        self._setRunning(False)
        self._setStatus(message)

    def _setRunning(self, running: bool):
        for widget in (self.ui.inputsCollapsibleButton, self.ui.modelCollapsibleButton,
                       self.ui.finetuneCollapsibleButton):
            widget.enabled = not running
        self.ui.applyButton.text = _("Cancel") if running else _("Despeckle")
        self.ui.applyButton.enabled = True
        self.ui.progressBar.visible = running
        self.ui.progressBar.value = 0
        self.ui.progressBar.format = _("Starting...")
        if not running:
            self._updateEnabledState()

    def _showProgress(self, progress):
        if progress is None:
            return
        self.ui.progressBar.value = round(1000 * progress.fraction)
        left = progress.seconds_left
        self.ui.progressBar.format = progress.message + (
            "" if left is None else _(" - about {time} left").format(time=_duration(left)))

    @staticmethod
    def _showError(title: str, error: Exception):
        """A user mistake as its one-line message; a crashed process with its log, anything else with the
        traceback as details."""
        if isinstance(error, UserError):
            details = {}
        elif isinstance(error, ProcessFailed):
            details = {"detailedText": error.log}
        else:
            details = {"detailedText": traceback.format_exc()}
        slicer.util.errorDisplay(f"{title}: {error}", **details)

    def _setStatus(self, message: str):
        self.ui.statusLabel.text = message
        slicer.app.processEvents()

    # Review and maintenance

    def showResult(self):
        """Show the last input and output side by side in linked slice views, or as a fading overlay."""
        with self._errorsShown(_("Cannot show the result")):
            if self._lastResult is None or any(v is None or v.GetScene() is None for v in self._lastResult):
                return
            inputVolume, outputVolume = self._lastResult
            if self._parameterNode.reviewMode is ReviewMode.OVERLAY:
                slicer.util.setSliceViewerLayers(background=inputVolume, foreground=outputVolume,
                                                 foregroundOpacity=self._parameterNode.opacity, fit=True,
                                                 rotateToVolumePlane=True)
                return
            layoutManager = slicer.app.layoutManager()
            layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
            for viewName, volume in (("Red", inputVolume), ("Yellow", outputVolume)):
                sliceLogic = layoutManager.sliceWidget(viewName).sliceLogic()
                composite = sliceLogic.GetSliceCompositeNode()
                composite.SetBackgroundVolumeID(volume.GetID())
                composite.SetForegroundVolumeID(None)
                composite.SetLinkedControl(True)
                sliceLogic.GetSliceNode().RotateToVolumePlane(volume)
                sliceLogic.FitSliceToAll()

    def _offerTunedModel(self, volume) -> None:
        """When a model was fine-tuned on scans from the input's scanner and probe, put it in the weights file box
        and say so (the user chooses Model > Weights file to use it; `speckle2self batch --weights` takes it for a
        folder of scans)."""
        scanner = scannerOf(volume) if volume is not None else None
        model = latest_for_scanner(self.logic.modelsDir, scanner)
        if model is not None:
            self.ui.weightsPathLineEdit.currentPath = str(model.path)
            self._setStatus(_("A model fine-tuned on scans from {scanner} is saved ({model}): choose Model > Weights "
                              "file to use it here, or give it to `speckle2self batch FOLDER -o OUTPUT --weights "
                              "{path}` for a folder of scans.").format(scanner=scanner, model=model.describe(),
                                                                       path=model.path))

    def _chooseBudget(self, index: int):
        """A preset budget sets the fine-tuning length in steps."""
        with self._errorsShown(_("Cannot choose the fine-tuning budget")):
            if self._parameterNode is not None and 0 <= index < len(PRESETS):
                self._parameterNode.finetuneUnit = FinetuneUnit.STEPS
                self._parameterNode.finetuneLength = PRESETS[index].steps

    def _setOverlayOpacity(self, opacity: float):
        with self._errorsShown(_("Cannot set the overlay's opacity")):
            if self._lastResult is not None and self._parameterNode.reviewMode is ReviewMode.OVERLAY:
                slicer.util.setSliceViewerLayers(foregroundOpacity=opacity)

    def onMeasure(self):
        """Fill the table with the quality of the last input and output on the two regions."""
        with self._errorsShown(_("Cannot measure")):
            from Speckle2SelfSlicerLib import dependencies

            if not installPackages(dependencies.MEASURE, report=self._setStatus):
                return
            self._setStatus("")
            from Speckle2SelfSlicerLib.measure import METRICS, compare

            inputVolume, outputVolume = self._lastResult
            with slicer.util.WaitCursor():
                readout = compare(inputVolume, outputVolume, self._parameterNode.tissueRegion,
                                  self._parameterNode.darkRegion)
                table = self.ui.measureTable
                table.setColumnCount(2)
                table.setRowCount(len(METRICS))
                table.setHorizontalHeaderLabels([_("Input"), _("Output")])  # the order of compare's readout
                table.setVerticalHeaderLabels(list(METRICS))
                for column, values in enumerate(readout.values()):
                    for row, value in enumerate(values.values()):
                        item = qt.QTableWidgetItem("-" if isinstance(value, str) else f"{value:.3g}")
                        item.setToolTip(value if isinstance(value, str) else "")
                        table.setItem(row, column, item)

    def onDeleteModels(self):
        """List the fine-tuned models saved on this computer and delete them after confirmation."""
        with self._errorsShown(_("Cannot delete the fine-tuned models")):
            folder = self.logic.modelsDir
            with slicer.util.WaitCursor():
                models = list_finetuned_models(folder)
            if not models:
                slicer.util.infoDisplay(_("No fine-tuned models are saved in {folder}.").format(folder=folder))
                return
            question = _("Delete the {count} fine-tuned models saved in {folder}?").format(count=len(models),
                                                                                        folder=folder)
            if slicer.util.confirmOkCancelDisplay(question, detailedText="\n".join(m.describe() for m in models)):
                delete_finetuned_models(models)
                self._setStatus(_("Deleted {count} fine-tuned models.").format(count=len(models)))


class Speckle2SelfSlicerLogic(ScriptedLoadableModuleLogic, Speckle2SelfLogic):
    """Speckle2SelfLogic (process, process_job, process_in_subprocess) with Slicer's sequences logic and the
    module's parameter node.

    Scripting: `Speckle2SelfSlicerLogic().process(volumeNode)` despeckles in Slicer's process and returns a new
    despeckled volume node.
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        Speckle2SelfLogic.__init__(self, sequencesLogic=slicer.modules.sequences.logic())


class Speckle2SelfSlicerTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: despeckle the bundled sample with the shipped model, in Slicer's process and in
    PythonSlicer."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_despeckle_sample()
        self.setUp()
        self.test_despeckle_sample_in_a_separate_process()

    def _sample(self):
        """The bundled sample, loaded; PyTorch and MONAI are installed first where they are missing, as the first
        Despeckle click installs them (without asking)."""
        from Speckle2SelfSlicerLib import dependencies
        from speckle2self.weights import DEFAULT_WEIGHTS

        self.delayDisplay("Installing PyTorch and MONAI where they are missing")
        self.assertTrue(installTorch(ask=False) and installPackages(dependencies.REQUIRED, ask=False),
                        "PyTorch or MONAI could not be installed")
        self.assertTrue(DEFAULT_WEIGHTS.is_file(), f"the shipped model {DEFAULT_WEIGHTS} is absent")
        import SampleData

        self.delayDisplay("Loading the bundled B-mode sample")
        return SampleData.downloadSample(SAMPLE_NAME)

    def test_despeckle_sample_in_a_separate_process(self):
        import numpy as np

        volume = self._sample()
        logic = Speckle2SelfSlicerLogic()
        self.delayDisplay("Despeckling in PythonSlicer")
        job = logic.process_in_subprocess(volume, python=pythonSlicer(), device="cpu")
        while job.poll():
            slicer.app.processEvents()
            time.sleep(POLL_MS / 1000)
        self.assertIsNotNone(job.last)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(job.result),
                                      slicer.util.arrayFromVolume(logic.process(volume, device="cpu")))
        self.delayDisplay("Test passed")

    def test_despeckle_sample(self):
        import numpy as np

        volume = self._sample()
        before = slicer.util.arrayFromVolume(volume).copy()

        self.delayDisplay("Despeckling")
        output = Speckle2SelfSlicerLogic().process(volume, device="cpu")

        after = slicer.util.arrayFromVolume(output)
        self.assertIsNot(output, volume)
        self.assertEqual(output.GetClassName(), volume.GetClassName())
        self.assertEqual((after.shape, after.dtype), (before.shape, before.dtype))
        matrices = [vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()]
        volume.GetIJKToRASMatrix(matrices[0])
        output.GetIJKToRASMatrix(matrices[1])
        self.assertTrue(np.array_equal(*(slicer.util.arrayFromVTKMatrix(m) for m in matrices)))
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), before)

        # Speckle is fine grain: neighbouring pixels inside the imaging sector differ much less after.
        def roughness(image):
            row = image[0].astype(float)
            inside = (row[:, 1:] > 0) & (row[:, :-1] > 0)
            return np.abs(np.diff(row, axis=1))[inside].mean()

        self.assertLess(roughness(after), 0.8 * roughness(before))
        self.delayDisplay("Test passed")
