"""Speckle2SelfSlicerLib on Slicer's real MRML library (slicer-core): volumes, RGB, 3-D, sequences, I/O."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
import slicer.util  # noqa: E402
import vtk  # noqa: E402

from speckle2self.errors import Cancelled, UserError  # noqa: E402
from speckle2self.inference import despeckle, despeckle_job  # noqa: E402
from speckle2self.training import FINETUNE_LR  # noqa: E402
from Speckle2SelfSlicerLib import (MODEL_ATTRIBUTE, SCALE_ATTRIBUTE, SCANNER_ATTRIBUTE,  # noqa: E402
                                   Speckle2SelfLogic, delete_finetuned_models, displayed_volume, first_volume,
                                   latest_for_scanner, list_finetuned_models)

FRAME = (slice(100, 164), slice(250, 314))
"""A 64x64 crop of the bundled sample with real speckle."""


@pytest.fixture
def scene():
    """An MRML scene with Slicer's sequences logic, as in the application."""
    scene = slicer.vtkMRMLScene()
    sequences = slicer.vtkSlicerSequencesLogic()
    sequences.SetMRMLScene(scene)
    scene.sequences = sequences
    return scene


@pytest.fixture
def logic(scene, tmp_path):
    return Speckle2SelfLogic(scene.sequences, tmp_path / "models")


@pytest.fixture
def frames(sample_array) -> np.ndarray:
    """12 real 64x64 uint8 frames: shifted crops of the sample."""
    rows, cols = FRAME
    return np.stack([sample_array[rows, cols.start + 4 * i:cols.stop + 4 * i] for i in range(12)])


def add_volume(scene, array, className="vtkMRMLScalarVolumeNode", name="input"):
    """A volume with oblique, anisotropic geometry and a display node."""
    node = scene.AddNewNodeByClass(className, name)
    slicer.util.updateVolumeFromArray(node, array)
    directions = vtk.vtkMatrix4x4()
    for row, values in enumerate([(0, 1, 0), (-1, 0, 0), (0, 0, 1)]):
        for col, value in enumerate(values):
            directions.SetElement(row, col, value)
    node.SetIJKToRASDirectionMatrix(directions)
    node.SetSpacing(0.2, 0.3, 1.5)
    node.SetOrigin(-10.0, 4.0, 2.5)
    node.CreateDefaultDisplayNodes()
    return node


def add_sequence(scene, arrays, className="vtkMRMLScalarVolumeNode"):
    """A sequence of frames in a browser with its proxy volume, as Slicer loads a cine loop."""
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine")
    sequence.SetIndexName("time")
    sequence.SetIndexUnit("s")
    for i, array in enumerate(arrays):
        frame = getattr(slicer, className)()
        slicer.util.updateVolumeFromArray(frame, array)
        frame.SetSpacing(0.2, 0.2, 1.0)
        frame.SetOrigin(1.0, 2.0, 3.0)
        sequence.SetDataNodeAtValue(frame, f"{0.04 * i:.2f}")
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "cine browser")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    scene.sequences.UpdateProxyNodesFromSequences(browser)
    browser.GetProxyNode(sequence).CreateDefaultDisplayNodes()
    return browser, sequence


def ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def checksum(node) -> str:
    return hashlib.sha256(slicer.util.arrayFromVolume(node).tobytes() + ijk_to_ras(node).tobytes()).hexdigest()


def node_ids(scene) -> list[str]:
    return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]


def sequence_frames(sequence) -> list[np.ndarray]:
    return [slicer.util.arrayFromVolume(sequence.GetNthDataNode(i)) for i in range(sequence.GetNumberOfDataNodes())]


def assert_same_geometry(output, like):
    np.testing.assert_array_equal(ijk_to_ras(output), ijk_to_ras(like))
    assert output.GetClassName() == like.GetClassName()
    a, b = slicer.util.arrayFromVolume(output), slicer.util.arrayFromVolume(like)
    assert (a.shape, a.dtype) == (b.shape, b.dtype)


# Volumes

