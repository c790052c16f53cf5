"""Image quality on two regions the user marks with markups ROIs: tissue, and a dark structure (lumen, cyst).

On one frame of the input and of the output (the frame through the tissue region's centre): gCNR and CNR between
the regions, SNR and ENL of the tissue region, GLCM homogeneity of the tissue region and the width of the edge
between the regions. The functions are the benchmark's (speckle2self.metrics), applied to the stored pixel
values (for B-mode images: log-compressed display values, so SNR and ENL are not the envelope or intensity
figures of fully developed speckle; compare input and output, not with those constants). RGB counts as luminance.
"""
from __future__ import annotations

import numpy as np
import slicer
import slicer.util
import vtk
from skimage.measure import profile_line

from speckle2self import frames as fr
from speckle2self import metrics
from speckle2self.errors import UserError

from . import nodes

METRICS = ("gCNR", "CNR", "SNR", "ENL", "Hom", "Edge width (mm)")
"""What `compare` reports, in order; edge width is the 10-90 % rise (smaller is sharper)."""


def _ijk_to_world(volume) -> np.ndarray:
    """The 4x4 matrix from the volume's voxel indices (I, J, K) to world RAS, through its parent transforms."""
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    to_world = vtk.vtkMatrix4x4()
    parent = volume.GetParentTransformNode()
    if parent is not None:
        if not parent.IsTransformToWorldLinear():
            raise UserError(f"Volume '{volume.GetName()}' is under a non-linear transform",
                            "harden the transform on it first")
        parent.GetMatrixTransformToWorld(to_world)
    return slicer.util.arrayFromVTKMatrix(to_world) @ slicer.util.arrayFromVTKMatrix(ijk_to_ras)


def _centre_ijk(volume, roi) -> np.ndarray:
    centre = [0.0, 0.0, 0.0]
    roi.GetCenterWorld(centre)
    return (np.linalg.inv(_ijk_to_world(volume)) @ [*centre, 1.0])[:3]


def frame_through(volume, roi) -> int:
    """The frame (index K along the slowest axis) through the ROI's centre, within the volume."""
    frames = volume.GetImageData().GetDimensions()[2]
    return int(np.clip(np.rint(_centre_ijk(volume, roi)[2]), 0, frames - 1))


def region_mask(volume, roi) -> np.ndarray:
    """The pixels (rows J, columns I) of a frame inside the ROI box, in the plane through the ROI's centre
    parallel to the frames: a flat ROI drawn on a frame works."""
    columns, rows, _ = volume.GetImageData().GetDimensions()
    j, i = np.mgrid[:rows, :columns]
    points = np.stack([i.ravel(), j.ravel(), np.full(i.size, _centre_ijk(volume, roi)[2]), np.ones(i.size)])
    world_to_box = np.linalg.inv(slicer.util.arrayFromVTKMatrix(roi.GetObjectToWorldMatrix()))
    local = (world_to_box @ _ijk_to_world(volume) @ points)[:3]
    inside = (np.abs(local) <= np.array(roi.GetSize())[:, None] / 2 + 1e-9).all(axis=0)
    return inside.reshape(rows, columns)


def _display(grey: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """What homogeneity is computed on: 8-bit pixels as they are, anything else min-max mapped to 8 bits."""
    return np.rint(grey).astype(np.uint8) if dtype == np.uint8 else metrics.to_display8(grey)


def _edge_width(grey: np.ndarray, volume, start: np.ndarray, end: np.ndarray, band: int) -> float | str:
    """Edge width (mm) along the line from `start` to `end` (row, column), averaged over a band of lines."""
    profile = profile_line(grey, start, end, linewidth=band, mode="reflect", reduce_func=np.mean)
    rows, columns = end - start
    length = np.linalg.norm(_ijk_to_world(volume)[:3, :2] @ [columns, rows])
    try:
        return metrics.edge_width(profile, spacing=length / (len(profile) - 1))
    except UserError as error:
        return str(error)


def _centre_pixel(volume, roi) -> np.ndarray:
    i, j, _ = _centre_ijk(volume, roi)
    return np.array([j, i])


def _extent(mask: np.ndarray) -> int:
    rows, columns = np.nonzero(mask)
    return min(np.ptp(rows), np.ptp(columns)) + 1


def compare(inputVolume, outputVolume, tissue, dark) -> dict[str, dict[str, float | str]]:
    """METRICS of the input and the output volume ({"Input": {...}, "Output": {...}}) on the frame through the
    tissue ROI's centre. A value that cannot be had on that image (no edge found) is the reason, as text."""
    if tissue is None or dark is None:
        raise UserError("Two regions are needed", "place a region on tissue and one on a dark structure")
    like, other = nodes.volume_array(inputVolume), nodes.volume_array(outputVolume)
    if like.shape != other.shape:
        raise UserError(f"'{outputVolume.GetName()}' and '{inputVolume.GetName()}' differ in size",
                        "compare an output with the input it was made from")
    frame = frame_through(inputVolume, tissue)
    masks = {}
    for name, roi in (("tissue", tissue), ("dark", dark)):
        masks[name] = region_mask(inputVolume, roi)
        if masks[name].sum() < 4:
            raise UserError(f"The {name} region '{roi.GetName()}' covers fewer than 4 pixels of frame {frame} of "
                            f"'{inputVolume.GetName()}'", "place it on the image, over several pixels")
    if (masks["tissue"] & masks["dark"]).any():
        raise UserError(f"The regions '{tissue.GetName()}' and '{dark.GetName()}' overlap",
                        "place them side by side, on either side of a boundary")
    line = _centre_pixel(inputVolume, dark), _centre_pixel(inputVolume, tissue)
    band = max(1, min(_extent(masks["tissue"]), _extent(masks["dark"])))
    results = {}
    for label, volume, array in (("Input", inputVolume, like), ("Output", outputVolume, other)):
        grey = fr.grey_frame(array, fr.validate(array), frame)
        tissue_mask, dark_mask = masks["tissue"], masks["dark"]
        results[label] = dict(zip(METRICS, (
            metrics.gcnr(grey, tissue_mask, dark_mask), metrics.cnr(grey, tissue_mask, dark_mask),
            metrics.snr(grey, tissue_mask), metrics.enl(grey, tissue_mask),
            metrics.homogeneity(_display(grey, array.dtype), tissue_mask), _edge_width(grey, volume, *line, band))))
    return results
