"""MRML helpers: voxels of volume nodes as frames, output volumes with the input's geometry, sequences."""
from __future__ import annotations

import numpy as np
import slicer
import slicer.util
import vtk
from vtk.util import numpy_support

from speckle2self.errors import UserError

VOLUME_CLASSES = ("vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode")
"""Node classes that can be despeckled (a labelmap is a scalar volume but is refused)."""


def nodes_of_class(scene, className: str) -> list:
    collection = scene.GetNodesByClass(className)
    return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]


def same(a, b) -> bool:
    """Whether two wrappers are the same MRML node (VTK may wrap one node in several Python objects)."""
    return a is b or (a is not None and b is not None and a.GetID() is not None and a.GetID() == b.GetID())


def is_volume(node) -> bool:
    return node is not None and node.GetClassName() in VOLUME_CLASSES


def first_volume(scene):
    """The scene's first volume that can be despeckled, None if it has none (a labelmap, which
    GetFirstNodeByClass("vtkMRMLScalarVolumeNode") may return, is not one)."""
    return next((node for node in nodes_of_class(scene, "vtkMRMLVolumeNode") if is_volume(node)), None)


def volume_array(node) -> np.ndarray:
    """The voxels of a volume node as read-only frames: (frames, rows, columns[, components]).

    Frames run along the slowest axis (K, axis 0 of slicer.util.arrayFromVolume); a 2-D image is one frame.
    """
    image = node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise UserError(f"Volume '{node.GetName()}' has no image data",
                        "load an image into it or choose another input volume")
    if 0 in image.GetDimensions():
        raise UserError(f"Volume '{node.GetName()}' is empty (dimensions {image.GetDimensions()})",
                        "choose a volume that holds an image")
    components = image.GetNumberOfScalarComponents()
    if components not in (1, 3, 4):
        raise UserError(f"Volume '{node.GetName()}' has {components} components per voxel",
                        "choose a scalar, RGB or RGBA volume")
    view = slicer.util.arrayFromVolume(node).view()
    if numpy_support.get_vtk_array_type(view.dtype) == vtk.VTK_LONG_LONG:  # refused by updateVolumeFromArray
        raise UserError(f"Volume '{node.GetName()}' has 64-bit integer voxels, which Slicer cannot store",
                        "cast it to 32-bit integer or float first (Cast Scalar Volume module)")
    view.flags.writeable = False
    return view


def write_volume(node, like, array: np.ndarray) -> None:
    """Fill `node` with `array` and give it the geometry, parent transform and display settings of `like`."""
    node.CopyOrientation(like)
    slicer.util.updateVolumeFromArray(node, array)
    node.SetAndObserveTransformNodeID(like.GetTransformNodeID())
    if node.GetScene() is not None:
        node.CreateDefaultDisplayNodes()
        copy_display(node, like)


RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
"""Slicer's RAS coordinates to ITK's LPS ones and back (its own inverse)."""


def itk_geometry(node) -> dict:
    """Spacing, origin and direction of a volume node as ITK (SimpleITK, image files) has them: in LPS
    coordinates where Slicer uses RAS, so a file written with them opens in Slicer where the node lies."""
    directions = vtk.vtkMatrix4x4()
    node.GetIJKToRASDirectionMatrix(directions)
    rotation = RAS_TO_LPS @ slicer.util.arrayFromVTKMatrix(directions)[:3, :3]
    return {"spacing": tuple(node.GetSpacing()), "origin": tuple(RAS_TO_LPS @ np.array(node.GetOrigin())),
            "direction": tuple(rotation.ravel())}


def set_itk_geometry(node, spacing, origin, direction) -> None:
    """Place a volume node where ITK geometry (as `itk_geometry` gives it, or 2-D: a frame in the z = 0 plane)
    puts it."""
    dimension = len(spacing)
    rotation = np.eye(4)
    rotation[:dimension, :dimension] = np.reshape(direction, (dimension, dimension))
    rotation[:3, :3] = RAS_TO_LPS @ rotation[:3, :3]
    matrix = vtk.vtkMatrix4x4()
    slicer.util.updateVTKMatrixFromArray(matrix, rotation)
    node.SetIJKToRASDirectionMatrix(matrix)
    node.SetSpacing(*spacing, *[1.0] * (3 - dimension))
    node.SetOrigin(*(RAS_TO_LPS @ np.array([*origin, *[0.0] * (3 - dimension)])))


def copy_display(node, like) -> None:
    """Show `node` like `like` (same fixed window/level, colour map), so that before and after compare fairly."""
    source, target = like.GetDisplayNode(), node.GetDisplayNode()
    if source is None or target is None or source.GetClassName() != target.GetClassName():
        return
    target.CopyContent(source)
    if target.IsA("vtkMRMLScalarVolumeDisplayNode"):
        target.SetAutoWindowLevel(False)
        target.SetWindowLevel(source.GetWindow(), source.GetLevel())


def place_beside(node, reference) -> None:
    """Put `node` in the same subject-hierarchy folder or study as `reference` (e.g. a DICOM study)."""
    hierarchy = node.GetScene().GetFirstNodeByClass("vtkMRMLSubjectHierarchyNode")
    if hierarchy is None:
        return
    item, referenceItem = hierarchy.GetItemByDataNode(node), hierarchy.GetItemByDataNode(reference)
    if item and referenceItem:
        hierarchy.SetItemParent(item, hierarchy.GetItemParent(referenceItem))


def remove(node) -> None:
    """Remove a node with its display and storage nodes from its scene."""
    scene, helpers = node.GetScene(), []
    if node.IsA("vtkMRMLDisplayableNode"):
        helpers += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    if node.IsA("vtkMRMLStorableNode"):
        helpers += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    for helper in [*helpers, node]:
        if helper is not None and helper.GetScene() is not None:
            scene.RemoveNode(helper)


def sequence_browser(node):
    """The sequence browser of `node`: the node itself, a browser it is a proxy of, or one it is synchronized in."""
    if node is None or node.GetScene() is None:
        return None
    if node.IsA("vtkMRMLSequenceBrowserNode"):
        return node
    for browser in nodes_of_class(node.GetScene(), "vtkMRMLSequenceBrowserNode"):
        if browser.IsProxyNodeID(node.GetID()) or browser.IsSynchronizedSequenceNodeID(node.GetID(), True):
            return browser
    return None


def volume_sequence(browser):
    """The browser's master sequence if it holds volumes, else its first synchronized volume sequence."""
    synchronized = vtk.vtkCollection()
    browser.GetSynchronizedSequenceNodes(synchronized, True)
    others = [synchronized.GetItemAsObject(i) for i in range(synchronized.GetNumberOfItems())]
    for sequence in [browser.GetMasterSequenceNode(), *others]:
        if sequence is not None and sequence.GetDataNodeClassName() in VOLUME_CLASSES:
            return sequence
    raise UserError(f"Sequence browser '{browser.GetName()}' holds no volume sequence",
                    "choose a browser of an image sequence (cine loop)")


def displayed_volume(node):
    """The volume that shows `node`: the node itself, or for a sequence (a browser: its volume sequence) its proxy
    volume (None without one)."""
    if node.IsA("vtkMRMLSequenceBrowserNode"):
        node = volume_sequence(node)
    if not node.IsA("vtkMRMLSequenceNode"):
        return node
    browser = sequence_browser(node)
    return browser.GetProxyNode(node) if browser is not None else None
