"""Issue 16: despeckling in a separate process, on Slicer's real MRML library (slicer-core) and real
subprocesses of the speckle2self command line: progress, cancel, failures, the same output as in-process."""
from __future__ import annotations

import stat
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
import slicer.util  # noqa: E402

from speckle2self.errors import UserError  # noqa: E402
from speckle2self.image_io import read_image  # noqa: E402
from speckle2self.weights import TENSOR_DIGEST, load_checkpoint, sha256  # noqa: E402
from Speckle2SelfSlicerLib import (MODEL_ATTRIBUTE, SCALE_ATTRIBUTE, SCANNER_ATTRIBUTE,  # noqa: E402
                                   list_finetuned_models)
from Speckle2SelfSlicerLib.cli_process import ProcessFailed  # noqa: E402
from Speckle2SelfSlicerLib.subprocess_job import cli_arguments, write_inputs  # noqa: E402
from test_slicer_logic import (add_sequence, add_volume, frames, ijk_to_ras, logic, node_ids, scene,  # noqa: E402,F401
                               sequence_frames)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
POLL_SECONDS = 0.02


@pytest.fixture
def temp_root(tmp_path, monkeypatch):
    """The folder where runs make their temporary folders, to see that they leave none behind."""
    root = tmp_path / "temp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def poll_until(job, done=lambda job: False) -> list:
    """Poll `job` until it ends or `done(job)`; return the distinct progresses seen."""
    seen = []
    while job.poll():
        if job.last is not None and (not seen or job.last is not seen[-1]):
            seen.append(job.last)
        if done(job):
            break
        time.sleep(POLL_SECONDS)
    return seen


def test_progress_arrives_and_the_output_equals_the_in_process_one(scene, logic, frames, tiny_weights, temp_root):
    browser, sequence = add_sequence(scene, [f[None] for f in frames])
    options = {"weights": tiny_weights, "batch_size": 5, "gamma": 1.5}
    job = logic.process_in_subprocess(browser.GetProxyNode(sequence), **options)
    every, deliver = [], job._process._on_line  # every line's progress, not only the latest at each poll
    job._process._on_line = lambda line: (deliver(line), every.append(job.last))
    seen = poll_until(job)
    output = job.result

    done = [p.done for p in every]
    assert done == [0, 5, 10, 12] and seen[-1] is every[-1]  # the start, then batches of 5
    assert {p.total for p in seen} == {12} and seen[-1].message == "Despeckling: frame 12 of 12"
    assert seen[-1].seconds_left == 0
    assert list(temp_root.iterdir()) == [] and job.process.returncode == 0
    expected = logic.process(browser, **options)
    assert output.IsA("vtkMRMLSequenceNode") and browser.IsSynchronizedSequenceNodeID(output.GetID())
    assert output.GetAttribute(MODEL_ATTRIBUTE) == expected.GetAttribute(MODEL_ATTRIBUTE) == str(tiny_weights)
    assert output.GetAttribute(SCALE_ATTRIBUTE) == expected.GetAttribute(SCALE_ATTRIBUTE) is not None
    assert [output.GetNthIndexValue(i) for i in range(12)] == [sequence.GetNthIndexValue(i) for i in range(12)]
    for ours, theirs in zip(sequence_frames(output), sequence_frames(expected)):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(ijk_to_ras(output.GetNthDataNode(3)), ijk_to_ras(sequence.GetNthDataNode(3)))


@pytest.mark.parametrize("at", ["start", "middle", "end", "fine-tuning"])
def test_cancel_leaves_no_nodes_no_model_and_no_temporary_files(scene, logic, frames, tiny_weights, temp_root, at):
    """`at`: cancel at once, after 5 of 12 frames, once the process has finished (result not yet stored), or
    during fine-tuning."""
    browser, sequence = add_sequence(scene, [f[None] for f in frames])
    ids = node_ids(scene)
    tuning = {"finetune_steps": 50, "finetune_size": 32} if at == "fine-tuning" else {}
    job = logic.process_in_subprocess(browser, weights=tiny_weights, batch_size=5, **tuning)
    assert len(list(temp_root.iterdir())) == 1
    if at == "middle":
        poll_until(job, lambda job: job.last is not None and job.last.done >= 5)
    elif at == "fine-tuning":
        poll_until(job, lambda job: job.last is not None and job.last.done >= 1)
        assert job.last.message.startswith("Fine-tuning")
    elif at == "end":
        job.process.wait()
    job.cancel()
    assert job.process.returncode is not None and not job.poll() and job.result is None
    assert node_ids(scene) == ids and browser.GetNumberOfSynchronizedSequenceNodes(True) == 1
    assert list(temp_root.iterdir()) == [] and not logic.modelsDir.exists()


