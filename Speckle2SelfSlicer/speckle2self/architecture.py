"""Facts of the network's architecture that code without torch needs (frame size checks in Slicer's process)."""

DOWNSAMPLING = 16
"""Total stride of an encoder: inputs are padded to a multiple of this."""
