import torch

from speckle2self.losses import LossWeights, consistency_loss, speckle2self_loss
from speckle2self.perturbation import minmax, perturb, resample


def test_msp_shapes_ranges_and_untouched_large_branch():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 100, 130) * 40 + 7
    small, medium, large = perturb(x)
    for p in (small, medium, large):
        assert p.shape == x.shape
        assert torch.allclose(p.amin(dim=(-2, -1)), torch.zeros(3, 1), atol=1e-6)
        assert torch.allclose(p.amax(dim=(-2, -1)), torch.ones(3, 1), atol=1e-6)
    assert torch.equal(large, minmax(x))
    # Smaller scales lose more detail: their difference to the image grows as the scale shrinks.
    err_small = (small - large).abs().mean()
    err_medium = (medium - large).abs().mean()
    assert err_small > err_medium > 0


def test_resample_is_bilinear_down_and_up_without_antialiasing():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    down_up = resample(x, 0.5)
    down = torch.nn.functional.interpolate(x, size=(2, 2), mode="bilinear", align_corners=False)
    assert torch.allclose(down, torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    assert torch.allclose(down_up, torch.nn.functional.interpolate(down, size=(4, 4), mode="bilinear",
                                                                   align_corners=False))


def test_consistency_loss_is_zero_for_equal_outputs_and_positive_otherwise():
    y = torch.rand(2, 1, 16, 16)
    assert consistency_loss([y, y.clone(), y.clone()]) == 0
    assert consistency_loss([y, y + 0.1, y]) > 0


def test_total_loss_is_reconstruction_plus_consistency_with_weights():
    torch.manual_seed(1)
    inputs = [torch.rand(1, 1, 8, 8) for _ in range(3)]
    outputs = [torch.rand(1, 1, 8, 8) for _ in range(3)]
    parts = speckle2self_loss(outputs, inputs)
    assert torch.isclose(parts["total"], parts["reconstruction"] + parts["consistency"])
    expected_rec = sum(((o - i) ** 2).mean() for o, i in zip(outputs, inputs))
    assert torch.isclose(parts["reconstruction"], expected_rec)
    zero = speckle2self_loss(outputs, inputs, LossWeights((0, 0, 0), (0, 0, 0)))
    assert zero["total"] == 0
    assert speckle2self_loss(inputs, inputs)["reconstruction"] == 0


def test_augmentation_is_identical_for_the_three_scales():
    from speckle2self.augment import augment_together, augmentation

    torch.manual_seed(2)
    image = torch.rand(1, 1, 32, 32)
    transform = augmentation(32, seed=3)
    changed = 0
    for _ in range(20):
        a, b, c = augment_together(transform, [image[0], image[0].clone(), image[0].clone()])
        assert torch.equal(a, b) and torch.equal(b, c) and a.shape == (1, 32, 32)
        changed += not torch.allclose(a, image[0])
    assert 0 < changed < 20  # each transform fires with p=0.3, so some draws change the image
