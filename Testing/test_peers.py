"""The benchmark's peer methods: classical filters, learned peers and the registry."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from speckle2self.errors import UserError
from speckle2self.bench.peers import METHODS, classical, learned, select
from speckle2self.bench.peers.learned import Budget, TrainingSet
from speckle2self.bench.simulate import realisation, simulate, simulate_set

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = Budget(seconds=0.3, size=64, batch=2, width=4, precision="fp32")


@pytest.fixture(scope="module")
def phantom():
    return simulate("S-II", "cyst", 128, seed=3)


@pytest.fixture(scope="module")
def training():
    images = simulate_set("S-III", 2, 96, seed=50)
    return TrainingSet([s.noisy for s in images], [s.clean for s in images], [realisation(s, 1) for s in images])


def _run(trainer):
    steps = []
    while True:
        try:
            steps.append(next(trainer))
        except StopIteration as stop:
            return steps, stop.value


def _check_output(before: np.ndarray, image: np.ndarray, output: np.ndarray) -> None:
    assert np.array_equal(before, image), "the input was modified"
    assert output.shape == image.shape and output.dtype == np.float32
    assert np.isfinite(output).all() and output.min() >= 0.0 and output.max() <= 1.0


@pytest.mark.parametrize("method", [m for m in METHODS if m.kind == "classical"], ids=lambda m: m.key)
def test_classical_peers_smooth_speckle_and_keep_the_image_contract(method, phantom):
    if not method.available():
        pytest.skip(f"{method.requires} is not installed (the bench extra)")
    image = phantom.noisy
    before = image.copy()
    output = method.denoiser(TINY)(image)
    _check_output(before, image, output)
    region = phantom.regions["homogeneous"]
    assert output[region].std() < 0.8 * image[region].std()


def test_homogeneous_window_avoids_clipped_pixels():
    rng = np.random.default_rng(0)
    image = 0.5 + 0.02 * rng.standard_normal((64, 64))
    image[:, :40] = 0.0  # outside the sector: flat black, the lowest variation but no speckle
    rows, cols = classical.homogeneous_window(image, size=16)
    assert image[rows, cols].min() > 0.0 and cols.start >= 40


def test_obnlm_keeps_a_flat_image():
    flat = np.full((40, 40), 0.4, dtype=np.float32)
    assert np.allclose(classical.obnlm(flat, h=0.2), 0.4, atol=1e-6)


def test_noise2void_replaces_exactly_the_masked_pixels_with_other_pixels_nearby():
    rows, cols = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    x = (100 * rows + cols).float().expand(2, 1, 16, 16)  # each value names its pixel
    mask = torch.rand_like(x) < 0.3
    replaced = learned._neighbour_replaced(x, mask)
    assert torch.equal(replaced[~mask], x[~mask])
    source_rows, source_cols = replaced[mask] // 100, replaced[mask] % 100
    own_rows, own_cols = x[mask] // 100, x[mask] % 100
    assert ((source_rows - own_rows).abs() <= 2).all() and ((source_cols - own_cols).abs() <= 2).all()
    assert ((source_rows != own_rows) | (source_cols != own_cols)).all()


def test_neighbor2neighbor_takes_two_adjacent_pixels_of_each_cell():
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    choice = learned.PAIRS[torch.randint(len(learned.PAIRS), (1, 1, 2, 2))]
    first, second = learned._take(x, choice, 0), learned._take(x, choice, 1)
    rows = torch.div(first, 4, rounding_mode="floor") - torch.div(second, 4, rounding_mode="floor")
    cols = first % 4 - second % 4
    assert first.shape == (1, 1, 2, 2)
    assert ((rows.abs() + cols.abs()) == 1).all()


@pytest.mark.parametrize("method", [m for m in METHODS if m.trains], ids=lambda m: m.key)
def test_trained_peers_train_within_the_budget_and_denoise(method, training, phantom):
    steps, denoiser = _run(method.train(training, TINY))
    assert steps
    image = phantom.noisy
    before = image.copy()
    _check_output(before, image, denoiser(image))


def test_trained_peers_output_follows_the_inputs_level_and_contrast(phantom):
    """The backbone's InstanceNorm discards level and contrast; the trained peers' network restores both, so
    a higher-contrast copy of an image gives the output stretched alike, a brighter copy a brighter output
    (only about the same: the convolutions' zero padding does not shift with the level)."""
    torch.manual_seed(0)
    net = learned.LevelFollowing(width=4).eval()
    x = torch.from_numpy(phantom.noisy)[None, None] * 0.5
    with torch.inference_mode():
        plain, stretched, brighter = net(x), net(1.5 * x), net(x + 0.2)
    assert float((plain - x.mean()).abs().mean()) < 0.5 * float(x.std())
    assert torch.allclose(stretched, 1.5 * plain, rtol=2e-2)
    assert abs(float(brighter.mean() - plain.mean()) - 0.2) < 0.01


@pytest.mark.parametrize("function", [learned.zs_n2n, learned.dip], ids=lambda f: f.__name__)
def test_per_image_peers_run_on_an_odd_sized_image(function, phantom):
    image = phantom.noisy[:63, :70]
    before = image.copy()
    _check_output(before, image, function(image, TINY, iterations=3))


def test_select_keeps_table_order_and_rejects_unknown_names():
    assert [m.key for m in select(["srad", "median"])] == ["input", "median", "srad"]
    with pytest.raises(UserError, match="Unknown benchmark method.*choose from"):
        select(["median", "wiener"])
    assert all(m.tuned in m.params and m.params[m.tuned] in m.grid for m in METHODS if m.tuned)
