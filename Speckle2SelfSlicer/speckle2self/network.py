"""The Speckle2Self network: three scale-specific encoders and one shared decoder (no skips).

Each layer is a 3x3 convolution (or transposed convolution), InstanceNorm without affine, ReLU: the paper's
layers; a faithful build at width 32 has 1,955,520 parameters per encoder and 1,955,265 in the decoder.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .architecture import DOWNSAMPLING  # noqa: F401 (imported from here by inference and fine-tuning)

SCALES = (0.25, 0.5, 1.0)
"""Multi-scale perturbation factors, small to large; 1.0 is the image itself."""
HEADS = ("faithful", "linear")
"""The decoder's last layer: 'faithful' ends in InstanceNorm + ReLU as the paper states, which fixes every
output's mean and spread whatever the input's brightness; 'linear' ends at the transposed convolution
(same parameters), so the output can follow the input's brightness."""


def pad_to_multiple(x: torch.Tensor, multiple: int = DOWNSAMPLING) -> torch.Tensor:
    """Replicate-pad the bottom and right edges of (B, C, H, W) to a multiple of `multiple`, and a frame
    that would be one multiple both ways to two wide (InstanceNorm needs more than one bottleneck pixel)."""
    h, w = x.shape[-2:]
    right, bottom = -w % multiple + (multiple if max(h, w) <= multiple else 0), -h % multiple
    return F.pad(x, (0, right, 0, bottom), mode="replicate") if right or bottom else x


def conv_block(cin: int, cout: int, stride: int = 1, act: bool = True, transposed: bool = False,
               conv_only: bool = False) -> nn.Sequential:
    """One layer, laid out and named as MONAI's `Convolution` block (conv, then adn.N and adn.A), so checkpoints
    of either load in both. Written with torch.nn because importing MONAI (all of its submodules) took 1.5-2.6 s
    of every command-line start; `Testing/test_network.py` holds it equal to MONAI's block."""
    conv = (nn.ConvTranspose2d(cin, cout, 3, stride, padding=1, output_padding=1) if transposed
            else nn.Conv2d(cin, cout, 3, stride, padding=1))
    if conv_only:
        return nn.Sequential(OrderedDict(conv=conv))
    adn = OrderedDict(N=nn.InstanceNorm2d(cout), **({"A": nn.ReLU()} if act else {}))
    return nn.Sequential(OrderedDict(conv=conv, adn=nn.Sequential(adn)))


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with InstanceNorm, ReLU between, identity shortcut."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_block(channels, channels), conv_block(channels, channels, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _widths(width: int) -> list[int]:
    return [width, 2 * width, 4 * width, 8 * width]


class Encoder(nn.Sequential):
    """Four levels of stride-2 convolution + InstanceNorm + ReLU + residual block."""

    def __init__(self, width: int = 32, in_channels: int = 1):
        layers: list[nn.Module] = []
        cin = in_channels
        for cout in _widths(width):
            layers += [conv_block(cin, cout, stride=2), ResidualBlock(cout)]
            cin = cout
        super().__init__(*layers)


class Decoder(nn.Sequential):
    """Residual block at the bottleneck, then four stride-2 transposed convolutions back to one channel."""

    def __init__(self, width: int = 32, out_channels: int = 1, head: str = "faithful"):
        widths = _widths(width)[::-1]
        layers: list[nn.Module] = [ResidualBlock(widths[0])]
        for cin, cout in zip(widths, widths[1:]):
            layers += [conv_block(cin, cout, stride=2, transposed=True), ResidualBlock(cout)]
        layers.append(conv_block(widths[-1], out_channels, stride=2, transposed=True, conv_only=head == "linear"))
        super().__init__(*layers)


class Speckle2SelfNet(nn.Module):
    """Training model: one encoder per perturbation scale, one shared decoder."""

    def __init__(self, width: int = 32, head: str = "faithful"):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.width, self.head = width, head
        self.encoders = nn.ModuleList(Encoder(width) for _ in SCALES)
        self.decoder = Decoder(width, head=head)

    def forward(self, perturbed: list[torch.Tensor]) -> list[torch.Tensor]:
        """Decode each scale's perturbed image from its own encoder."""
        return [self.decoder(encoder(x)) for encoder, x in zip(self.encoders, perturbed)]

    def inference_path(self) -> "InferenceNet":
        """The large-scale encoder and the decoder, sharing this model's parameters."""
        return InferenceNet(self.encoders[-1], self.decoder)


class InferenceNet(nn.Module):
    """What despeckling runs: large-scale encoder then decoder, output clamped to [0, 1]."""

    def __init__(self, encoder: Encoder, decoder: Decoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x)).clamp(0.0, 1.0)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
