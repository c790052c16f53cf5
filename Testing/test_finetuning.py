"""Fine-tuning on the user's data: it starts from the chosen weights and never returns a worse model."""
import numpy as np
import pytest
import SimpleITK as sitk

from speckle2self.cli import main
from speckle2self.finetuning import DECIDING, HELD_OUT_EVERY, TOLERANCE, compare, finetune, held_out_split
from speckle2self.inference import despeckle
from speckle2self.metrics import edge_sharpness, residual_structure
from speckle2self.weights import DEFAULT_WEIGHTS, load_checkpoint, sha256


def _same_weights(a, b) -> float:
    """Largest absolute difference between two models' parameters."""
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)


def test_fine_tuning_starts_from_the_shipped_model_by_default(sample_array):
    result = finetune([sample_array[100:228, 200:328]], steps=1, size=64, lr=1e-9)
    shipped, card = load_checkpoint(DEFAULT_WEIGHTS)
    assert _same_weights(result.model, shipped) < 1e-4  # a random network differs by ~0.1 or more
    assert result.card["init_sha256"] == sha256(DEFAULT_WEIGHTS)
    assert result.card["cumulative_steps"] == card["cumulative_steps"] + 1


def test_fine_tuning_starts_from_the_weights_it_is_given(sample_array, tiny_weights):
    result = finetune([sample_array[100:164, 200:264]], weights=tiny_weights, steps=1, size=32, lr=1e-9)
    assert _same_weights(result.model, load_checkpoint(tiny_weights)[0]) < 1e-4
    assert result.card["init_sha256"] == sha256(tiny_weights)


def test_a_run_that_makes_the_model_worse_is_refused_and_the_untuned_model_returned(sample_array):
    crop = sample_array[100:228, 200:328]
    result = finetune([crop], steps=3, size=64, lr=1.0)  # Adam at lr 1 wrecks the shipped weights
    assert not result.accepted and result.card["finetune_accepted"] is False
    assert any(check["worse"] for check in result.checks.values())
    assert _same_weights(result.model, load_checkpoint(DEFAULT_WEIGHTS)[0]) == 0.0
    assert "un-tuned model was used" in result.verdict
    assert np.array_equal(despeckle(crop, model=result.model), despeckle(crop))


def test_the_checks_refuse_only_what_is_worse_beyond_the_tolerance():
    before = {"loss": 0.05, "homogeneity": 0.80, "sharpness": 0.50, "residual": 0.40}
    same = compare(before, dict(before))
    assert not any(c["worse"] for c in same.values())
    slightly = {"loss": 0.05 * (1 + TOLERANCE["loss"] / 2), "homogeneity": 0.80 - TOLERANCE["homogeneity"] / 2,
                "sharpness": 0.50 * (1 - TOLERANCE["sharpness"] / 2), "residual": 0.40 + TOLERANCE["residual"] / 2}
    assert not any(c["worse"] for c in compare(before, slightly).values())
    for name, worse in [("loss", 0.06), ("homogeneity", 0.78), ("sharpness", 0.45), ("residual", 0.5)]:
        checks = compare(before, {**before, name: worse})
        assert [n for n, c in checks.items() if c["worse"]] == [name]
        assert checks[name]["decides"] is (name in DECIDING)
    better = compare(before, {"loss": 0.04, "homogeneity": 0.9, "sharpness": 0.6, "residual": 0.3})
    assert not any(c["worse"] for c in better.values())


def test_edge_sharpness_falls_with_blur_and_ignores_contrast():
    from scipy import ndimage

    image = np.zeros((64, 64))
    image[:, 32:] = 1.0
    image += np.random.default_rng(0).normal(0, 0.01, image.shape)
    sharp = edge_sharpness(image)
    assert edge_sharpness(ndimage.gaussian_filter(image, 2)) < 0.6 * sharp
    assert edge_sharpness(3 * image + 7) == pytest.approx(sharp)


def test_cli_fine_tuning_without_weights_starts_from_the_shipped_model(tmp_path, sample_array, capsys):
    crop = sample_array[100:196, 200:296]
    source, tuned, plain = tmp_path / "in.nrrd", tmp_path / "tuned.nrrd", tmp_path / "plain.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(crop), str(source))
    assert main(["despeckle", str(source), "-o", str(plain)]) == 0
    assert main(["despeckle", str(source), "-o", str(tuned), "--finetune-steps", "1", "--finetune-size", "64"]) == 0
    assert "speckle2self: Fine-tuning" in capsys.readouterr().err
    a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(p))).astype(float) for p in (plain, tuned))
    # one step at the fine-tuning rate moves the output by a few grey levels; a new network by tens
    assert np.abs(a - b).mean() < 3.0


def test_cli_refuses_both_fine_tuning_lengths(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["despeckle", "a.nrrd", "-o", str(tmp_path / "b.nrrd"), "--finetune-steps", "1",
              "--finetune-minutes", "1"])
    assert "not allowed with argument" in capsys.readouterr().err



def test_the_safeguard_judges_on_frames_fine_tuning_never_saw():
    cine = np.arange(9, dtype=np.float32)[:, None, None] * np.ones((9, 32, 48), np.float32)
    tuned, held = held_out_split([cine[:3], cine[3:]])
    seen = {float(f[0, 0]) for s in tuned for f in s}
    unseen = {float(f[0, 0]) for s in held for f in s}
    assert not seen & unseen and seen | unseen == set(range(9)) and len(unseen) == round(9 / HELD_OUT_EVERY)
    single = np.arange(64 * 640, dtype=np.float32).reshape(1, 64, 640)
    (part,), (rest,) = held_out_split([single])
    assert part.shape == (1, 64, 480) and rest.shape == (1, 64, 160)  # a single image: its right quarter
    assert np.array_equal(np.concatenate([part, rest], axis=2), single)
    (part,), (rest,) = held_out_split([single[:, :, :300]])
    assert part.shape == (1, 64, 172) and rest.shape == (1, 64, 128)  # at least 128 wide
    (part,), (rest,) = held_out_split([single[:, :, :200]])
    assert part is rest  # too narrow to split: judged on itself


def test_residual_structure_sees_what_a_filter_smoothed_away():
    from scipy import ndimage

    rng = np.random.default_rng(1)
    clean = np.zeros((128, 128))
    clean[:, 40:44] = clean[60:64, :] = 1.0  # a vessel wall and a fascia line
    speckle = ndimage.gaussian_filter(rng.normal(size=clean.shape), 1.5)
    noisy = clean + 0.3 * speckle / speckle.std()
    assert residual_structure(noisy, clean, 3) < 0.1  # measured: -0.17
    assert residual_structure(noisy, ndimage.gaussian_filter(clean, 1.5), 3) > 0.3  # 0.35
    assert residual_structure(noisy, ndimage.gaussian_filter(noisy, 2), 3) > 0.6  # 0.85
    assert abs(residual_structure(noisy, 0.7 * noisy + 0.3 * clean, 3)) < 0.1  # removes some speckle only: 0.01
