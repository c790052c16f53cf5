"""Learning-based peers: trained on a set of images under a wall-clock budget, or fitted per image.

Trained peers use our backbone (one Speckle2Self encoder and the decoder, no skips) so that only the
training signal differs: Noise2Void and Noise2Self (blind-spot masking), Neighbor2Neighbor, and on
simulations the Noise2Noise and supervised upper bounds. A trainer is a generator that yields a status
line per step and returns a denoiser (image -> image). Per-image methods (ZS-N2N, Deep Image Prior)
are plain functions. Images are float (H, W) in the 8-bit display domain scaled to [0, 1].
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Callable, Generator, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...network import pad_to_multiple
from ...network import Decoder, Encoder
from ...precision import autocast, resolve_precision

Denoiser = Callable[[np.ndarray], np.ndarray]
Trainer = Generator[str, None, Denoiser]


@dataclass(frozen=True)
class TrainingSet:
    """The images a trained method may learn from (all (H, W) float in [0, 1])."""

    noisy: Sequence[np.ndarray]
    clean: Sequence[np.ndarray] | None = None
    """Clean references (simulations only): the supervised upper bound's targets."""
    second: Sequence[np.ndarray] | None = None
    """An independent speckle realisation of each noisy image (simulations only): Noise2Noise's targets."""


@dataclass(frozen=True)
class Budget:
    """What every trained method gets: wall-clock seconds, crop size, batch, network width, seed, device and
    arithmetic precision (our backbone runs in bf16 wherever ours does: see `precision`)."""

    seconds: float
    size: int = 256
    batch: int = 4
    width: int = 32
    seed: int = 777
    device: str = "cpu"
    precision: str = "auto"

    def autocast(self):
        device = torch.device(self.device)
        return autocast(resolve_precision(self.precision, device), device)


class Backbone(nn.Module):
    """Our inference path as a plain image-to-image network: one encoder, the decoder (no skips), then a
    1x1 convolution (two parameters). Our decoder ends in InstanceNorm + ReLU, so its output has a fixed
    spread; Speckle2Self fits min-max normalised targets and maps its output back to the input's range,
    but a peer that regresses intensities (its targets, the clean image, the image itself) needs its output
    level and contrast free. For one image (Deep Image Prior) the head's two parameters give that; it starts
    at mid-grey with a quarter of the decoder's spread, so the first steps are not spent on finding the grey
    level. Peers trained on many images use `LevelFollowing`."""

    def __init__(self, width: int, in_channels: int = 1):
        super().__init__()
        self.encoder = Encoder(width, in_channels)
        self.decoder = Decoder(width)
        self.head = nn.Conv2d(1, 1, 1)
        nn.init.constant_(self.head.weight, 0.25)
        nn.init.constant_(self.head.bias, 0.4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(self.encoder(x)))


class LevelFollowing(Backbone):
    """The trained peers' network. The backbone's InstanceNorm layers discard each image's level and contrast,
    which a peer regressing intensities over many images cannot then reproduce (a supervised model collapsed
    to SSIM 0.28 on S-II), so the output is the input's mean plus its standard deviation times the backbone's:
    what brightness matching does for Speckle2Self. The head starts at the input's mean."""

    def __init__(self, width: int):
        super().__init__(width)
        nn.init.constant_(self.head.bias, -0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(-2, -1), keepdim=True)
        spread = x.std(dim=(-2, -1), keepdim=True).clamp_min(1e-3)
        return mean + spread * super().forward(x)


def apply_network(net: nn.Module, budget: Budget, image: np.ndarray) -> np.ndarray:
    """Run `net` on one image (padded to the network's multiple, cropped back, clamped to [0, 1])."""
    h, w = image.shape
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(budget.device)
    net.eval()
    with torch.inference_mode(), budget.autocast():
        out = net(pad_to_multiple(x))[0, 0, :h, :w].float().clamp(0.0, 1.0)
    return out.cpu().numpy()