def test_scalar_2d_volume_makes_new_node_with_input_geometry(scene, logic, frames, tiny_weights):
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "probe")
    volume = add_volume(scene, frames[:1])
    volume.SetAndObserveTransformNodeID(transform.GetID())
    volume.GetDisplayNode().SetAutoWindowLevel(False)
    volume.GetDisplayNode().SetWindowLevel(120, 70)
    before = checksum(volume)

    output = logic.process(volume, weights=tiny_weights)

    assert output is not volume and output.GetScene() is scene
    assert output.GetName() == "input despeckled"
    assert_same_geometry(output, volume)
    assert output.GetTransformNodeID() == transform.GetID()
    assert (output.GetDisplayNode().GetWindow(), output.GetDisplayNode().GetLevel()) == (120, 70)
    assert output.GetAttribute(MODEL_ATTRIBUTE) == str(tiny_weights)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(output), despeckle(frames[:1], weights=tiny_weights))
    assert checksum(volume) == before


@pytest.mark.parametrize("components", [3, 4])
def test_rgb_vector_volume_is_despeckled_as_luminance(scene, logic, frames, tiny_weights, components):
    grey = frames[:1]
    channels = [grey, np.clip(grey * 0.9, 0, 255), grey // 2, np.full_like(grey, 200)][:components]
    rgb = np.stack(channels, axis=-1).astype(np.uint8)
    volume = add_volume(scene, rgb, "vtkMRMLVectorVolumeNode")
    before = checksum(volume)

    output = logic.process(volume, weights=tiny_weights)

    assert_same_geometry(output, volume)
    result = slicer.util.arrayFromVolume(output)
    assert result.shape == (1, 64, 64, components)
    np.testing.assert_array_equal(result[..., 0], result[..., 1])
    np.testing.assert_array_equal(result[..., 0], result[..., 2])
    if components == 4:
        np.testing.assert_array_equal(result[..., 3], 200)
    assert output.GetDisplayNode().IsA("vtkMRMLVectorVolumeDisplayNode")
    assert checksum(volume) == before


def test_3d_volume_is_despeckled_frame_by_frame_along_slowest_axis(scene, logic, frames, tiny_weights):
    stack = (frames[:5].astype(np.int16) - 60) * np.arange(1, 6, dtype=np.int16)[:, None, None]
    volume = add_volume(scene, stack)
    before = checksum(volume)

    output = logic.process(volume, weights=tiny_weights, batch_size=2)

    assert_same_geometry(output, volume)
    result = slicer.util.arrayFromVolume(output)
    np.testing.assert_array_equal(result, despeckle(stack, weights=tiny_weights, batch_size=2))
    for out, original in zip(result, stack):  # each frame keeps its own intensity range
        assert original.min() <= out.min() and out.max() <= original.max()
    assert checksum(volume) == before


def test_existing_output_volume_is_overwritten(scene, logic, frames, tiny_weights):
    volume = add_volume(scene, frames[:1])
    target = add_volume(scene, np.zeros((1, 20, 30), np.uint8), name="target")
    ids = node_ids(scene)
    assert logic.process(volume, target, weights=tiny_weights) is target
    assert node_ids(scene) == ids
    assert_same_geometry(target, volume)


def test_the_preselected_input_is_the_first_volume_that_is_not_a_labelmap(scene, frames):
    """Issue 27: GetFirstNodeByClass("vtkMRMLScalarVolumeNode") also returns labelmaps (a subclass), which the
    panel's input selector hides."""
    assert first_volume(scene) is None
    scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    assert first_volume(scene) is None
    volume = add_volume(scene, frames[:1], name="bmode")
    add_volume(scene, np.stack([frames[:1]] * 3, axis=-1), "vtkMRMLVectorVolumeNode", name="colour")
    assert scene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode").GetName() == "labels"
    assert first_volume(scene) is volume
    scene.RemoveNode(volume)
    assert first_volume(scene).GetName() == "colour"


def test_user_mistakes_raise_one_line_errors_and_change_nothing(scene, logic, frames, tiny_weights):
    volume = add_volume(scene, frames[:1], name="bmode")
    rgb = add_volume(scene, np.stack([frames[:1]] * 3, axis=-1), "vtkMRMLVectorVolumeNode", name="colour")
    no_image = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "no image")
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    empty.SetAndObserveImageData(vtk.vtkImageData())
    empty.GetImageData().AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    tiny = add_volume(scene, frames[:1, :8, :8], name="tiny")
    labels = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    wide = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "wide")
    wide.SetAndObserveImageData(vtk.vtkImageData())
    wide.GetImageData().SetDimensions(64, 64, 1)
    wide.GetImageData().AllocateScalars(vtk.VTK_LONG_LONG, 1)
    ids = node_ids(scene)
    mistakes = [
        ((None,), "No input"), ((no_image,), "'no image' has no image data"), ((empty,), "'empty'"),
        ((tiny,), "8x8 pixels"), ((labels,), "vtkMRMLLabelMapVolumeNode"), ((wide,), "64-bit integer"),
        ((volume, volume), "is the input"),
        ((rgb, volume), "'bmode' is a vtkMRMLScalarVolumeNode"), ((slicer.vtkMRMLScalarVolumeNode(),), "not in a scene"),
    ]
    for args, words in mistakes:
        with pytest.raises(ValueError, match=words) as error:
            logic.process(*args, weights=tiny_weights)
        assert isinstance(error.value, UserError) and "\n" not in str(error.value)
    with pytest.raises(UserError, match="frames option"):
        logic.process(volume, frames="some", weights=tiny_weights)
    assert node_ids(scene) == ids


