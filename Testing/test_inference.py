import time

import numpy as np
import pytest

from speckle2self.errors import Cancelled, UserError
from speckle2self.inference import despeckle, despeckle_job, in_order, resolve_device


@pytest.mark.parametrize("shape", [(257, 301), (3, 257, 301), (40, 33)])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_any_size_keeps_shape_dtype_and_range(tiny_weights, shape, dtype):
    rng = np.random.default_rng(0)
    image = (rng.random(shape) * 200 - (50 if dtype == np.int16 else 0)).astype(dtype)
    before = image.copy()
    out = despeckle(image, weights=tiny_weights)
    assert out.shape == image.shape and out.dtype == image.dtype
    frames = out.reshape((-1,) + shape[-2:])
    for o, i in zip(frames, image.reshape(frames.shape)):
        assert i.min() <= o.min() and o.max() <= i.max()
    np.testing.assert_array_equal(image, before)  # input untouched


def test_stack_frames_are_despeckled_independently(tiny_weights, sample_array):
    frame = sample_array[:128, 200:392]
    stack = np.stack([frame, frame[::-1], frame])
    out = despeckle(stack, weights=tiny_weights, batch_size=2)
    # Batching changes float rounding only: within one grey level of the frame alone.
    single = despeckle(frame, weights=tiny_weights).astype(int)
    assert np.abs(out[0].astype(int) - single).max() <= 1
    assert np.abs(out[0].astype(int) - out[2]).max() <= 1


def test_colour_is_luminance_on_rgb_with_alpha_kept(tiny_weights, sample_array):
    grey = sample_array[:96, :96]
    rgba = np.stack([grey, grey, grey, np.full_like(grey, 200)], axis=-1)
    out = despeckle(rgba, weights=tiny_weights)
    assert out.shape == rgba.shape
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 3], 200)
    # Luminance of grey RGB equals the grey up to float rounding: within one grey level.
    assert np.abs(out[..., 0].astype(int) - despeckle(grey, weights=tiny_weights)).max() <= 1


def test_deterministic_and_gamma_darkens(tiny_weights, sample_array):
    image = sample_array[:160, :160].astype(np.float32)
    a = despeckle(image, weights=tiny_weights)
    np.testing.assert_array_equal(a, despeckle(image, weights=tiny_weights))
    darker = despeckle(image, weights=tiny_weights, gamma=2.0)
    assert darker.mean() < a.mean()


def test_constant_image_is_returned_unchanged(tiny_weights):
    image = np.full((64, 64), 7, dtype=np.uint16)
    np.testing.assert_array_equal(despeckle(image, weights=tiny_weights), image)


def test_progress_covers_every_frame_and_cancel_stops(tiny_weights):
    stack = np.random.default_rng(1).random((5, 32, 32)).astype(np.float32)
    job = despeckle_job(stack, weights=tiny_weights, batch_size=2)
    seen = [p.done for p in job]
    assert seen == [0, 2, 4, 5] and job.result.shape == stack.shape
    job = despeckle_job(stack, weights=tiny_weights, batch_size=1)
    assert job.step() and job.step()
    job.cancel()
    with pytest.raises(Cancelled):
        job.step()


def test_batches_run_side_by_side_come_back_in_order_and_a_cancel_stops_the_rest():
    slow_first = lambda i: (time.sleep(0.1 if i == 0 else 0), i * i)[1]
    assert list(in_order(slow_first, [0, 1, 2, 3], 2)) == [(0, 0), (1, 1), (2, 4), (3, 9)]
    checks, started = [], []

    def check():
        checks.append(1)
        if len(checks) == 3:
            raise Cancelled("stop")
    with pytest.raises(Cancelled):
        list(in_order(started.append, range(6), 2, check))
    assert sorted(started) == [0, 1]  # the third batch never started; the two in flight finished


@pytest.mark.parametrize("array, words", [
    (np.zeros((0, 10)), "empty"),
    (np.full((32, 32), np.nan, np.float32), "NaN"),
    (np.zeros((2, 3, 32, 32)), "shape"),
    (np.zeros((8, 8)), "minimum"),
    (np.zeros((32, 32), dtype=complex), "pixel type"),
])
def test_bad_arrays_raise_one_line_user_errors(tiny_weights, array, words):
    with pytest.raises(UserError, match=words) as err:
        despeckle(array, weights=tiny_weights)
    assert "\n" not in str(err.value)


