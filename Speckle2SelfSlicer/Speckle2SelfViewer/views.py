"""A thin wrapper of trame-slicer (its API is beta): Slicer's MRML scene and two slice views, Input and Output,
rendered on the server and streamed to the page as lossless PNG frames, their slices linked."""
from __future__ import annotations

import os

import slicer
from trame.widgets import client
from trame_slicer import module as trame_slicer_module
from trame_slicer.core import SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.views import ViewLayoutDefinition

NAMES = ("Input", "Output")
ENCODER = "png"
"""Lossless frames: what the page shows is what the scene holds (and screenshots can be measured)."""


def _no_gutter(*_) -> None:
    """The views get no trame-slicer side buttons: the page has its own controls."""


class LinkedViews:
    """The scene (with Slicer's sequences logic) and the Input and Output slice views of a trame server. Panning,
    zooming or scrolling one moves the other (linked slice composite nodes, slicer-core's vtkMRMLSliceLinkLogic).
    The Output view shows the output over the input, at the fade's opacity."""

    def __init__(self, server):
        if not os.environ.get("DISPLAY"):  # no X server to try first: straight to EGL (Mesa's, without a GPU)
            os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
        server.enable_module(trame_slicer_module)  # also serves window.load_files_by_chunks for uploads
        self.server = server
        self.app = SlicerApp()
        self.scene = self.app.scene
        self.sequences = self.app.register_module_logic(slicer.vtkSlicerSequencesLogic())
        manager = self.app.view_manager
        register_rca_factories(manager, server, slice_view_ui_f=_no_gutter, rca_encoder=ENCODER)
        self.views = {name: manager.create_view(ViewLayoutDefinition.slice_view("Axial", label=name))
                      for name in NAMES}
        manager.set_current_view_ids(list(NAMES))
        for view in self.views.values():
            slicer.vtkMRMLSliceLogic.GetSliceCompositeNode(view.get_view_node()).SetLinkedControl(True)

    def template(self, name: str) -> None:
        """Place view `name` here in the page being built."""
        client.ServerTemplate(name=self.server.translator.translate_key(name))

    def show(self, input_volume, output_volume=None, fade: float = 1.0) -> None:
        """Show `input_volume` in the Input view and, when there is one, `output_volume` over it in the Output
        view (the Output view is empty before). A new input is turned to its plane and fitted; the Output view
        then takes the Input view's place; a new output keeps where the views were moved to."""
        source, result = self.views["Input"], self.views["Output"]
        if source.get_background_volume_id() != input_volume.GetID():
            source.set_background_volume_id(input_volume.GetID())
            source.get_view_node().RotateToVolumePlane(input_volume)
            source.fit_view_to_content()
        background = input_volume.GetID() if output_volume is not None else None
        if result.get_background_volume_id() != background:
            result.set_background_volume_id(background)
            self._place_like(result.get_view_node(), source.get_view_node())
        result.set_foreground_volume_id(output_volume.GetID() if output_volume is not None else None)
        result.set_foreground_opacity(fade)

    @staticmethod
    def _place_like(node, reference) -> None:
        """Give slice node `node` the plane, field of view and centre of slice node `reference`."""
        node.GetSliceToRAS().DeepCopy(reference.GetSliceToRAS())
        node.SetFieldOfView(*reference.GetFieldOfView())
        node.SetXYZOrigin(*reference.GetXYZOrigin())
        node.UpdateMatrices()

    def set_fade(self, fade: float) -> None:
        """The opacity of the output over the input in the Output view: 0 shows the input, 1 the output."""
        self.views["Output"].set_foreground_opacity(fade)
