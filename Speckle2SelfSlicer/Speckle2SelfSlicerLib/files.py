"""Image files in an MRML scene without Slicer's readers: what `speckle2self.image_io` reads (every format of the
command line) as a volume or, for a cine, a volume sequence in its own browser; and a result back in the file's
layout, to write with `image_io.write_image` as the command line does."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer
import slicer.util

from speckle2self.errors import UserError
from speckle2self.frames import is_colour
from speckle2self.image_io import ImageData, extension

from . import nodes
from .finetuned import SCANNER_ATTRIBUTE, scanner_label

ONE_FILE = {".nhdr": ".nrrd", ".mhd": ".mha", ".igs.mhd": ".igs.mha", ".mat": ".npy"}
"""Formats kept in one file instead of a header and a data file, or written instead of a read-only one."""


def frames(image: ImageData) -> list[np.ndarray]:
    """The voxels of each volume `image` becomes, (slices, rows, columns[, channels]): one volume, or for a
    sequence one per frame (a .seq.nrrd frame of D slices is one volume of D slices)."""
    array = image.array
    if array.dtype.itemsize == 8 and np.issubdtype(array.dtype, np.integer):
        raise UserError(f"{image.path.name if image.path else 'The image'} has 64-bit integer pixels, which Slicer "
                        "cannot store", "convert them to 32-bit integers or floating point first")
    colour = is_colour(array)
    stack = array if array.ndim == (4 if colour else 3) else array[None]
    if image.kind != "sequence":
        return [stack]
    return list(stack.reshape(-1, image.slices_per_frame, *stack.shape[1:]))


def add_image(scene, image: ImageData, name: str, sequencesLogic=None):
    """Add `image` to `scene` under `name` with its geometry and return the node to despeckle: a volume, or for
    a sequence ("sequence" kind) the browser of a new volume sequence (with its proxy volume when
    `sequencesLogic`, Slicer's vtkSlicerSequencesLogic, is given)."""
    volumes = frames(image)
    scanner = scanner_label(image.metadata)
    className = "vtkMRMLVectorVolumeNode" if is_colour(image.array) else "vtkMRMLScalarVolumeNode"
    if image.kind != "sequence":
        volume = scene.AddNewNodeByClass(className, scene.GenerateUniqueName(name))
        _fill(volume, image, volumes[0])
        volume.CreateDefaultDisplayNodes()
        if scanner:
            volume.SetAttribute(SCANNER_ATTRIBUTE, scanner)
        return volume
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", scene.GenerateUniqueName(name))
    sequence.SetIndexName("frame")
    if scanner:
        sequence.SetAttribute(SCANNER_ATTRIBUTE, scanner)
    for number, array in enumerate(volumes):
        frame = getattr(slicer, className)()
        frame.SetName(f"{name} {number}")
        _fill(frame, image, array)
        sequence.SetDataNodeAtValue(frame, str(number))
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", scene.GenerateUniqueName(f"{name} browser"))
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    if sequencesLogic is not None:
        sequencesLogic.UpdateProxyNodesFromSequences(browser)
        browser.GetProxyNode(sequence).CreateDefaultDisplayNodes()
    return browser


def _fill(volume, image: ImageData, array: np.ndarray) -> None:
    slicer.util.updateVolumeFromArray(volume, array)
    if image.spacing is not None:
        nodes.set_itk_geometry(volume, image.spacing, image.origin, image.direction)


def result_array(node, like: ImageData) -> np.ndarray:
    """The voxels of the despeckling result `node` of the file `like` (a volume, or the sequence the logic made)
    in the layout of `like.array`, for `image_io.write_image(..., like=like)`."""
    if node.IsA("vtkMRMLSequenceNode"):
        arrays = [slicer.util.arrayFromVolume(node.GetNthDataNode(i)) for i in range(node.GetNumberOfDataNodes())]
    else:
        arrays = [slicer.util.arrayFromVolume(node)]
    return np.concatenate(arrays).reshape(like.array.shape)


def result_name(source: Path | str) -> str:
    """The file name of the result of `source`: "<name>-despeckled" in its format, or in the one-file format
    that stands for it (ONE_FILE)."""
    name = Path(source).name
    ext = extension(Path(name))
    return f"{name[:len(name) - len(ext)]}-despeckled{ONE_FILE.get(ext.lower(), ext)}"
