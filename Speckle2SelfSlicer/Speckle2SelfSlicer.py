"""3D Slicer module: despeckle ultrasound images, volumes and cine sequences with Speckle2Self.

The work is done by Speckle2SelfSlicerLib (Qt-free, tested on slicer-core) and the speckle2self package;
this file holds the module description, the GUI and an in-application test. PyTorch and MONAI are
installed on the first Despeckle click and imported inside functions only.
"""
import importlib
import importlib.util
import logging
import time
import traceback
from pathlib import Path

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from speckle2self.errors import Cancelled, UserError
from Speckle2SelfSlicerLib import (FRAMES, MODEL_ATTRIBUTE, Speckle2SelfLogic, delete_finetuned_models,
                                   displayed_volume, list_finetuned_models, sequence_browser)

HOMEPAGE = "https://github.com/speckle2self/Speckle2Self"
SAMPLE_NAME = "Speckle2SelfBMode"
SAMPLE_FILE = "BkCurvilinearScanConvertedData.nrrd"
SAMPLE_SHA256 = "45bffd517f343b46b3e47e3d4bb90b50e169b8ac58627071361307a4398c2742"
TORCH_REQUIREMENT = ">=2.1"
MONAI_REQUIREMENT = "monai>=1.3"
DEVICES = ("auto", "cpu", "cuda")
"""Device per item of deviceComboBox."""
PARAMETER_DEFAULTS = {
    "Frames": "All frames", "Model": "Default (shipped)", "WeightsFile": "", "Device": "Auto", "Gamma": "1.0",
    "KeepLogBias": "true", "Finetune": "false", "FinetuneLength": "200", "FinetuneUnit": "steps",
    "FinetuneSize": "256", "SaveFinetuned": "true", "ReviewMode": "Side by side (linked views)", "Opacity": "0.5",
}


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


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