def test_device_choice():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(UserError):
        resolve_device("tpu")


def test_zero_background_outside_the_sector_stays_zero(tiny_weights, sample_array):
    from speckle2self.frames import background

    out = despeckle(sample_array, weights=tiny_weights)
    mask = background(sample_array)
    assert mask.sum() > 0.2 * mask.size  # the black surround of the curvilinear sector
    assert (out[mask] == 0).all()


def test_isolated_dark_pixels_inside_the_image_are_not_background():
    from speckle2self.frames import background

    image = np.random.default_rng(3).integers(1, 255, (64, 64)).astype(np.uint8)
    image[:, :20] = 0          # a black margin: background
    image[30, 40] = image[31, 40] = image[50, 50] = 0   # dark speckle: not background
    mask = background(image)
    assert mask[:, :20].all() and mask.sum() == 64 * 20


def test_a_black_patch_inside_the_tissue_is_despeckled_not_blacked_out(tiny_weights):
    from speckle2self.frames import background

    image = np.random.default_rng(4).integers(1, 255, (96, 96)).astype(np.uint8)
    image[:, :16] = 0            # outside the sector: reaches the border
    image[40:60, 50:70] = 0      # a vessel shown as exact zeros, surrounded by tissue
    mask = background(image)
    assert mask[:, :16].all() and not mask[40:60, 50:70].any()
    out = despeckle(image, weights=tiny_weights)
    assert (out[:, :16] == 0).all() and out[40:60, 50:70].any()


def test_brightness_matching_undoes_an_affine_change_and_leaves_unfit_outputs_alone():
    from speckle2self.postprocess import brightness_matched

    rng = np.random.default_rng(1)
    source = rng.random((32, 48)).astype(np.float32)
    inside = np.ones(source.shape, bool)
    inside[:, :8] = False
    squeezed = 0.5 * source + 0.3
    squeezed[:, :8] = 0.0  # outside pixels do not take part in the fit
    np.testing.assert_allclose(brightness_matched(squeezed, source, inside)[inside], source[inside], atol=1e-5)
    flat, inverted = np.full_like(source, 0.4), 1.0 - source
    assert brightness_matched(flat, source, inside) is flat
    assert brightness_matched(inverted, source, inside) is inverted


def test_despeckled_simulation_keeps_the_input_brightness_without_the_log_bias_step():
    from speckle2self.bench.simulate import simulate

    image = simulate("S-II", "layers", 128, seed=3).noisy
    matched, own = (despeckle(image, device="cpu", match_brightness=m, log_bias=False) for m in (True, False))
    assert abs(matched.mean() - image.mean()) < 0.01
    assert abs(matched.mean() - image.mean()) < abs(own.mean() - image.mean())


@pytest.mark.parametrize("phantom", ["layers", "cyst"])
def test_log_bias_step_brings_the_mean_brightness_to_the_clean_reference(phantom):
    from speckle2self.bench.simulate import SPECKLE_LOG_BIAS_DB, get_setting, simulate

    image = simulate("S-II", phantom, 128, seed=3)
    bias = SPECKLE_LOG_BIAS_DB / get_setting("S-II").dynamic_range_db   # 0.042 of the display range
    # on the simulation's own grid: the step measures the speckle spread as input minus output, per pixel
    kept = despeckle(image.noisy, device="cpu", log_bias=False, scale=1)
    removed = despeckle(image.noisy, device="cpu", log_bias=True, scale=1)
    assert abs(kept.mean() - image.clean.mean()) > 0.8 * bias
    assert abs(removed.mean() - image.clean.mean()) < 0.1 * bias


@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("density", [0.3, 0.7, 0.95])
def test_separable_opening_equals_scipy_binary_opening(density, size):
    from scipy import ndimage

    from speckle2self.frames import opening

    mask = np.random.default_rng(int(density * 100)).random((61, 47)) < density
    mask[:, :9] = True  # a solid block touching the border
    expected = ndimage.binary_opening(mask, structure=np.ones((size, size), bool))
    np.testing.assert_array_equal(opening(mask, size), expected)
