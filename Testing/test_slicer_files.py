"""Speckle2SelfSlicerLib.files on slicer-core: files read by speckle2self become volumes and sequences where Slicer
puts them, and results go back to files with the input's layout and geometry."""
from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
import slicer.util  # noqa: E402

from conftest import CINE, SAMPLE  # noqa: E402
from speckle2self.errors import UserError  # noqa: E402
from speckle2self.image_io import ImageData, read_image, write_image  # noqa: E402
from Speckle2SelfSlicerLib import SCANNER_ATTRIBUTE, nodes, scanner_label  # noqa: E402
from Speckle2SelfSlicerLib.files import add_image, frames, result_array, result_name  # noqa: E402
from test_slicer_logic import ijk_to_ras, scene  # noqa: E402,F401

def test_an_image_becomes_a_volume_with_its_file_geometry(scene, tmp_path):
    image = read_image(SAMPLE)
    volume = add_image(scene, image, "sample")
    assert volume.IsA("vtkMRMLScalarVolumeNode") and volume.GetDisplayNode() is not None
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume)[0], image.array)
    geometry = nodes.itk_geometry(volume)
    assert geometry["spacing"][:2] == pytest.approx(image.spacing)
    assert geometry["origin"][:2] == pytest.approx(image.origin)
    # what Slicer's own reader makes of the file: the same voxel-to-RAS matrix
    reader = slicer.vtkMRMLVolumeArchetypeStorageNode()
    reader.SetFileName(str(SAMPLE))
    loaded = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "read by Slicer")
    assert reader.ReadData(loaded)
    np.testing.assert_allclose(ijk_to_ras(volume), ijk_to_ras(loaded))


def test_the_scanner_and_probe_of_a_dicom_file_are_kept_on_the_node(scene):
    tags = {"0008|0070": "ACME ", "0008|1090": "Sono-1", "0018|5010": "L12-5", "0010|0010": "Doe^Jane"}
    image = ImageData(np.zeros((32, 48), np.uint8), metadata=tags)
    assert add_image(scene, image, "scan").GetAttribute(SCANNER_ATTRIBUTE) == "ACME Sono-1 L12-5"
    assert scanner_label({"0008|0070": "ACME"}) == "ACME" and scanner_label({}) is None
    assert add_image(scene, ImageData(np.zeros((32, 48), np.uint8)), "plain").GetAttribute(SCANNER_ATTRIBUTE) is None


def test_a_cine_becomes_a_sequence_with_a_browser_and_a_proxy(scene):
    image = read_image(CINE)
    browser = add_image(scene, image, "cine", scene.sequences)
    assert browser.IsA("vtkMRMLSequenceBrowserNode")
    sequence = browser.GetMasterSequenceNode()
    assert sequence.GetNumberOfDataNodes() == len(image.array) == 3
    for i in range(3):
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(sequence.GetNthDataNode(i))[0], image.array[i])
    browser.SetSelectedItemNumber(2)
    proxy = browser.GetProxyNode(sequence)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(proxy)[0], image.array[2])


@pytest.mark.parametrize("shape, kind, slices, volumes", [
    ((40, 50), "image", 1, [(1, 40, 50)]),
    ((40, 50, 3), "image", 1, [(1, 40, 50, 3)]),
    ((6, 40, 50), "volume", 1, [(6, 40, 50)]),
    ((6, 40, 50), "sequence", 1, [(1, 40, 50)] * 6),
    ((6, 40, 50), "sequence", 2, [(2, 40, 50)] * 3),
    ((6, 40, 50, 3), "sequence", 1, [(1, 40, 50, 3)] * 6),
])
def test_frames_follow_the_file_layout(shape, kind, slices, volumes):
    array = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)
    found = frames(ImageData(array, kind=kind, slices_per_frame=slices))
    assert [f.shape for f in found] == volumes
    np.testing.assert_array_equal(np.concatenate(found).ravel(), array.ravel())  # in the file's order


def test_64_bit_integer_pixels_are_refused():
    with pytest.raises(UserError, match="64-bit integer"):
        frames(ImageData(np.zeros((40, 50), np.int64)))


def test_a_result_goes_back_to_a_file_with_the_input_geometry(scene, tmp_path):
    image = read_image(CINE)
    browser = add_image(scene, image, "cine", scene.sequences)
    sequence = browser.GetMasterSequenceNode()
    target = tmp_path / result_name(CINE)
    write_image(target, result_array(sequence, image.without_pixels()), like=image.without_pixels())
    back = read_image(target)
    np.testing.assert_array_equal(back.array, image.array)
    assert (back.kind, back.spacing, back.origin, back.direction) == (image.kind, image.spacing, image.origin,
                                                                        image.direction)


@pytest.mark.parametrize("source, name", [
    ("a/scan.nrrd", "scan-despeckled.nrrd"), ("loop.igs.mhd", "loop-despeckled.igs.mha"),
    ("x.NHDR", "x-despeckled.nrrd"), ("m.mat", "m-despeckled.npy"), ("cine.seq.nrrd", "cine-despeckled.seq.nrrd"),
])
def test_result_names_keep_the_format_in_one_file(source, name):
    assert result_name(source) == name