def crop_size(size: int, images: Sequence[np.ndarray]) -> int:
    """The training crop side: `size`, or less to fit the smallest image, a multiple of 32 (Neighbor2Neighbor
    halves it and the backbone needs multiples of 16)."""
    return max(32, min(size, *(min(image.shape) for image in images)) // 32 * 32)


class CropSampler:
    """Same-position square crops of aligned image lists (input and targets), with random flips."""

    def __init__(self, stacks: Sequence[Sequence[np.ndarray]], size: int, rng: np.random.Generator):
        self.stacks = [[np.asarray(image, dtype=np.float32) for image in stack] for stack in stacks]
        self.size = crop_size(size, self.stacks[0])
        self.rng = rng

    def batch(self, n: int, device: str) -> list[torch.Tensor]:
        """One (n, 1, size, size) tensor per stack."""
        crops: list[list[np.ndarray]] = [[] for _ in self.stacks]
        for _ in range(n):
            index = self.rng.integers(len(self.stacks[0]))
            h, w = self.stacks[0][index].shape
            top, left = self.rng.integers(h - self.size + 1), self.rng.integers(w - self.size + 1)
            flip_rows, flip_cols = self.rng.random(2) < 0.5
            for crop, stack in zip(crops, self.stacks):
                c = stack[index][top:top + self.size, left:left + self.size]
                c = c[::-1] if flip_rows else c
                crop.append(c[:, ::-1] if flip_cols else c)
        return [torch.from_numpy(np.stack(c)[:, None].copy()).to(device) for c in crops]


def _optimise(net: nn.Module, loss: Callable[[float], torch.Tensor], budget: Budget) -> Generator[str, None, None]:
    """Adam (our recipe: lr 1e-3, betas 0.5/0.999) for the budget's seconds of wall clock, at least one
    step. `loss(fraction)` gets the fraction of the budget used so far and runs under the budget's autocast."""
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.999))
    net.train()
    start, step = time.perf_counter(), 0
    while step == 0 or time.perf_counter() - start < budget.seconds:
        with budget.autocast():
            value = loss(min(1.0, (time.perf_counter() - start) / max(budget.seconds, 1e-9))).float()
        optimiser.zero_grad(set_to_none=True)
        value.backward()
        optimiser.step()
        step += 1
        yield f"step {step} loss {float(value.detach()):.4f}"


def _setup(budget: Budget, stacks: Sequence[Sequence[np.ndarray]]) -> tuple[LevelFollowing, CropSampler]:
    torch.manual_seed(budget.seed)
    sampler = CropSampler(stacks, budget.size, np.random.default_rng(budget.seed))
    return LevelFollowing(budget.width).to(budget.device), sampler


def _neighbour_replaced(x: torch.Tensor, mask: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Noise2Void's replacement: each masked pixel takes a random other pixel of its 5x5 window (offsets
    that leave the image are mirrored, so the pixel never sees itself)."""
    b, _, h, w = x.shape
    choices = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1) if dy or dx]
    offsets = torch.tensor(choices, device=x.device)[torch.randint(len(choices), (b, h, w), device=x.device)]
    rows = torch.arange(h, device=x.device)[:, None] + offsets[..., 0]
    cols = torch.arange(w, device=x.device)[None, :] + offsets[..., 1]
    rows = torch.where((rows < 0) | (rows >= h), rows - 2 * offsets[..., 0], rows)
    cols = torch.where((cols < 0) | (cols >= w), cols - 2 * offsets[..., 1], cols)
    picked = x[torch.arange(b, device=x.device)[:, None, None], 0, rows, cols][:, None]
    return torch.where(mask, picked, x)


DONUT = torch.tensor([[0.5, 1.0, 0.5], [1.0, 0.0, 1.0], [0.5, 1.0, 0.5]]) / 6.0
"""Noise2Self's replacement: the mean of the 3x3 neighbourhood without the pixel itself."""


