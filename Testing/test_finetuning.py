"""Fine-tuning on the user's data: it starts from the chosen weights and never returns a worse model."""
import numpy as np
import pytest
import SimpleITK as sitk

from speckle2self.cli import main
from speckle2self.finetuning import TOLERANCE, compare, finetune
from speckle2self.inference import despeckle
from speckle2self.metrics import edge_sharpness
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
    before = {"loss": 0.05, "homogeneity": 0.80, "sharpness": 0.50}
    same = compare(before, dict(before))
    assert not any(c["worse"] for c in same.values())
    slightly = {"loss": 0.05 * (1 + TOLERANCE["loss"] / 2), "homogeneity": 0.80 - TOLERANCE["homogeneity"] / 2,
                "sharpness": 0.50 * (1 - TOLERANCE["sharpness"] / 2)}
    assert not any(c["worse"] for c in compare(before, slightly).values())
    for name, worse in [("loss", 0.06), ("homogeneity", 0.78), ("sharpness", 0.45)]:
        checks = compare(before, {**before, name: worse})
        assert [n for n, c in checks.items() if c["worse"]] == [name]


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