def test_input_deleted_while_running_still_gives_output(scene, logic, frames, tiny_weights):
    volume = add_volume(scene, frames[:4])
    expected = ijk_to_ras(volume)
    job = logic.process_job(volume, weights=tiny_weights, batch_size=1)
    job.step()
    scene.RemoveNode(volume)
    output = job.run()
    assert output.GetScene() is scene and slicer.util.arrayFromVolume(output).shape == (4, 64, 64)
    np.testing.assert_array_equal(ijk_to_ras(output), expected)


# Sequences

def test_sequence_gives_new_synchronized_sequence_of_same_length(scene, logic, frames, tiny_weights):
    browser, sequence = add_sequence(scene, [f[None] for f in frames])
    proxy = browser.GetProxyNode(sequence)
    before = [checksum(sequence.GetNthDataNode(i)) for i in range(12)]

    output = logic.process(proxy, weights=tiny_weights)

    assert output.IsA("vtkMRMLSequenceNode") and output is not sequence
    assert output.GetName() == "cine despeckled"
    assert browser.IsSynchronizedSequenceNodeID(output.GetID())
    assert output.GetNumberOfDataNodes() == sequence.GetNumberOfDataNodes() == 12
    assert (output.GetIndexName(), output.GetIndexUnit()) == ("time", "s")
    assert [output.GetNthIndexValue(i) for i in range(12)] == [sequence.GetNthIndexValue(i) for i in range(12)]
    for i in range(12):
        assert_same_geometry(output.GetNthDataNode(i), sequence.GetNthDataNode(i))
    # one speckle scale for the whole cine, although its frames are despeckled in groups
    np.testing.assert_array_equal(np.concatenate(sequence_frames(output)), despeckle(frames, weights=tiny_weights))
    chosen = despeckle_job(frames, weights=tiny_weights).info["scale"]
    assert json.loads(output.GetAttribute(SCALE_ATTRIBUTE)) == chosen
    assert [checksum(sequence.GetNthDataNode(i)) for i in range(12)] == before

    # The output plays along: its proxy shows the despeckled version of the selected frame.
    output_proxy = displayed_volume(output)
    assert output_proxy.GetID() == browser.GetProxyNode(output).GetID()
    browser.SetSelectedItemNumber(7)
    scene.sequences.UpdateProxyNodesFromSequences(browser)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(output_proxy), sequence_frames(output)[7])
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(proxy), frames[7:8])