def _donut_replaced(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    smooth = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), DONUT.to(x)[None, None])
    return torch.where(mask, smooth, x)


def _blind_spot_mask(x: torch.Tensor, scheme: str, fraction: float, grid: int) -> torch.Tensor:
    if scheme == "random":
        return torch.rand_like(x) < fraction
    rows, cols = torch.arange(x.shape[-2], device=x.device), torch.arange(x.shape[-1], device=x.device)
    phase = torch.randint(grid, (2,))
    mask = ((rows[:, None] % grid) == phase[0]) & ((cols[None, :] % grid) == phase[1])
    return mask.expand_as(x)


def blind_spot(data: TrainingSet, budget: Budget, scheme: str = "random", fraction: float = 1 / 64,
               grid: int = 4) -> Trainer:
    """Blind-spot self-supervision: hide some pixels, predict them from their neighbours, loss on the
    hidden pixels only. scheme "random": Noise2Void (Krull et al. 2019; `fraction` of the pixels, each
    replaced by a random neighbour); "grid": Noise2Self (Batson and Royer 2019; one phase of a grid x grid
    lattice, replaced by the donut mean)."""
    net, sampler = _setup(budget, [data.noisy])
    hide = _neighbour_replaced if scheme == "random" else _donut_replaced

    def loss(_: float) -> torch.Tensor:
        (x,) = sampler.batch(budget.batch, budget.device)
        mask = _blind_spot_mask(x, scheme, fraction, grid)
        error = (net(hide(x, mask)) - x) ** 2
        return (error * mask).sum() / mask.sum().clamp_min(1)

    yield from _optimise(net, loss, budget)
    return partial(apply_network, net, budget)


PAIRS = torch.tensor([[0, 1], [0, 2], [1, 3], [2, 3], [1, 0], [2, 0], [3, 1], [3, 2]])
"""Neighbouring pixel pairs in a 2x2 cell (row-major 0..3), both orders."""


