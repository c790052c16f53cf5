import subprocess
import sys

import pytest
import torch

from speckle2self.network import Speckle2SelfNet, conv_block, count_parameters


def test_parameter_counts_match_the_paper():
    model = Speckle2SelfNet(width=32)
    assert [count_parameters(e) for e in model.encoders] == [1_955_520] * 3
    assert count_parameters(model.decoder) == 1_955_265
    assert count_parameters(model.inference_path()) == 3_910_785
    assert count_parameters(model) == 7_821_825


def test_no_affine_instance_norm_and_bias_everywhere():
    model = Speckle2SelfNet(width=8)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert norms and all(not n.affine for n in norms)
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert all(c.bias is not None and c.kernel_size == (3, 3) for c in convs)


def test_three_branches_share_the_decoder_and_keep_shape():
    model = Speckle2SelfNet(width=8)
    x = [torch.rand(2, 1, 64, 48) for _ in range(3)]
    outputs = model(x)
    assert [o.shape for o in outputs] == [(2, 1, 64, 48)] * 3
    assert model.inference_path().decoder is model.decoder
    assert model.inference_path().encoder is model.encoders[-1]
    y = model.inference_path()(x[0])
    assert y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("options", [{}, {"stride": 2}, {"act": False}, {"stride": 2, "transposed": True},
                                     {"stride": 2, "transposed": True, "conv_only": True}])
def test_each_layer_is_monais_convolution_block(options):
    from monai.networks.blocks import Convolution

    transposed = options.get("transposed", False)
    monai_layer = Convolution(
        spatial_dims=2, in_channels=4, out_channels=6, strides=options.get("stride", 1), kernel_size=3,
        act="RELU" if options.get("act", True) else None, norm="INSTANCE", is_transposed=transposed, padding=1,
        output_padding=1 if transposed else None, conv_only=options.get("conv_only", False))
    ours = conv_block(4, 6, **options)
    ours.load_state_dict(monai_layer.state_dict())  # strict: the same names and shapes
    assert [name for name, _ in ours.named_modules()] == [name for name, _ in monai_layer.named_modules()]
    x = torch.randn(2, 4, 16, 12)
    torch.testing.assert_close(ours(x), monai_layer(x), rtol=0, atol=0)


def test_despeckling_does_not_import_monai():
    probe = "import sys, speckle2self.cli, speckle2self.inference, speckle2self.files; print('monai' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"
