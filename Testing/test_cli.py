import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import SAMPLE
from speckle2self.cli import main


def _read(path):
    image = sitk.ReadImage(str(path))
    return image, sitk.GetArrayFromImage(image)


def test_despeckle_end_to_end_on_the_bundled_sample(tmp_path, tiny_weights, capsys):
    out, preview = tmp_path / "out.nrrd", tmp_path / "before_after.png"
    assert main(["despeckle", str(SAMPLE), "-o", str(out), "--weights", str(tiny_weights),
                 "--preview", str(preview)]) == 0
    assert capsys.readouterr().out.split() == [str(out), str(preview)]
    source, before = _read(SAMPLE)
    result, after = _read(out)
    assert after.shape == before.shape and after.dtype == before.dtype
    assert result.GetSpacing() == source.GetSpacing() and result.GetOrigin() == source.GetOrigin()
    assert not np.array_equal(after, before)
    assert _read(preview)[1].shape == (before.shape[0], 2 * before.shape[1] + 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["before_after.png", "out.nrrd"]


def test_post_processing_options_reach_the_output(tmp_path):
    outputs = {}
    for name, options in {"default": [], "bias": ["--log-bias"], "smooth": ["--smoothing", "1.25"]}.items():
        outputs[name] = tmp_path / f"{name}.nrrd"
        assert main(["despeckle", str(SAMPLE), "-o", str(outputs[name]), *options]) == 0
    default, bias, smooth = (_read(outputs[k])[1].astype(np.float64) for k in ("default", "bias", "smooth"))
    assert bias.mean() > default.mean()   # the log-bias step brightens speckle
    assert np.abs(np.diff(default, axis=1)).mean() > np.abs(np.diff(smooth, axis=1)).mean()


def test_several_inputs_go_to_a_folder_and_outputs_are_not_overwritten(tmp_path, tiny_weights, capsys):
    a, b = tmp_path / "a.nrrd", tmp_path / "b.mha"
    image = sitk.ReadImage(str(SAMPLE))[:128, :96]
    sitk.WriteImage(image, str(a))
    sitk.WriteImage(image, str(b))
    folder = tmp_path / "out"
    folder.mkdir()
    args = ["despeckle", str(a), str(b), "-o", str(folder), "--weights", str(tiny_weights)]
    assert main(args) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["a.nrrd", "b.mha"]
    stamp = (folder / "a.nrrd").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err and (folder / "a.nrrd").stat().st_mtime_ns == stamp
    assert main(args + ["--force"]) == 0


def test_despeckle_with_fine_tuning_first(tmp_path, tiny_weights):
    small = tmp_path / "small.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(SAMPLE))[:96, :80], str(small))
    out = tmp_path / "out.nrrd"
    assert main(["despeckle", str(small), "-o", str(out), "--weights", str(tiny_weights),
                 "--finetune-steps", "2", "--finetune-size", "64"]) == 0
    assert _read(out)[1].shape == (80, 96)


@pytest.mark.parametrize("kept", [True, False])
def test_progress_json_lines_and_a_saved_fine_tuned_model(tmp_path, tiny_weights, capsys, monkeypatch, kept):
    """The safeguard's tolerances are set so that it keeps (or refuses) the tuned model whatever it measures."""
    from speckle2self import finetuning
    from speckle2self.weights import load_checkpoint

    for name in finetuning.TOLERANCE:
        monkeypatch.setitem(finetuning.TOLERANCE, name, 1e9 if kept else -1e9)
    small, out, saved = tmp_path / "small.nrrd", tmp_path / "out.nrrd", tmp_path / "kept.pt"
    sitk.WriteImage(sitk.ReadImage(str(SAMPLE))[:96, :80], str(small))
    assert main(["despeckle", str(small), "-o", str(out), "--weights", str(tiny_weights), "--finetune-steps", "3",
                 "--finetune-size", "64", "--save-finetuned", str(saved), "--progress", "json"]) == 0
    printed = capsys.readouterr()
    lines = [json.loads(line) for line in printed.out.splitlines() if line.startswith("{")]
    assert printed.out.splitlines()[-1] == str(out) and printed.err == ""
    [verdict] = [line for line in lines if "verdict" in line]
    progress = [line for line in lines if "verdict" not in line]
    assert lines.index(verdict) == 4 and verdict["phase"] == "fine-tuning" and verdict["accepted"] is kept
    assert [line["phase"] for line in progress] == ["fine-tuning"] * 4 + ["despeckling"] * 2
    assert [(line["done"], line["total"]) for line in progress] == [(0, 3), (1, 3), (2, 3), (3, 3), (0, 1), (1, 1)]
    assert progress[0]["seconds_left"] is None and progress[-1]["seconds_left"] == 0
    assert all(line["input"] == line["inputs"] == 1 for line in lines)
    assert all(line["elapsed"] >= 0 for line in progress)
    # The output was made with the model as saved, or with the un-tuned one: despeckling with it gives the same.
    assert saved.exists() is kept
    if kept:
        _, card = load_checkpoint(saved)
        assert card["source"] == "small" and card["steps"] == 3
        assert card["command"].startswith("speckle2self despeckle")
    again = tmp_path / "again.nrrd"
    assert main(["despeckle", str(small), "-o", str(again), "--weights", str(saved if kept else tiny_weights)]) == 0
    np.testing.assert_array_equal(_read(again)[1], _read(out)[1])


def test_fine_tuning_for_minutes(tmp_path, tiny_weights, capsys):
    small, out = tmp_path / "small.nrrd", tmp_path / "out.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(SAMPLE))[:64, :64], str(small))
    assert main(["despeckle", str(small), "-o", str(out), "--weights", str(tiny_weights), "--finetune-minutes",
                 "0.002", "--finetune-size", "32", "--progress", "json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    tuning = [line for line in lines if line["phase"] == "fine-tuning" and "verdict" not in line]
    assert {line["total"] for line in tuning} == {0.12} and tuning[-1]["done"] >= 0.12  # seconds of the budget


@pytest.mark.parametrize("case, words", [("no fine-tuning", "no fine-tuning was asked for"),
                                         ("two inputs", "takes one input"), ("exists", "already exists"),
                                         ("no folder", "does not exist")])
def test_save_finetuned_mistakes_are_refused_before_any_work(tmp_path, tiny_weights, capsys, case, words):
    target = {"exists": tmp_path / "taken.pt", "no folder": tmp_path / "no" / "m.pt"}.get(case, tmp_path / "m.pt")
    if case == "exists":
        target.write_bytes(b"precious")
    inputs = [str(SAMPLE)] * (2 if case == "two inputs" else 1)
    tuning = [] if case == "no fine-tuning" else ["--finetune-steps", "2"]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert main(["despeckle", *inputs, "-o", str(tmp_path), "--weights", str(tiny_weights), *tuning,
                 "--save-finetuned", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("speckle2self: error: ") and err.count("\n") == 1 and words in err, err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_evaluate_reports_homogeneity_and_that_the_outside_of_the_sector_stays_black(tiny_weights, capsys):
    assert main(["evaluate", str(SAMPLE), "--weights", str(tiny_weights), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["file"] == SAMPLE.name and row["frames"] == 1
    assert 0 < row["hom_before"] < row["hom_after"] <= 1
    assert row["outside_kept"] == 1.0


def test_outside_kept_counts_lit_background_pixels():
    from speckle2self.evaluation import outside_kept

    before = np.zeros((2, 40, 40), np.uint8)
    before[:, 10:30, 10:30] = 100
    after = before.copy()
    after[1, :5, :5] = 1  # a halo in one corner of the second frame
    outside = 2 * (40 * 40 - 20 * 20)
    assert outside_kept(before, after) == pytest.approx((outside - 25) / outside)
    assert np.isnan(outside_kept(before[:, 10:30, 10:30], after[:, 10:30, 10:30]))


def test_simulate_writes_noisy_and_clean_stacks_the_benchmark_can_regenerate(tmp_path, capsys):
    from speckle2self.bench.simulate import simulate_set

    noisy, clean = tmp_path / "noisy.nrrd", tmp_path / "clean.nrrd"
    assert main(["simulate", "--setting", "S-I", "--count", "2", "--size", "128", "--seed", "5",
                 "-o", str(noisy), "--clean", str(clean)]) == 0
    assert capsys.readouterr().out.split() == [str(noisy), str(clean)]
    expected = simulate_set("S-I", 2, 128, seed=5)
    for path, field in ((noisy, "noisy"), (clean, "clean")):
        _, array = _read(path)
        assert array.shape == (2, 128, 128) and array.dtype == np.uint8
        want = np.stack([getattr(image, field) for image in expected]) * 255
        assert np.abs(array - want).max() <= 0.5 + 1e-6
    assert main(["simulate", "--count", "1", "-o", str(tmp_path / "other.nrrd"), "--clean", str(clean)]) == 2
    assert not (tmp_path / "other.nrrd").exists()
    for bad in (["--count", "0"], ["--clean", str(tmp_path / "same.nrrd")]):
        assert main(["simulate", "-o", str(tmp_path / "same.nrrd"), *bad]) == 2
        assert not (tmp_path / "same.nrrd").exists()
    assert main(["ablation", "--out", str(tmp_path / "no" / "such.md")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_and_info(tmp_path, capsys):
    weights = tmp_path / "w.pt"
    assert main(["train", str(SAMPLE), "--out", str(weights), "--steps", "2", "--size", "32",
                 "--width", "8", "--batch", "2", "--schedule", "cosine", "--warmup", "1", "--ema", "0.9",
                 "--consistency", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2
    card = json.loads(weights.with_suffix(".json").read_text())
    assert card["command"].startswith("speckle2self train") and card["data"] == [SAMPLE.name]
    assert (card["config"]["schedule"], card["config"]["warmup"], card["config"]["ema"]) == ("cosine", 1, 0.9)
    assert card["config"]["loss"] == {"reconstruction": [1.0, 1.0, 1.0], "consistency": [2.0, 2.0, 2.0]}
    assert main(["train", str(SAMPLE), "--out", str(weights), "--steps", "2", "--ema", "1.5"]) == 2
    assert "EMA decay between 0 and 1" in capsys.readouterr().err
    assert main(["train", str(SAMPLE), "--out", str(weights), "--steps", "2", "--consistency", "-1"]) == 2
    assert "Loss weights must be finite and not negative" in capsys.readouterr().err
    assert main(["info", "--weights", str(weights)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["weights_sha256"] == card["sha256"] and info["device"] in ("cpu", "cuda")


def test_model_fast_picks_the_shipped_student_everywhere(tmp_path, capsys):
    from speckle2self.weights import SHIPPED

    assert main(["info", "--model", "fast"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["width"] == 16 and info["weights_path"] == str(SHIPPED["fast"])
    fast, default = tmp_path / "fast.nrrd", tmp_path / "default.nrrd"
    assert main(["despeckle", str(SAMPLE), "-o", str(fast), "--model", "fast"]) == 0
    assert main(["despeckle", str(SAMPLE), "-o", str(default), "--model", "default"]) == 0
    outputs = [sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in (fast, default)]
    assert outputs[0].shape == outputs[1].shape and not np.array_equal(*outputs)


def test_model_and_weights_together_are_refused(tiny_weights, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["despeckle", str(SAMPLE), "-o", "x.nrrd", "--model", "fast", "--weights", str(tiny_weights)])
    assert exit.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_info_reports_the_paper_parameter_counts(capsys):
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["parameters_inference"], info["parameters_training"]) == (3_910_785, 7_821_825)


def _mistakes(tmp):
    text = tmp / "notes.nrrd"
    text.write_text("this is not an image\n")
    empty = tmp / "empty.npy"
    np.save(empty, np.zeros((0, 5), np.float32))
    nan = tmp / "nan.npy"
    np.save(nan, np.full((32, 32), np.nan, np.float32))
    four = tmp / "four.npy"
    np.save(four, np.zeros((2, 2, 32, 32), np.float32))
    exists = tmp / "exists.nrrd"
    exists.write_bytes(b"precious")
    return {
        "missing": [str(tmp / "missing.nrrd"), "-o", str(tmp / "o1.nrrd")],
        "non-image": [str(text), "-o", str(tmp / "o2.nrrd")],
        "empty": [str(empty), "-o", str(tmp / "o3.npy")],
        "nan": [str(nan), "-o", str(tmp / "o4.npy")],
        "4-D": [str(four), "-o", str(tmp / "o5.npy")],
        "output exists": [str(SAMPLE), "-o", str(exists)],
        "negative smoothing": [str(SAMPLE), "-o", str(tmp / "o6.nrrd"), "--smoothing", "-1"],
        "infinite smoothing": [str(SAMPLE), "-o", str(tmp / "o7.nrrd"), "--smoothing", "inf"],
    }


@pytest.mark.parametrize("case", ["missing", "non-image", "empty", "nan", "4-D", "output exists",
                                  "negative smoothing", "infinite smoothing"])
def test_user_mistakes_exit_2_with_one_line(tmp_path, tiny_weights, capsys, case):
    args = _mistakes(tmp_path)[case]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert main(["despeckle", *args, "--weights", str(tiny_weights)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("speckle2self: error: ") and err.count("\n") == 1, err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing written or changed


def test_console_script_exit_status_without_traceback(tmp_path):
    run = subprocess.run([sys.executable, "-m", "speckle2self", "despeckle", str(tmp_path / "nope.nrrd"),
                          "-o", str(tmp_path / "o.nrrd")], capture_output=True, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr and run.stderr.count("\n") == 1


def test_train_choices_match_the_core():
    """The parser is built without torch, so it spells out the core's choices: they must stay the same."""
    from speckle2self.cli import parser
    from speckle2self.network import HEADS
    from speckle2self.training import SCHEDULES

    train = next(a for a in parser()._subparsers._group_actions[0].choices.values() if a.prog.endswith(" train"))
    choices = {a.dest: tuple(a.choices) for a in train._actions if a.choices}
    assert choices["schedule"] == tuple(SCHEDULES) and choices["head"] == tuple(HEADS)
