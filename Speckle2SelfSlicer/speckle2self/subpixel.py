"""The decoder's transposed convolutions rewritten as convolutions and pixel shuffles, for OpenVINO.

OpenVINO's CPU plugin runs a transposed convolution (ConvolutionBackpropData) in f32 whatever precision it
is asked for: 6.5 of the int8 network's 27 ms per 512 x 512 frame, 2 of them in the one-channel output
layer. A stride-2, 3 x 3 transposed convolution (padding 1, output padding 1) is exactly a 2 x 2 convolution
to four times the channels, one group per output phase, followed by a pixel shuffle; that convolution runs
on OpenVINO's int8 and bf16 kernels.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

_TAPS = ((1, None), (2, 0))
"""For output phase a (row or column 2m + a), the transposed kernel's index that input offset 0 and +1
(pixels m and m + 1) meet; None: that offset does not reach this phase."""


class SubPixelConvolution(nn.Module):
    """A stride-2 3 x 3 transposed convolution (padding 1, output padding 1) as conv 2 x 2 + pixel shuffle."""

    def __init__(self, transposed: nn.ConvTranspose2d):
        super().__init__()
        if (transposed.stride, transposed.kernel_size, transposed.padding, transposed.output_padding,
                transposed.dilation, transposed.groups) != ((2, 2), (3, 3), (1, 1), (1, 1), (1, 1), 1):
            raise ValueError(f"only stride-2 3x3 transposed convolutions with padding 1 and output padding 1 "
                             f"are rewritten, not {transposed}")
        w = transposed.weight.detach()  # (in, out, 3, 3)
        weight = w.new_zeros(w.shape[1], 2, 2, w.shape[0], 2, 2)  # (out, row phase, column phase, in, taps)
        for a, rows in enumerate(_TAPS):
            for b, cols in enumerate(_TAPS):
                for th, kh in enumerate(rows):
                    for tw, kw in enumerate(cols):
                        if kh is not None and kw is not None:
                            weight[:, a, b, :, th, tw] = w[:, :, kh, kw].T
        self.conv = nn.Conv2d(w.shape[0], 4 * w.shape[1], 2, bias=transposed.bias is not None)
        self.conv.weight = nn.Parameter(weight.reshape(self.conv.weight.shape))
        if transposed.bias is not None:
            self.conv.bias = nn.Parameter(transposed.bias.detach().repeat_interleave(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(F.pad(x, (0, 1, 0, 1))), 2)


def subpixel_copy(net: nn.Module) -> nn.Module:
    """A copy of `net` with every transposed convolution rewritten (`SubPixelConvolution`); `net` is unchanged."""
    net = copy.deepcopy(net)
    for module in list(net.modules()):
        for child, layer in list(module.named_children()):
            if isinstance(layer, nn.ConvTranspose2d):
                setattr(module, child, SubPixelConvolution(layer))
    return net


def openvino_model(net: nn.Module, example: torch.Tensor):
    """`net` converted to OpenVINO (any batch and frame size) as its `subpixel_copy`, pixel shuffles as
    DepthToSpace (`with_depth_to_space`)."""
    import openvino as ov

    with torch.no_grad():
        return with_depth_to_space(ov.convert_model(subpixel_copy(net).float().cpu().eval(), example_input=example,
                                                    input=[(-1, 1, -1, -1)]))


def with_depth_to_space(model):
    """An OpenVINO model of a `subpixel_copy` with each pixel shuffle (converted as reshape, 6-D transpose,
    reshape: a slow generic transpose on the CPU plugin) as one DepthToSpace, in place; returns it."""
    import openvino.opset13 as ops

    for op in model.get_ordered_ops():
        if op.get_type_name() == "Transpose" and "pixel_shuffle" in op.get_friendly_name():
            first = op.input_value(0).get_node()
            last = next(iter(op.output(0).get_target_inputs())).get_node()
            if first.get_type_name() != "Reshape" or last.get_type_name() != "Reshape":
                raise ValueError(f"unexpected pixel shuffle around {op.get_friendly_name()}")
            shuffled = ops.depth_to_space(first.input_value(0), "depth_first", 2)
            shuffled.set_friendly_name(op.get_friendly_name().replace("Transpose", "DepthToSpace"))
            last.output(0).replace(shuffled.output(0))
    model.validate_nodes_and_infer_types()
    return model
