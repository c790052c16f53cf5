"""Issue 16: quality readout on regions marked with real markups ROI nodes (slicer-core)."""
from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
import slicer.util  # noqa: E402
import vtk  # noqa: E402
from scipy import ndimage  # noqa: E402

from speckle2self import metrics  # noqa: E402
from speckle2self.errors import UserError  # noqa: E402
from Speckle2SelfSlicerLib.measure import METRICS, compare, frame_through, region_mask  # noqa: E402
from test_slicer_logic import add_volume, frames, ijk_to_ras, logic, scene  # noqa: E402,F401

TISSUE, DARK = (170, 200, 240, 275), (205, 222, 282, 300)
"""Rows and columns (first, last) of bright speckle and of the dark spot inside the bundled sample's inclusion."""


def ras(volume, i: float, j: float, k: float = 0.0) -> np.ndarray:
    return (ijk_to_ras(volume) @ [i, j, k, 1.0])[:3]


def roi_on_pixels(scene, volume, rows_columns, name="roi"):
    """A flat markups ROI (drawn on frame 0) whose box holds pixels rows r0..r1, columns c0..c1, its edges
    half-way between pixels (markups keep their points in single precision)."""
    r0, r1, c0, c1 = rows_columns
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    roi.SetCenterWorld(ras(volume, (c0 + c1) / 2, (r0 + r1) / 2))
    spacing = volume.GetSpacing()
    roi.SetSize((c1 - c0 + 1) * spacing[0], (r1 - r0 + 1) * spacing[1], 0.0)
    return roi


def pixels(shape, rows_columns) -> np.ndarray:
    r0, r1, c0, c1 = rows_columns
    mask = np.zeros(shape, bool)
    mask[r0:r1 + 1, c0:c1 + 1] = True
    return mask


def test_region_mask_is_what_the_roi_node_says_is_inside(scene, frames):
    volume = add_volume(scene, frames[:5])  # oblique, anisotropic
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "probe")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 7.0)
    transform.SetMatrixTransformToParent(matrix)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "tilted")
    rotation = vtk.vtkTransform()
    rotation.RotateZ(30)
    roi.SetAndObserveObjectToNodeMatrix(rotation.GetMatrix())
    to_world = slicer.util.arrayFromVTKMatrix(matrix) @ ijk_to_ras(volume)
    roi.SetCenterWorld((to_world @ [30, 20, 3, 1])[:3])
    roi.SetSize(5.0, 3.0, 0.5)
    assert frame_through(volume, roi) == 3
    mask = region_mask(volume, roi)
    expected = np.array([[roi.IsPointInROIWorld((to_world @ [i, j, 3, 1])[:3]) for i in range(64)]
                         for j in range(64)], bool)
    assert 20 < mask.sum() and np.array_equal(mask, expected)

    roi.SetCenterWorld((to_world @ [30, 20, 3.3, 1])[:3])  # a flat ROI a little off the frame's plane
    roi.SetSize(5.0, 3.0, 0.0)
    assert frame_through(volume, roi) == 3 and np.array_equal(region_mask(volume, roi), expected)


def test_readout_on_the_bundled_sample_before_and_after_despeckling(scene, logic, sample_array):
    from speckle2self.weights import DEFAULT_WEIGHTS

    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"the shipped model {DEFAULT_WEIGHTS.name} is not there yet")
    volume = plain_volume(scene, sample_array[None], "sample")
    output = logic.process(volume, device="cpu")
    tissue, dark = roi_on_pixels(scene, volume, TISSUE, "tissue"), roi_on_pixels(scene, volume, DARK, "cyst")

    readout = compare(volume, output, tissue, dark)

    t, d = pixels(sample_array.shape, TISSUE), pixels(sample_array.shape, DARK)
    for label, image in (("Input", sample_array), ("Output", slicer.util.arrayFromVolume(output)[0])):
        assert list(readout[label]) == list(METRICS)
        values = readout[label]
        assert values["gCNR"] == metrics.gcnr(image, t, d) and values["CNR"] == metrics.cnr(image, t, d)
        assert values["SNR"] == pytest.approx(metrics.snr(image, t)) and values["ENL"] == pytest.approx(
            metrics.enl(image, t))
        assert values["Hom"] == metrics.homogeneity(image, t)
    before, after = readout["Input"], readout["Output"]
    assert after["gCNR"] > before["gCNR"] and after["CNR"] > before["CNR"]
    assert after["SNR"] > before["SNR"] and after["Hom"] > before["Hom"]
    assert all(isinstance(r["Edge width (mm)"], (float, str)) for r in readout.values())


def test_edge_width_is_in_millimetres_across_the_boundary(scene):
    """A vertical boundary blurred by 3 px (sigma) in the input and 1.5 px in the output, with a little noise;
    0.2 mm pixels along the line. A step sampled on pixels is an error function of sigma^2 + 1/12 px^2."""
    rng = np.random.default_rng(3)
    step = np.where(np.arange(96) < 48, 30.0, 200.0)[None, None, :].repeat(64, axis=1)
    volumes = [plain_volume(scene, (ndimage.gaussian_filter1d(step, sigma, axis=2) + rng.normal(0, 2, step.shape))
                            .astype(np.float32), name) for name, sigma in (("wide", 3.0), ("sharp", 1.5))]
    dark = roi_on_pixels(scene, volumes[0], (20, 40, 20, 36), "dark")
    tissue = roi_on_pixels(scene, volumes[0], (20, 40, 60, 76), "tissue")
    readout = compare(*volumes, tissue, dark)
    for label, sigma in (("Input", 3.0), ("Output", 1.5)):
        assert readout[label]["Edge width (mm)"] == pytest.approx(2.5631 * np.hypot(sigma, 12 ** -0.5) * 0.2, rel=0.05)
    assert readout["Input"]["gCNR"] == readout["Output"]["gCNR"] == 1.0


def plain_volume(scene, array, name):
    """A volume with Slicer's default geometry (axes along RAS), 0.2 x 0.3 mm pixels."""
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(volume, array)
    volume.SetSpacing(0.2, 0.3, 1.0)
    return volume


def test_mistakes_are_one_line_errors(scene, frames):
    volume, other = plain_volume(scene, frames[:1], "image"), plain_volume(scene, frames[:1, :32], "other")
    tissue = roi_on_pixels(scene, volume, (5, 20, 5, 20), "tissue")
    dark = roi_on_pixels(scene, volume, (40, 55, 40, 55), "dark")
    overlapping = roi_on_pixels(scene, volume, (15, 30, 15, 30), "overlapping")
    away = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "away")
    away.SetCenterWorld(ras(volume, 500, 500))
    away.SetSize(2.0, 2.0, 0.0)
    for args, words in [((volume, volume, None, dark), "Two regions are needed"),
                        ((volume, other, tissue, dark), "differ in size"),
                        ((volume, volume, tissue, overlapping), "overlap"),
                        ((volume, volume, tissue, away), "The dark region 'away' covers fewer than 4 pixels")]:
        with pytest.raises(UserError, match=words) as error:
            compare(*args)
        assert "\n" not in str(error.value)