class Speckle2SelfSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: choices in a parameter node, a job stepped by a timer, review of the result."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._updatingGUIFromParameterNode = False
        self._dependenciesReady = False
        self._job = None
        self._jobInput = None
        self._jobStart = 0.0
        self._lastResult = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/Speckle2SelfSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = Speckle2SelfSlicerLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(0)
        self._timer.connect("timeout()", self._stepJob)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self._parameterWidgets = [
            (self.ui.inputSelector, "InputVolume"), (self.ui.outputSelector, "OutputVolume"),
            (self.ui.framesComboBox, "Frames"), (self.ui.modelComboBox, "Model"),
            (self.ui.deviceComboBox, "Device"), (self.ui.gammaSlider, "Gamma"),
            (self.ui.keepLogBiasCheckBox, "KeepLogBias"), (self.ui.finetuneCheckBox, "Finetune"),
            (self.ui.finetuneLengthSpinBox, "FinetuneLength"),
            (self.ui.finetuneUnitComboBox, "FinetuneUnit"), (self.ui.finetuneSizeComboBox, "FinetuneSize"),
            (self.ui.saveFinetunedCheckBox, "SaveFinetuned"), (self.ui.reviewModeComboBox, "ReviewMode"),
            (self.ui.opacitySlider, "Opacity"),
        ]
        slicer.util.addParameterEditWidgetConnections(self._parameterWidgets, self.updateParameterNodeFromGUI)
        self.ui.weightsPathLineEdit.connect("currentPathChanged(QString)", self.updateParameterNodeFromGUI)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.deleteModelsButton.connect("clicked(bool)", self.onDeleteModels)
        self.ui.showResultButton.connect("clicked(bool)", self.showResult)
        self.ui.opacitySlider.connect("valueChanged(double)", self._setOverlayOpacity)
        self.ui.progressBar.visible = False

        self._updateDeviceChoices()
        self.initializeParameterNode()

    def cleanup(self):
        self._timer.stop()
        self._job = None
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)

    def onSceneStartClose(self, caller, event):
        self._stopJob()
        self._lastResult = None
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # Parameter node

    def initializeParameterNode(self):
        """Use the module's parameter node; preselect the first volume as input."""
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.GetNodeReference("InputVolume"):
            volume = (slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
                      or slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLVectorVolumeNode"))
            if volume:
                self._parameterNode.SetNodeReferenceID("InputVolume", volume.GetID())

    def setParameterNode(self, inputParameterNode):
        if inputParameterNode:
            self.logic.setDefaultParameters(inputParameterNode)
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode is not None:
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None):
        if self._parameterNode is None or self._updatingGUIFromParameterNode:
            return
        self._updatingGUIFromParameterNode = True
        slicer.util.updateParameterEditWidgetsFromNode(self._parameterWidgets, self._parameterNode)
        self.ui.weightsPathLineEdit.currentPath = self._parameterNode.GetParameter("WeightsFile")
        self._updateEnabledState()
        self._updatingGUIFromParameterNode = False

    def updateParameterNodeFromGUI(self, caller=None, event=None):
        if self._parameterNode is None or self._updatingGUIFromParameterNode:
            return
        wasModified = self._parameterNode.StartModify()
        slicer.util.updateNodeFromParameterEditWidgets(self._parameterWidgets, self._parameterNode)
        self._parameterNode.SetParameter("WeightsFile", self.ui.weightsPathLineEdit.currentPath)
        self._parameterNode.EndModify(wasModified)

    def _updateEnabledState(self):
        inputNode = self.ui.inputSelector.currentNode()
        self.ui.framesComboBox.enabled = sequence_browser(inputNode) is not None
        weightsFile = self.ui.modelComboBox.currentIndex == 1
        self.ui.weightsPathLineEdit.enabled = weightsFile
        for widget in (self.ui.finetuneLengthSpinBox, self.ui.finetuneUnitComboBox, self.ui.finetuneSizeComboBox,
                       self.ui.saveFinetunedCheckBox):
            widget.enabled = self.ui.finetuneCheckBox.checked
        self.ui.opacitySlider.enabled = self.ui.reviewModeComboBox.currentIndex == 1
        self.ui.showResultButton.enabled = self._lastResult is not None
        if self._job is not None:
            return
        missing = (_("Select an input volume.") if inputNode is None else
                   _("Choose a weights file.") if weightsFile and not self.ui.weightsPathLineEdit.currentPath else "")
        self.ui.applyButton.enabled = not missing
        self.ui.applyButton.toolTip = missing or _("Despeckle the input.")

    def _updateDeviceChoices(self):
        """Offer the GPU only when the installed PyTorch can use CUDA."""
        cuda = False
        if importlib.util.find_spec("torch") is not None:
            try:
                import torch

                cuda = torch.cuda.is_available()
            except Exception as error:  # a broken PyTorch install must not break the panel
                logging.warning(f"Speckle2Self: cannot import PyTorch: {error}")
        gpuIndex = DEVICES.index("cuda")
        item = self.ui.deviceComboBox.model().item(gpuIndex)
        item.setEnabled(cuda)
        item.setToolTip("" if cuda else _("No CUDA GPU is available to PyTorch (or PyTorch is not installed yet)."))
        if not cuda and self.ui.deviceComboBox.currentIndex == gpuIndex:
            self.ui.deviceComboBox.currentIndex = DEVICES.index("auto")

    def _options(self) -> dict:
        """Keyword options of Speckle2SelfLogic.process_job from the panel."""
        options = {
            "frames": FRAMES[self.ui.framesComboBox.currentIndex],
            "weights": self.ui.weightsPathLineEdit.currentPath if self.ui.modelComboBox.currentIndex == 1 else None,
            "device": DEVICES[self.ui.deviceComboBox.currentIndex],
            "gamma": self.ui.gammaSlider.value,
            "log_bias": not self.ui.keepLogBiasCheckBox.checked,
        }
        if self.ui.finetuneCheckBox.checked:
            length = "finetune_steps" if self.ui.finetuneUnitComboBox.currentIndex == 0 else "finetune_minutes"
            options.update({length: self.ui.finetuneLengthSpinBox.value,
                            "finetune_size": int(self.ui.finetuneSizeComboBox.currentText),
                            "save_finetuned": self.ui.saveFinetunedCheckBox.checked})
        return options

    # Dependencies

    def _ensureDependencies(self) -> bool:
        """Install PyTorch (through the PyTorch extension) and MONAI on first use; False if they are missing."""
        if self._dependenciesReady:
            return True
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            slicer.util.errorDisplay(_("Speckle2Self needs the PyTorch extension. Install 'PyTorch' in the "
                                       "Extensions Manager, restart 3D Slicer and click Despeckle again."))
            return False
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            self._setStatus(_("Installing PyTorch (this can take several minutes)..."))
            if torchLogic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT) is None:
                self._setStatus(_("PyTorch is not installed, so despeckling cannot run."))
                return False
        if not self._ensureMonai():
            self._setStatus(_("MONAI is not installed, so despeckling cannot run."))
            return False
        self._setStatus("")
        self._dependenciesReady = True
        self._updateDeviceChoices()
        return True

    def _ensureMonai(self) -> bool:
        try:
            from slicer.packaging import pip_ensure
        except ImportError:
            pip_ensure = None
        if pip_ensure is not None:
            with slicer.util.WaitCursor():
                pip_ensure([MONAI_REQUIREMENT])
        elif importlib.util.find_spec("monai") is None:
            if not slicer.util.confirmOkCancelDisplay(
                    _("Speckle2Self needs the MONAI Python package ({requirement}). Install it now? "
                      "This takes a minute or two.").format(requirement=MONAI_REQUIREMENT)):
                return False
            self._setStatus(_("Installing MONAI..."))
            with slicer.util.WaitCursor():
                slicer.util.pip_install(MONAI_REQUIREMENT)
        importlib.invalidate_caches()
        return importlib.util.find_spec("monai") is not None

    # Running

    def onApplyButton(self):
        """Start despeckling, or cancel the running job."""
        if self._job is not None:
            self._job.cancel()
            self._setStatus(_("Cancelling..."))
            return
        try:
            if not self._ensureDependencies():
                return
        except Exception as error:  # e.g. pip cannot reach the package index
            self._showError(_("Cannot install PyTorch or MONAI"), error)
            return
        inputNode = self.ui.inputSelector.currentNode()
        try:
            with slicer.util.WaitCursor():
                self._job = self.logic.process_job(inputNode, self.ui.outputSelector.currentNode(), **self._options())
        except Exception as error:
            self._showError(_("Cannot despeckle"), error)
            return
        self._jobInput, self._jobStart = inputNode, time.perf_counter()
        self._setRunning(True)
        self._timer.start()

    def _stepJob(self):
        """One unit of work (a batch of frames or a training step) per timer tick, keeping Slicer responsive."""
        try:
            running = self._job.step()
        except Cancelled:
            self._stopJob(_("Cancelled. Nothing was added to the scene."))
            return
        except Exception as error:
            self._stopJob(_("Failed: {error}").format(error=error))
            self._showError(_("Despeckling failed"), error)
            return
        if running:
            self._showProgress(self._job.last)
            return
        output = self._job.result
        self._lastResult = (self._jobInput, displayed_volume(output))
        self._stopJob(_("Done in {time}: '{output}' (model: {model}).").format(
            time=_duration(time.perf_counter() - self._jobStart), output=output.GetName(),
            model=output.GetAttribute(MODEL_ATTRIBUTE)))
        logging.info(self.ui.statusLabel.text)
        self.showResult()

    def _stopJob(self, message: str = ""):
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
        """A user mistake as its one-line message; anything else with the traceback as details."""
        details = {} if isinstance(error, UserError) else {"detailedText": traceback.format_exc()}
        slicer.util.errorDisplay(f"{title}: {error}", **details)

    def _setStatus(self, message: str):
        self.ui.statusLabel.text = message
        slicer.app.processEvents()

    # Review and maintenance

    def showResult(self):
        """Show the last input and output side by side in linked slice views, or as a fading overlay."""
        if self._lastResult is None or any(v is None or v.GetScene() is None for v in self._lastResult):
            return
        inputVolume, outputVolume = self._lastResult
        if self.ui.reviewModeComboBox.currentIndex == 1:
            slicer.util.setSliceViewerLayers(background=inputVolume, foreground=outputVolume,
                                             foregroundOpacity=self.ui.opacitySlider.value, fit=True,
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

    def _setOverlayOpacity(self, opacity: float):
        if self._lastResult is not None and self.ui.reviewModeComboBox.currentIndex == 1:
            slicer.util.setSliceViewerLayers(foregroundOpacity=opacity)

    def onDeleteModels(self):
        """List the fine-tuned models saved on this computer and delete them after confirmation."""
        folder = self.logic.modelsDir
        with slicer.util.tryWithErrorDisplay(_("Cannot list the fine-tuned models."), waitCursor=True):
            models = list_finetuned_models(folder)
        if not models:
            slicer.util.infoDisplay(_("No fine-tuned models are saved in {folder}.").format(folder=folder))
            return
        question = _("Delete the {count} fine-tuned models saved in {folder}?").format(count=len(models), folder=folder)
        if slicer.util.confirmOkCancelDisplay(question, detailedText="\n".join(m.describe() for m in models)):
            delete_finetuned_models(models)
            self._setStatus(_("Deleted {count} fine-tuned models.").format(count=len(models)))


class Speckle2SelfSlicerLogic(ScriptedLoadableModuleLogic, Speckle2SelfLogic):
    """Speckle2SelfLogic (process, process_job) with Slicer's sequences logic and the module's parameter node.

    Scripting: `Speckle2SelfSlicerLogic().process(volumeNode)` returns a new despeckled volume node.
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        Speckle2SelfLogic.__init__(self, sequencesLogic=slicer.modules.sequences.logic())

    def setDefaultParameters(self, parameterNode):
        for name, value in PARAMETER_DEFAULTS.items():
            if not parameterNode.GetParameter(name):
                parameterNode.SetParameter(name, value)


class Speckle2SelfSlicerTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: despeckle the bundled sample with the shipped model."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_despeckle_sample()

    def test_despeckle_sample(self):
        import numpy as np

        if not all(importlib.util.find_spec(name) for name in ("torch", "monai")):
            self.skipTest("PyTorch and MONAI are not installed")
        from speckle2self.weights import DEFAULT_WEIGHTS

        if not DEFAULT_WEIGHTS.is_file():
            self.skipTest(f"the shipped model {DEFAULT_WEIGHTS} is absent")
        import SampleData

        self.delayDisplay("Loading the bundled B-mode sample")
        volume = SampleData.downloadSample(SAMPLE_NAME)
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