def test_sequence_input_can_be_browser_or_sequence_and_rerun_reuses_output(scene, logic, frames, tiny_weights):
    browser, sequence = add_sequence(scene, [f[None] for f in frames[:3]])
    first = logic.process(browser, weights=tiny_weights)
    ids = node_ids(scene)
    assert logic.process(sequence, displayed_volume(first), weights=tiny_weights).GetID() == first.GetID()
    assert logic.process(sequence, first, weights=tiny_weights, gamma=2.0).GetID() == first.GetID()
    assert node_ids(scene) == ids and first.GetNumberOfDataNodes() == 3


def test_rgb_sequence_like_dicom_cine(scene, logic, frames, tiny_weights):
    browser, sequence = add_sequence(scene, [np.stack([f[None]] * 3, axis=-1) for f in frames[:10]],
                                     "vtkMRMLVectorVolumeNode")
    output = logic.process(browser.GetProxyNode(sequence), weights=tiny_weights)
    assert output.GetNumberOfDataNodes() == 10
    assert output.GetNthDataNode(0).IsA("vtkMRMLVectorVolumeNode")
    result = np.concatenate(sequence_frames(output))
    np.testing.assert_array_equal(result[..., 0], result[..., 2])


def test_sequence_without_browser(scene, logic, frames, tiny_weights):
    browser, sequence = add_sequence(scene, [f[None] for f in frames[:3]])
    scene.RemoveNode(browser)
    output = logic.process(sequence, weights=tiny_weights)
    assert output.GetNumberOfDataNodes() == 3 and displayed_volume(output) is None
    with pytest.raises(UserError, match="'cine' is in no sequence browser"):
        logic.process(sequence, frames="current", weights=tiny_weights)


def test_sequence_current_frame_gives_one_volume(scene, logic, frames, tiny_weights):
    browser, sequence = add_sequence(scene, [f[None] for f in frames[:6]])
    browser.SetSelectedItemNumber(4)
    scene.sequences.UpdateProxyNodesFromSequences(browser)
    sequences_before = scene.GetNumberOfNodesByClass("vtkMRMLSequenceNode")

    for node in (browser.GetProxyNode(sequence), browser, sequence):
        output = logic.process(node, frames="current", weights=tiny_weights)
        assert output.IsA("vtkMRMLScalarVolumeNode")
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(output),
                                      despeckle(frames[4:5], weights=tiny_weights))
    assert scene.GetNumberOfNodesByClass("vtkMRMLSequenceNode") == sequences_before


def test_progress_covers_all_frames(scene, logic, frames, tiny_weights):
    browser, sequence = add_sequence(scene, [f[None] for f in frames])
    job = logic.process_job(browser, weights=tiny_weights, batch_size=5)
    seen = list(job)
    done = [p.done for p in seen]
    assert done == sorted(done) and done[-1] == 12
    assert {p.total for p in seen} == {12}
    assert seen[-1].message == "Despeckling: frame 12 of 12" and seen[-1].seconds_left == 0
    assert job.last is seen[-1] and job.result.GetNumberOfDataNodes() == 12


def cancel_after(job, frames_done: int) -> None:
    """Step `job` until it reports `frames_done` frames, then cancel it."""
    while job.last is None or job.last.done < frames_done:
        assert job.step()
    job.cancel()


def test_cancel_after_some_frames_leaves_scene_unchanged(scene, logic, frames, tiny_weights):
    browser, sequence = add_sequence(scene, [f[None] for f in frames])
    ids = node_ids(scene)
    job = logic.process_job(browser, weights=tiny_weights, batch_size=1)
    cancel_after(job, 4)
    with pytest.raises(Cancelled):
        job.step()
    assert node_ids(scene) == ids and browser.GetNumberOfSynchronizedSequenceNodes(True) == 1


