"""Issue 7, Slicer logic on real MRML (slicer-core): volumes without pixels, the input or the whole scene gone
while a job runs, cancel at the first, a middle and the last frame, a sequence of frames of different sizes."""
from __future__ import annotations

import json

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
import slicer.util  # noqa: E402
import vtk  # noqa: E402

from speckle2self.errors import Cancelled, UserError  # noqa: E402
from speckle2self.inference import despeckle  # noqa: E402
from Speckle2SelfSlicerLib import SCALE_ATTRIBUTE  # noqa: E402
from test_slicer_logic import (add_sequence, add_volume, cancel_after, checksum, frames, logic, node_ids, scene,  # noqa: E402,F401
                               sequence_frames)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _imageless(scene, kind: str):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", kind)
    if kind != "no image data":
        node.SetAndObserveImageData(vtk.vtkImageData())
    if kind == "dimensions without pixels":
        node.GetImageData().SetDimensions(64, 64, 1)
    return node


@pytest.mark.parametrize("kind, words", [("no image data", "has no image data"),
                                         ("empty image", "has no image data"),
                                         ("dimensions without pixels", "has no image data")])
def test_volumes_without_pixels_are_refused_and_change_nothing(scene, logic, tiny_weights, kind, words):
    node = _imageless(scene, kind)
    ids = node_ids(scene)
    with pytest.raises(UserError, match=f"'{kind}' {words}") as error:
        logic.process_job(node, weights=tiny_weights)
    assert "\n" not in str(error.value) and node_ids(scene) == ids


def test_no_input_is_refused(logic, tiny_weights):
    with pytest.raises(UserError, match="No input was given"):
        logic.process_job(None, weights=tiny_weights)


@pytest.mark.parametrize("removed", ["sequence", "browser"])
def test_sequence_input_removed_while_running_still_gives_the_output(scene, logic, frames, tiny_weights, removed):
    browser, sequence = add_sequence(scene, [f[None] for f in frames[:4]])
    job = logic.process_job(browser.GetProxyNode(sequence), weights=tiny_weights, batch_size=1)
    job.step()
    job.step()
    scene.RemoveNode(sequence if removed == "sequence" else browser)
    output = job.run()
    assert output.GetScene() is scene and output.GetNumberOfDataNodes() == 4
    np.testing.assert_array_equal(np.concatenate(sequence_frames(output)),
                                  despeckle(frames[:4], weights=tiny_weights, batch_size=1))
    if removed == "browser":  # not synchronized into a browser that left the scene
        assert browser.GetNumberOfSynchronizedSequenceNodes(True) == 1


@pytest.mark.parametrize("input_kind", ["volume", "sequence"])
def test_scene_cleared_while_running_ends_in_a_user_error_and_adds_nothing(scene, logic, frames, tiny_weights,
                                                                          input_kind):
    if input_kind == "volume":
        node = add_volume(scene, frames[:4])
    else:
        browser, sequence = add_sequence(scene, [f[None] for f in frames[:4]])
        node = browser.GetProxyNode(sequence)
    job = logic.process_job(node, weights=tiny_weights, batch_size=1)
    job.step()
    job.step()
    scene.Clear(0)
    ids = node_ids(scene)
    with pytest.raises(UserError, match="scene was closed while despeckling") as error:
        job.run()
    assert "\n" not in str(error.value) and node_ids(scene) == ids


@pytest.mark.parametrize("at", [0, 1, 6, 12])
def test_cancel_at_the_first_a_middle_and_the_last_frame_adds_nothing(scene, logic, frames, tiny_weights, at):
    """`at`: frames done when the user cancels (0: before the first, 12: all done, not yet stored)."""
    browser, sequence = add_sequence(scene, [f[None] for f in frames])
    ids, before = node_ids(scene), [checksum(sequence.GetNthDataNode(i)) for i in range(12)]
    job = logic.process_job(browser, weights=tiny_weights, batch_size=1)
    cancel_after(job, at)
    with pytest.raises(Cancelled):
        job.run()
    assert node_ids(scene) == ids and browser.GetNumberOfSynchronizedSequenceNodes(True) == 1
    assert [checksum(sequence.GetNthDataNode(i)) for i in range(12)] == before


def test_cancel_of_a_single_volume_at_its_last_frame_adds_nothing(scene, logic, frames, tiny_weights):
    volume = add_volume(scene, frames[:3])
    ids = node_ids(scene)
    job = logic.process_job(volume, weights=tiny_weights, batch_size=1)
    cancel_after(job, 3)
    with pytest.raises(Cancelled):
        job.run()
    assert node_ids(scene) == ids


def test_sequence_with_frames_of_different_sizes_and_types(scene, logic, frames, tiny_weights):
    arrays = [frames[:1], frames[1:2, :48, :40], frames[2:3], frames[3:4, :32].astype(np.int16) - 100,
              frames[4:5, :48, :40]]
    browser, sequence = add_sequence(scene, arrays)
    output = logic.process(browser, weights=tiny_weights, batch_size=1)
    results = sequence_frames(output)
    assert [(r.shape, r.dtype) for r in results] == [(a.shape, a.dtype) for a in arrays]
    factor = json.loads(output.GetAttribute(SCALE_ATTRIBUTE))["factor"]  # one speckle scale for the sequence
    for result, array in zip(results, arrays):
        np.testing.assert_array_equal(result, despeckle(array, weights=tiny_weights, scale=factor))


def test_sequence_with_one_frame_too_small_is_refused_up_front(scene, logic, frames, tiny_weights):
    browser, sequence = add_sequence(scene, [frames[:1], frames[1:2, :12, :40], frames[2:3]])
    ids = node_ids(scene)
    with pytest.raises(UserError, match="12x40 pixels"):
        logic.process_job(browser, weights=tiny_weights)
    assert node_ids(scene) == ids
