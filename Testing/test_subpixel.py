"""The decoder's transposed convolutions as convolution + pixel shuffle (the int8 path's graph): exact."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from speckle2self.inference import inference_model
from speckle2self.subpixel import SubPixelConvolution, openvino_model, subpixel_copy


def test_a_transposed_convolution_and_its_rewrite_agree():
    torch.manual_seed(0)
    transposed = nn.ConvTranspose2d(5, 3, 3, stride=2, padding=1, output_padding=1)
    x = torch.randn(2, 5, 7, 9)
    with torch.no_grad():
        expected, rewritten = transposed(x), SubPixelConvolution(transposed)(x)
    assert rewritten.shape == expected.shape == (2, 3, 14, 18)
    torch.testing.assert_close(rewritten, expected, atol=1e-6, rtol=0)


def test_other_transposed_convolutions_are_refused():
    with pytest.raises(ValueError, match="only stride-2 3x3"):
        SubPixelConvolution(nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1))


def test_the_rewritten_network_and_its_openvino_model_equal_the_shipped_network():
    import openvino as ov

    net = inference_model(device="cpu")
    rewritten = subpixel_copy(net)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in rewritten.modules())
    assert any(isinstance(m, nn.ConvTranspose2d) for m in net.modules())  # the original is untouched
    x = torch.rand(1, 1, 96, 160)
    model = openvino_model(net, x)
    kinds = [op.get_type_name() for op in model.get_ordered_ops()]
    assert kinds.count("DepthToSpace") == 4 and "ConvolutionBackpropData" not in kinds and "Transpose" not in kinds
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    with torch.no_grad():
        expected = net(x).numpy()
        torch.testing.assert_close(rewritten(x), net(x), atol=1e-5, rtol=0)
    np.testing.assert_allclose(compiled(x.numpy())[0], expected, atol=1e-5, rtol=0)