def test_failure_midway_leaves_scene_unchanged(scene, logic, frames, tiny_weights):
    arrays = [f[None].astype(np.float32) for f in frames]
    arrays[7][0, 10, 10] = np.nan
    browser, sequence = add_sequence(scene, arrays)
    ids = node_ids(scene)
    with pytest.raises(UserError, match="NaN"):
        logic.process(browser, weights=tiny_weights, batch_size=2)
    assert node_ids(scene) == ids


class FailsAfterSynchronizing(Speckle2SelfLogic):
    """Fails at the very end of storing, once the output sequence and its proxy volume exist."""

    def _synchronize(self, *args):
        super()._synchronize(*args)
        raise MemoryError("out of memory")


def test_failure_while_storing_removes_what_was_created(scene, frames, tiny_weights, tmp_path):
    browser, sequence = add_sequence(scene, [f[None] for f in frames[:3]])
    ids = node_ids(scene)
    with pytest.raises(MemoryError):
        FailsAfterSynchronizing(scene.sequences, tmp_path).process(browser, weights=tiny_weights)
    assert node_ids(scene) == ids and browser.GetNumberOfSynchronizedSequenceNodes(True) == 1


# Saving and reading back

@pytest.mark.parametrize("className, shape", [("vtkMRMLScalarVolumeNode", (1, 64, 64)),
                                              ("vtkMRMLVectorVolumeNode", (1, 64, 64, 3))])
def test_output_volume_saves_and_reads_back(scene, logic, frames, tiny_weights, tmp_path, className, shape):
    array = np.broadcast_to(frames[:1].reshape((1, 64, 64) + (1,) * (len(shape) - 3)), shape).copy()
    output = logic.process(add_volume(scene, array, className), weights=tiny_weights)
    path = str(tmp_path / "despeckled.nrrd")
    writer = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    writer.SetFileName(path)
    assert writer.WriteData(output)

    back = scene.AddNewNodeByClass(className, "read back")
    reader = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    reader.SetFileName(path)
    assert reader.ReadData(back)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(back), slicer.util.arrayFromVolume(output))
    np.testing.assert_allclose(ijk_to_ras(back), ijk_to_ras(output), atol=1e-6)


def test_output_sequence_saves_and_reads_back_as_seq_nrrd(scene, logic, frames, tiny_weights, tmp_path):
    browser, sequence = add_sequence(scene, [f[None] for f in frames[:10]])
    output = logic.process(browser, weights=tiny_weights)
    path = str(tmp_path / "despeckled.seq.nrrd")
    writer = scene.AddNewNodeByClass("vtkMRMLVolumeSequenceStorageNode")
    writer.SetFileName(path)
    assert writer.WriteData(output)

    back = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "read back")
    reader = scene.AddNewNodeByClass("vtkMRMLVolumeSequenceStorageNode")
    reader.SetFileName(path)
    assert reader.ReadData(back)
    assert back.GetNumberOfDataNodes() == 10
    assert [back.GetNthIndexValue(i) for i in range(10)] == [output.GetNthIndexValue(i) for i in range(10)]
    for a, b in zip(sequence_frames(back), sequence_frames(output)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(ijk_to_ras(back.GetNthDataNode(0)), ijk_to_ras(output.GetNthDataNode(0)), atol=1e-6)


# Fine-tuning

def test_finetune_then_despeckle_saves_model_that_can_be_listed_and_deleted(scene, logic, frames, tiny_weights):
    volume = add_volume(scene, frames[:3])
    volume.SetAttribute(SCANNER_ATTRIBUTE, "ACME Sono-1 L12-5")
    job = logic.process_job(volume, weights=tiny_weights, finetune_steps=2, finetune_size=32, batch_size=2)
    messages = [p.message for p in job]
    output = job.result
    phases = [m.split(":")[0] for m in messages]
    assert phases == sorted(phases, key=["Fine-tuning", "Despeckling"].index) and set(phases) == {
        "Fine-tuning", "Despeckling"}

    models = list_finetuned_models(logic.modelsDir)
    assert [str(m.path) for m in models] == [output.GetAttribute(MODEL_ATTRIBUTE)]
    assert models[0].card["source"] == "input" and models[0].card["steps"] == 2
    assert models[0].card["config"]["lr"] == FINETUNE_LR   # the one fine-tuning recipe
    assert models[0].path.name.startswith("input-") and "2 steps" in models[0].describe()
    assert models[0].card["scanner"] == "ACME Sono-1 L12-5"  # offered for the next scan from that scanner
    assert latest_for_scanner(logic.modelsDir, "ACME Sono-1 L12-5") == models[0]
    assert latest_for_scanner(logic.modelsDir, "Other Probe") is None
    assert latest_for_scanner(logic.modelsDir, None) is None
    # The saved model reproduces the output when used as weights.
    again = logic.process(volume, weights=models[0].path, batch_size=2)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(again), slicer.util.arrayFromVolume(output))

    delete_finetuned_models(models)
    assert list_finetuned_models(logic.modelsDir) == [] and not list(logic.modelsDir.iterdir())


