import torch

from speckle2self.network import Speckle2SelfNet, count_parameters


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