def _cells(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h // 2, w // 2, 4)


def _take(x: torch.Tensor, choice: torch.Tensor, which: int) -> torch.Tensor:
    return _cells(x).gather(-1, choice[..., which:which + 1]).squeeze(-1)


def neighbor2neighbor(data: TrainingSet, budget: Budget, gamma: float = 2.0) -> Trainer:
    """Neighbor2Neighbor (Huang et al. 2021): two half-resolution sub-images from random neighbouring
    pixels of each 2x2 cell; one predicts the other, plus a regulariser (weight ramped 0 -> gamma) that
    ties this to the full-resolution output."""
    net, sampler = _setup(budget, [data.noisy])

    def loss(fraction: float) -> torch.Tensor:
        (x,) = sampler.batch(budget.batch, budget.device)
        b, _, h, w = x.shape
        choice = PAIRS.to(x.device)[torch.randint(len(PAIRS), (b, 1, h // 2, w // 2), device=x.device)]
        first, second = _take(x, choice, 0), _take(x, choice, 1)
        with torch.no_grad():
            full = net(x)
        predicted = net(first)
        regulariser = F.mse_loss(predicted - second, _take(full, choice, 0) - _take(full, choice, 1))
        return F.mse_loss(predicted, second) + gamma * fraction * regulariser

    yield from _optimise(net, loss, budget)
    return partial(apply_network, net, budget)


def _paired(data: TrainingSet, targets: Sequence[np.ndarray], budget: Budget) -> Trainer:
    net, sampler = _setup(budget, [data.noisy, targets])

    def loss(_: float) -> torch.Tensor:
        x, y = sampler.batch(budget.batch, budget.device)
        return F.mse_loss(net(x), y)

    yield from _optimise(net, loss, budget)
    return partial(apply_network, net, budget)


def noise2noise(data: TrainingSet, budget: Budget) -> Trainer:
    """Noise2Noise (Lehtinen et al. 2018): map one speckle realisation to an independent one of the same
    scene. Needs two acquisitions of a static scene: simulations only."""
    return _paired(data, data.second, budget)


def supervised(data: TrainingSet, budget: Budget) -> Trainer:
    """Supervised upper bound: map the noisy image to its clean reference (simulations only)."""
    return _paired(data, data.clean, budget)


class _ZSNet(nn.Sequential):
    """ZS-N2N's own network: two 3x3 convolutions (48 channels, leaky ReLU) and a 1x1 output."""

    def __init__(self, channels: int = 48):
        super().__init__(nn.Conv2d(1, channels, 3, padding=1), nn.LeakyReLU(0.2),
                         nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.2),
                         nn.Conv2d(channels, 1, 1))


def _halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ZS-N2N's pair downsampler: the two diagonals' means of each 2x2 cell."""
    first = torch.tensor([[0.5, 0.0], [0.0, 0.5]], device=x.device)[None, None]
    return F.conv2d(x, first, stride=2), F.conv2d(x, first.flip(-1), stride=2)


def zs_n2n(image: np.ndarray, budget: Budget, iterations: int) -> np.ndarray:
    """Zero-shot Noise2Noise (Mansour and Heckel 2023), fitted on the image alone: a tiny network
    predicts the noise; residual loss between the two downsampled halves plus a consistency loss.
    Adam lr 1e-3, halved at three quarters of the iterations. Uses its own small network, as published:
    a per-image fit of our 3.9M-parameter backbone would only memorise the speckle. Runs in fp32 on the
    budget's device; the budget's seconds do not apply (the iterations are fixed)."""
    torch.manual_seed(budget.seed)
    device = budget.device
    h, w = image.shape
    x = F.pad(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None],
              (0, w % 2, 0, h % 2), mode="replicate").to(device)
    net = _ZSNet().to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.StepLR(optimiser, step_size=max(1, 3 * iterations // 4), gamma=0.5)
    for _ in range(iterations):
        first, second = _halves(x)
        clean_first, clean_second = first - net(first), second - net(second)
        full_first, full_second = _halves(x - net(x))
        loss = 0.5 * (F.mse_loss(clean_first, second) + F.mse_loss(clean_second, first)) + \
            0.5 * (F.mse_loss(clean_first, full_first) + F.mse_loss(clean_second, full_second))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
    with torch.inference_mode():
        return (x - net(x))[0, 0, :h, :w].clamp(0.0, 1.0).cpu().numpy()


def dip_trajectory(image: np.ndarray, budget: Budget, iterations: int, every: int, width: int = 8,
                   channels: int = 32, lr: float = 0.01, jitter: float = 1 / 30) -> Iterator[tuple[int, np.ndarray]]:
    """Deep Image Prior (Ulyanov et al. 2018) on our backbone (at `width`): fit a network from a fixed
    random code to the noisy image, yielding (iteration, output) every `every` iterations. The code gets
    fresh noise (std `jitter`) at every step, as in the original. Device, seed and precision come from the
    budget; its seconds do not apply."""
    torch.manual_seed(budget.seed)
    device = budget.device
    h, w = image.shape
    target = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
    code = pad_to_multiple(torch.rand(1, channels, h, w, device=device) * 0.1)
    net = Backbone(width, in_channels=channels).to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    for iteration in range(1, iterations + 1):
        with budget.autocast():
            output = net(code + jitter * torch.randn_like(code))[..., :h, :w]
        loss = F.mse_loss(output.float(), target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if iteration % every == 0 or iteration == iterations:
            with torch.inference_mode(), budget.autocast():
                yield iteration, net(code)[0, 0, :h, :w].float().clamp(0.0, 1.0).cpu().numpy()


def dip(image: np.ndarray, budget: Budget, iterations: int, **options) -> np.ndarray:
    """Deep Image Prior stopped early after `iterations` (fixed, tuned once on S-II)."""
    *_, (_, output) = dip_trajectory(image, budget, iterations, every=iterations, **options)
    return output