LAUNCHER = """#!{python}
# Like Slicer's PythonSlicer (CTKAppLauncher): runs the real interpreter as its child, passes no signal on.
import os, subprocess, sys
child = subprocess.Popen([sys.executable, *sys.argv[1:]])
with open(os.environ["LAUNCHED_PID_FILE"], "w") as file:
    file.write(str(child.pid))
sys.exit(child.wait())
"""


def running(pid: int) -> bool:
    """Whether process `pid` runs (an ended one that nobody reaped, a zombie, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_cancel_through_a_launcher_stops_the_real_process(scene, logic, frames, tiny_weights, temp_root, tmp_path,
                                                          monkeypatch):
    launcher = tmp_path / "PythonSlicer"
    launcher.write_text(LAUNCHER.format(python=sys.executable))
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("LAUNCHED_PID_FILE", str(tmp_path / "launched.pid"))
    volume = add_volume(scene, frames)
    ids = node_ids(scene)
    job = logic.process_in_subprocess(volume, python=str(launcher), weights=tiny_weights, finetune_steps=10000,
                                      finetune_size=32)
    poll_until(job, lambda job: job.last is not None)  # the real interpreter is fine-tuning
    child = int((tmp_path / "launched.pid").read_text())
    assert running(job.process.pid) and running(child) and child != job.process.pid
    job.cancel()
    assert not running(job.process.pid) and not running(child)
    assert node_ids(scene) == ids and list(temp_root.iterdir()) == [] and not logic.modelsDir.exists()


def test_a_killed_process_is_reported_and_leaves_nothing(scene, logic, frames, tiny_weights, temp_root):
    volume = add_volume(scene, frames[:6])
    ids = node_ids(scene)
    job = logic.process_in_subprocess(volume, weights=tiny_weights, batch_size=1)
    poll_until(job, lambda job: job.last is not None)
    job.process.kill()
    with pytest.raises(ProcessFailed, match="speckle2self process was killed by signal SIGKILL"):
        poll_until(job)
    assert node_ids(scene) == ids and list(temp_root.iterdir()) == []


def test_the_command_line_error_is_raised_in_one_line(scene, logic, frames, tmp_path, temp_root):
    weights = tmp_path / "notes.pt"
    weights.write_text("not a checkpoint\n")
    volume = add_volume(scene, frames[:2])
    ids = node_ids(scene)
    job = logic.process_in_subprocess(volume, weights=weights)
    with pytest.raises(UserError, match="no checkpoint at all") as error:
        poll_until(job)
    assert str(error.value).startswith(f"Cannot load weights {weights}") and "\n" not in str(error.value)
    assert node_ids(scene) == ids and list(temp_root.iterdir()) == []


def test_fine_tuning_gives_the_in_process_output_and_model(scene, logic, frames, tiny_weights, temp_root):
    """Both paths take the safeguard's decision on the same computation: the same output and model label, and
    a kept model moved into the models folder."""
    volume = add_volume(scene, frames[:3])
    volume.SetAttribute(SCANNER_ATTRIBUTE, "ACME Sono-1 L12-5")
    options = {"weights": tiny_weights, "finetune_steps": 2, "finetune_size": 32, "batch_size": 2}
    job = logic.process_in_subprocess(volume, **options)
    phases = [p.message.split(":")[0] for p in poll_until(job)]
    assert phases == sorted(phases, key=["Fine-tuning", "Despeckling"].index) and set(phases) == {
        "Fine-tuning", "Despeckling"}
    label = job.result.GetAttribute(MODEL_ATTRIBUTE)
    models = list_finetuned_models(logic.modelsDir) if logic.modelsDir.exists() else []
    if label.endswith("the un-tuned model was used"):
        assert label.startswith(f"{tiny_weights}; Fine-tuning made the result worse") and models == []
    else:
        [model] = models
        assert label == str(model.path) and model.card["source"] == "input" and model.card["steps"] == 2
        assert model.card["weights_file"] == model.path.name and model.card["scanner"] == "ACME Sono-1 L12-5"
        assert model.card["sha256"] == sha256(model.path) and model.card[TENSOR_DIGEST]
        load_checkpoint(model.path)  # digest and sha256 hold after the move
    assert list(temp_root.iterdir()) == []
    expected = logic.process(volume, **options)  # in this process torch may leave its own cache in temp_root
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(job.result), slicer.util.arrayFromVolume(expected))
    if models:  # kept: each path saved a model of its own
        assert expected.GetAttribute(MODEL_ATTRIBUTE).startswith(str(logic.modelsDir))
    else:
        assert expected.GetAttribute(MODEL_ATTRIBUTE) == label

    unsaved = logic.process_in_subprocess(volume, **options, save_finetuned=False)
    poll_until(unsaved)
    assert unsaved.result.GetAttribute(MODEL_ATTRIBUTE) == logic.process(
        volume, **options, save_finetuned=False).GetAttribute(MODEL_ATTRIBUTE)


def test_frames_of_different_sizes_go_as_several_files(scene, logic, frames, tiny_weights, temp_root):
    arrays = [frames[:1], frames[1:2], frames[2:3, :48, :40], frames[3:4].astype(np.int16) - 100]
    browser, sequence = add_sequence(scene, arrays)
    job = logic.process_in_subprocess(browser, weights=tiny_weights, batch_size=1)
    seen = poll_until(job)
    assert [p.done for p in seen] == sorted(p.done for p in seen) and seen[-1].done == 4
    assert {p.total for p in seen} == {4} and list(temp_root.iterdir()) == []
    expected = logic.process(browser, weights=tiny_weights, batch_size=1)
    assert job.result.GetNumberOfDataNodes() == 4
    for ours, theirs in zip(sequence_frames(job.result), sequence_frames(expected)):
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)

    ids = node_ids(scene)
    with pytest.raises(UserError, match="frames of different sizes or types"):
        logic.process_in_subprocess(browser, weights=tiny_weights, finetune_steps=2)
    assert node_ids(scene) == ids and not list(temp_root.glob("speckle2self-*"))


def test_closing_the_scene_stops_the_process(scene, logic, frames, tiny_weights, temp_root):
    volume = add_volume(scene, frames[:6])
    job = logic.process_in_subprocess(volume, weights=tiny_weights, batch_size=1)
    scene.Clear(0)
    ids = node_ids(scene)
    with pytest.raises(UserError, match="scene was closed while despeckling"):
        poll_until(job)
    assert job.process.returncode is not None and node_ids(scene) == ids and list(temp_root.iterdir()) == []


def test_inputs_are_written_with_the_geometry_slicer_reads_back(scene, frames, tmp_path):
    volume = add_volume(scene, frames[:3])  # oblique, anisotropic
    rgb = add_volume(scene, np.stack([frames[:2]] * 3, axis=-1), "vtkMRMLVectorVolumeNode", name="rgb")
    small = add_volume(scene, frames[:1, :40, :48], name="small")
    arrays = [slicer.util.arrayFromVolume(v) for v in (volume, rgb, small)]
    written = write_inputs(tmp_path, "in put", [volume, rgb, small], arrays)
    assert [(p.name, group) for p, group in written] == [("in_put-1.nrrd", [0]), ("in_put-2.nrrd", [1]),
                                                         ("in_put-3.nrrd", [2])]
    for (path, _), node, array in zip(written, (volume, rgb, small), arrays):
        back = scene.AddNewNodeByClass(node.GetClassName(), "read back")
        reader = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        reader.SetFileName(str(path))
        reader.SetSingleFile(True)  # not the first of a numbered series
        assert reader.ReadData(back)
        np.testing.assert_allclose(ijk_to_ras(back), ijk_to_ras(node), atol=1e-6)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(back), array)
        np.testing.assert_array_equal(read_image(path).array, array)  # as the command line reads it


def test_options_become_command_line_options():
    assert cli_arguments({"weights": "w.pt", "device": "cpu", "gamma": 0.7, "batch_size": 3, "precision": "fp32",
                          "finetune_minutes": 1.5, "finetune_size": 64, "log_bias": True,
                          "save_finetuned": True, "finetune_steps": None}) == [
        "--weights", "w.pt", "--device", "cpu", "--gamma", "0.7", "--batch", "3", "--precision", "fp32",
        "--finetune-minutes", "1.5", "--finetune-size", "64", "--log-bias"]
    assert cli_arguments({}) == cli_arguments({"log_bias": False}) == []
    with pytest.raises(TypeError, match="Unknown option smoothness"):
        cli_arguments({"smoothness": 2})
