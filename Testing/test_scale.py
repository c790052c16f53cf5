"""Speckle-scale normalisation: the grain estimator, the factor, and every entry point that uses them."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from conftest import SAMPLE
from speckle2self import scale as sc
from speckle2self.cli import main
from speckle2self.errors import UserError


def speckle(shape, sigma_axial, sigma_lateral, seed=0):
    """Log-compressed fully developed speckle: complex Gaussian scatter filtered by a Gaussian resolution cell,
    envelope detected, 40 dB shown on 8 bits."""
    rng = np.random.default_rng(seed)
    field = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    sigma = (sigma_axial, sigma_lateral)
    envelope = np.abs(ndimage.gaussian_filter(field.real, sigma) + 1j * ndimage.gaussian_filter(field.imag, sigma))
    db = 20 * np.log10(envelope / envelope.mean() + 1e-6)
    return np.clip(np.rint((db + 30) / 40 * 255), 0, 255).astype(np.uint8)


def test_grain_grows_with_the_resolution_cell_and_sees_anisotropy():
    fine, coarse = sc.measure(speckle((256, 256), 1.0, 1.0)), sc.measure(speckle((256, 256), 2.0, 2.0))
    assert 1.7 < coarse.size / fine.size < 2.3
    stretched = sc.measure(speckle((256, 256), 1.0, 2.5))
    assert stretched.lateral > 2 * stretched.axial


def test_grain_doubles_when_the_frame_is_enlarged_twice():
    frame = speckle((192, 192), 1.2, 1.6, seed=1).astype(np.float32) / 255
    before, after = sc.measure(frame), sc.measure(sc.resampled(frame, 2.0))
    assert 1.8 < after.size / before.size < 2.2


def test_flat_or_tiny_frames_have_no_grain_and_stay_on_their_grid():
    assert sc.measure(np.zeros((64, 64))) is None
    assert sc.factor_for(None, sc.REFERENCE_GRAIN) == 1.0


def test_factor_brings_the_grain_to_the_target_within_its_range():
    assert sc.factor_for(sc.Grain(3.0, 3.0), 6.0) == 2.0
    assert sc.factor_for(sc.Grain(6.1, 6.1), 6.0) == 1.0  # within a step of 1: no resampling
    assert sc.factor_for(sc.Grain(0.5, 0.5), 6.0) == sc.FACTOR_RANGE[1]
    assert sc.factor_for(sc.Grain(40.0, 40.0), 6.0) == sc.FACTOR_RANGE[0]


@pytest.mark.parametrize("value", ["big", "0", "-1", "9", "nan"])
def test_bad_scales_are_refused_naming_the_fix(value):
    with pytest.raises(UserError, match="--scale auto"):
        sc.parse_scale(value)


def test_grid_round_trip_keeps_shape_and_range():
    import torch

    rows, columns = np.mgrid[:50, :70]
    pattern = 0.5 + 0.4 * np.sin(rows / 3.0) * np.cos(columns / 4.0)  # structure a few pixels wide
    batch = torch.from_numpy(np.stack([pattern, 1 - pattern])[:, None].astype(np.float32))
    up = sc.to_grid(batch, 2.5)
    assert up.shape[-2:] == (125, 175) and float(up.min()) >= 0 and float(up.max()) <= 1
    back = sc.from_grid(up, (50, 70), 2.5)
    assert back.shape == batch.shape
    assert float((back - batch).abs().mean()) < 0.01


def test_despeckle_job_reports_the_scale_and_runs_on_the_resampled_grid(sample_array, tiny_weights):
    from speckle2self.inference import despeckle_job

    job = despeckle_job(sample_array, weights=tiny_weights, device="cpu", precision="fp32")
    chosen = job.info["scale"]
    assert chosen["mode"] == "auto" and chosen["model_grain"] == sc.REFERENCE_GRAIN  # no grain in its card
    assert chosen["factor"] == sc.factor_for(sc.Grain(chosen["grain"]["axial"], chosen["grain"]["lateral"]),
                                             sc.REFERENCE_GRAIN) > 1  # the sample's grain is finer than 6 px
    auto = job.run()
    native = despeckle_job(sample_array, weights=tiny_weights, device="cpu", precision="fp32", scale=1).run()
    assert auto.shape == native.shape == sample_array.shape and auto.dtype == sample_array.dtype
    assert not np.array_equal(auto, native)


def test_the_model_card_grain_sets_the_target(tmp_path, sample_array, tiny_weights):
    from speckle2self.inference import despeckle_job, training_grain

    card = json.loads(tiny_weights.with_suffix(".json").read_text())
    weights = tmp_path / "coarse.pt"
    weights.write_bytes(tiny_weights.read_bytes())
    weights.with_suffix(".json").write_text(json.dumps({**card, "speckle_grain": 3.0}))
    assert training_grain(weights) == 3.0
    assert despeckle_job(sample_array, weights=weights, device="cpu").info["scale"]["model_grain"] == 3.0


def test_cli_scale_in_json_progress_and_in_the_output_metadata(tmp_path, tiny_weights, capsys):
    out = tmp_path / "out.nrrd"
    assert main(["despeckle", str(SAMPLE), "-o", str(out), "--weights", str(tiny_weights), "--scale", "1.5",
                 "--progress", "json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert lines and all(line["scale"] == {"factor": 1.5, "mode": "fixed", "model_grain": 6.0} for line in lines)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(out))
    reader.ReadImageInformation()
    assert json.loads(reader.GetMetaData("Speckle2Self_scale"))["factor"] == 1.5


def test_cli_bad_scale_exits_2_with_one_line_and_writes_nothing(tmp_path, tiny_weights, capsys):
    assert main(["despeckle", str(SAMPLE), "-o", str(tmp_path / "o.nrrd"), "--weights", str(tiny_weights),
                 "--scale", "twice"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("speckle2self: error: Scale 'twice'") and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_fine_tuning_trains_on_the_resampled_grid_and_records_it(tiny_weights):
    from speckle2self.finetuning import finetune_job

    frames = speckle((64, 96), 0.8, 0.8)
    job = finetune_job([frames], weights=tiny_weights, steps=2, size=64, device="cpu")
    factor = job.info["scale"]["factor"]
    assert factor > 1
    result = job.run()
    assert result.card["finetune_scale"]["factor"] == factor and result.card["speckle_grain"] == 6.0
    assert result.card["config"]["size"] == 64  # crops fit the enlarged frames