def test_finetune_by_minutes_without_saving(scene, logic, frames, tiny_weights, monkeypatch):
    """The safeguard is set to keep any tuned model: the steps a time budget gives differ between machines."""
    from speckle2self import finetuning

    for name in finetuning.TOLERANCE:
        monkeypatch.setitem(finetuning.TOLERANCE, name, 1e9)
    volume = add_volume(scene, frames[:1])
    output = logic.process(volume, weights=tiny_weights, finetune_minutes=0.002, finetune_size=32,
                           save_finetuned=False)
    assert output.GetAttribute(MODEL_ATTRIBUTE) == f"{tiny_weights}, fine-tuned, not saved"
    assert list_finetuned_models(logic.modelsDir) == []


def test_cancel_during_finetuning_writes_nothing(scene, logic, frames, tiny_weights):
    volume = add_volume(scene, frames[:1])
    ids = node_ids(scene)
    job = logic.process_job(volume, weights=tiny_weights, finetune_steps=50, finetune_size=32)
    for _ in range(3):
        job.step()
    job.cancel()
    with pytest.raises(Cancelled):
        job.run()
    assert node_ids(scene) == ids and list_finetuned_models(logic.modelsDir) == []


def test_finetune_options_are_checked_before_any_work(scene, logic, frames, tiny_weights):
    volume = add_volume(scene, frames[:1])
    with pytest.raises(UserError, match="multiple of 16"):
        logic.process_job(volume, weights=tiny_weights, finetune_steps=5, finetune_size=40)
    with pytest.raises(UserError, match="positive"):
        logic.process_job(volume, weights=tiny_weights, finetune_steps=0)


# The shipped model

def test_shipped_model_smooths_the_bundled_sample(scene, logic, sample_array):
    from speckle2self.metrics import homogeneity
    from speckle2self.weights import DEFAULT_WEIGHTS

    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"the shipped model {DEFAULT_WEIGHTS.name} is not there yet")
    volume = add_volume(scene, sample_array[None])
    output = logic.process(volume, device="cpu")
    assert_same_geometry(output, volume)
    assert output.GetAttribute(MODEL_ATTRIBUTE) == "default"
    assert homogeneity(slicer.util.arrayFromVolume(output)[0]) > homogeneity(sample_array)


def test_the_fast_shipped_model_runs_and_is_named_on_the_output(scene, logic, sample_array):
    from speckle2self.weights import SHIPPED

    volume = add_volume(scene, sample_array[None])
    output = logic.process(volume, device="cpu", weights=SHIPPED["fast"])
    assert output.GetAttribute(MODEL_ATTRIBUTE) == "fast"
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(output),
                                  despeckle(sample_array[None], device="cpu", weights=SHIPPED["fast"]))


def test_log_bias_option_reaches_the_core(scene, logic, sample_array):
    volume = add_volume(scene, sample_array[None])
    for log_bias in (True, False):
        output = logic.process(volume, device="cpu", log_bias=log_bias)
        expected = despeckle(sample_array[None], device="cpu", log_bias=log_bias)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(output), expected)
    assert not np.array_equal(despeckle(sample_array, log_bias=True), despeckle(sample_array, log_bias=False))
