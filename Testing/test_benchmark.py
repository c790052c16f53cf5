"""`speckle2self bench`: the quick run end to end, bad input, cancel, tuning and the real-image regions."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from conftest import PUBLISHED_REFERENCE, SHARED_DATA
from speckle2self.bench.benchmark import (QUICK_CONFIG, _grid_scores, bench_config, benchmark_job, calibrated_clean,
                                          fmt, measure)
from speckle2self.bench.report import STRUCTURE, structure_table
from speckle2self.bench.sets import REAL_IMAGES, real_set
from speckle2self.cli import main
from speckle2self.inference import despeckle
from speckle2self.errors import Cancelled
from speckle2self.bench.peers import QUICK, select
from speckle2self.bench.peers.learned import Budget
from speckle2self.bench.simulate import SETTINGS, simulate_set

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_quick_benchmark_writes_both_tables_the_real_reference_the_figure_and_every_number(tmp_path, capsys):
    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benchmark.json", "benchmark.md", "benchmark.png"]
    report = (tmp_path / "benchmark.md").read_text()
    header = "| Method | S-I PSNR / SSIM / Hom | S-II PSNR / SSIM / Hom | S-III PSNR / SSIM / Hom |"
    results = report.split("## Results")[1].split("##")[0]
    as_published, calibrated = results.split("As published:")[1].split("Calibrated:")
    assert header in as_published and header in calibrated and as_published.strip() in printed
    assert "**Without clean data**" in report and "**With clean data" in report
    targets = report.split("## Targets")[1].split("\n## ")[0]
    groups = [targets.index(g) for g in ("**1. Real scans**", "**2. Structure", "**3. Simulated PSNR / SSIM / Hom**")]
    assert groups == sorted(groups)
    assert "| PSNR at least the best classical filter's | S-III |" in targets
    assert "| point-target FWHM ratio within 0.8-1.25 | S-II |" in targets
    numbers = json.loads((tmp_path / "benchmark.json").read_text())
    real, reference = SHARED_DATA.is_dir(), PUBLISHED_REFERENCE.is_dir()
    assert set(numbers["sets"]) == set(SETTINGS) | ({"real"} if real else set()) | ({"carotid"} if reference else set())
    assert [m["key"] for m in numbers["methods"]] == list(QUICK)
    assert set(numbers["scores"]) == {"raw", "calibrated"}
    for chain, scores in numbers["scores"].items():
        for method in numbers["methods"]:
            for setting in SETTINGS:
                cell = scores[method["key"]][setting]
                assert all(math.isfinite(cell[metric]["mean"]) for metric in ("psnr", "ssim", "hom", "grid", "beta"))
                assert len(cell["psnr"]["values"]) == QUICK_CONFIG.test_count
                # the points phantom (second image) has FWHM ratios, the cyst none
                assert cell["fwhm"]["values"][0] is None and math.isfinite(cell["fwhm"]["values"][1])
            assert ("real" in scores[method["key"]]) == (real and not method["uses_clean_data"])
            assert ("carotid" in scores[method["key"]]) == (reference and not method["uses_clean_data"])
    assert "ms" in numbers["scores"]["raw"]["s2s"]["S-II"]  # the time is the method's own
    assert "ms" not in numbers["scores"]["calibrated"]["s2s"]["S-II"]
    section = report.split("## Real carotid scans against the method's published output")[1].split("\n## ")[0]
    if reference:
        assert section.count("| **Published outputs** |") == 2 and "| NLM |" in section
        assert [row["name"] for row in numbers["paper"]][:2] == ["Speckle2Self (authors' model, published)", "NLM"]
    else:
        assert "Not run" in section
    from PIL import Image
    assert min(Image.open(tmp_path / "benchmark.png").size) > 100


def write_gif(path, frames) -> None:
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:])


def test_a_reference_folder_given_by_option_is_scored_with_its_published_outputs(tmp_path):
    """Runs without ../shared: a folder shaped like carotid_published, made from simulations."""
    from scipy import ndimage

    from speckle2self.bench import published as pub
    from speckle2self.bench.sets import eight_bit

    noisy = [eight_bit(s.noisy) for s in simulate_set("S-III", 2, 128)]
    smooth = [ndimage.uniform_filter(frame, 9) for frame in noisy]
    write_gif(tmp_path / "Input_01.gif", noisy)
    write_gif(tmp_path / "Speckle2Self_01.gif", smooth)
    write_gif(tmp_path / "Speckle2Self_gamma2.0_01.gif", [pub.gamma8(frame) for frame in smooth])
    for prefix in pub.PAPER_PEERS:
        write_gif(tmp_path / f"{prefix}_01.gif", noisy if prefix == "n2v" else smooth)
    config = bench_config(True, methods=["median"], reference=tmp_path)
    assert (config.reference, config.clips, config.carotid_count) == (tmp_path, ("01",), 1)
    result = benchmark_job(replace(config, data=None, carotid_count=None)).run()
    carotid = next(s for s in result.sets if s.against_published)
    assert carotid.labels == ["clip 01 frame 1", "clip 01 frame 2"]
    rows = {row.name: row.scores["raw"] for row in result.paper}
    assert rows["NLM"]["ssim"] == pytest.approx([1.0, 1.0]) and rows["Noise2Void"]["ssim"][0] < 0.9
    assert result.scores["raw"]["input"]["carotid"]["ssim"] == rows["Noise2Void"]["ssim"]  # the same frames
    assert set(result.scores["calibrated"]["median"]["carotid"]) == {"ssim", "hom"}


@pytest.mark.parametrize("args, message", [
    (["--methods", "median", "wiener"], "Unknown benchmark method(s): wiener"),
    (["--data", "/no/such/folder"], "Data folder /no/such/folder not found"),
    (["--reference", "/no/such/folder"], "Reference folder /no/such/folder not found"),
    (["--budget", "0"], "budget must be positive"),
    (["--weights", "/no/such/model.pt"], "/no/such/model.pt"),
])
def test_bad_bench_options_fail_in_one_line_before_any_work(args, message, tmp_path, capsys):
    assert main(["bench", "--quick", "--out", str(tmp_path), *args]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_candidate_weights_are_scored_beside_the_shipped_model(tiny_weights):
    config = replace(QUICK_CONFIG, data=None, methods=("input", "s2s"), test_count=1, weights=tiny_weights)
    result = benchmark_job(config).run()
    assert [m.key for m in result.methods] == ["input", "s2s", "s2s-candidate"]
    assert "tiny.pt" in result.methods[-1].name
    shipped, candidate = (result.scores["raw"][k]["S-II"]["psnr"][0] for k in ("s2s", "s2s-candidate"))
    assert math.isfinite(candidate) and candidate != shipped


def test_the_calibrated_structure_table_shows_a_perfect_output_after_the_chain():
    """The clean image scores FWHM ratio 1 as it is; the reference row gives its figures after the calibration
    chain, what a calibrated structure target must allow for."""
    result = benchmark_job(replace(QUICK_CONFIG, data=None, methods=("input",))).run()
    simulated = [s for s in result.sets if s.simulated]
    as_is = [measure(c, r, c, s.name)["fwhm"] for s in simulated for c, r in zip(s.clean, s.regions)]
    assert [v for v in as_is if math.isfinite(v)] == pytest.approx([1.0] * len(simulated))  # one points image each
    floors = [calibrated_clean(s) for s in simulated]
    assert all(math.isfinite(f["fwhm"]) and f["fwhm"] != pytest.approx(1.0) for f in floors)
    cells = [" / ".join(fmt(f[metric], digits) for metric, digits in STRUCTURE) for f in floors]
    assert "| clean image, calibrated: a perfect output after the chain | " + " | ".join(cells) + " |" in \
        structure_table(result, "calibrated").splitlines()
    assert "clean image" not in structure_table(result, "raw")


def test_the_benchmark_job_can_be_cancelled():
    job = benchmark_job(replace(QUICK_CONFIG, data=None))
    next(iter(job))
    job.cancel()
    with pytest.raises(Cancelled):
        job.run()


def test_tune_prints_every_grid_value_and_marks_the_best_psnr(capsys):
    assert main(["bench", "--tune", "--count", "1", "--methods", "lee"]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()[2:]]
    assert [float(r[2]) for r in rows] == list(select(["lee"])[1].grid)
    marked = [r for r in rows if r[5].strip() == "<-"]
    assert len(marked) == 1 and float(marked[0][3]) == max(float(r[3]) for r in rows)


def test_tuning_an_iteration_count_reads_one_trajectory():
    dip = replace(select(["dip"])[1], grid=(2, 4))
    images = simulate_set("S-II", 1, 64 + 32)
    scores = _grid_scores(dip, images, Budget(seconds=0.0))
    assert [value for value, _, _ in scores] == [2, 4]
    assert all(np.isfinite([p, s]).all() for _, p, s in scores)


def test_real_regions_mark_a_dark_target_beside_speckle(shared_data):
    real = real_set(shared_data)
    assert len(real.images) == len(REAL_IMAGES)
    for image, regions in zip(real.images, real.regions):
        assert all(mask.sum() >= 200 for mask in regions.values())
        assert image[regions["target"]].mean() < 0.7 * image[regions["background"]].mean()


def test_finetune_curve_scores_the_held_out_sequence_before_and_after(shared_data, tiny_weights, tmp_path, capsys):
    out = tmp_path / "finetune.md"
    assert main(["finetune-curve", "--data", str(shared_data), "--weights", str(tiny_weights), "--seconds", "1",
                 "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split("|")[1].strip() for row in rows] == ["input", "0", "1"]
    steps = int(rows[-1].split("|")[2])
    homogeneity = [float(row.split("|")[3]) for row in rows]
    assert steps >= 1 and all(0 < h <= 1 for h in homogeneity)
    assert "Prostate10_video.igs.mhd" in out.read_text() and rows[-1] in capsys.readouterr().out


def test_carotid_fine_tuning_scores_each_clip_before_and_after(tmp_path, tiny_weights, capsys):
    from speckle2self.bench import published as pub
    from speckle2self.bench.sets import eight_bit

    noisy = [eight_bit(s.noisy) for s in simulate_set("S-III", 2, 64)]
    write_gif(tmp_path / "Input_01.gif", noisy)
    write_gif(tmp_path / "Speckle2Self_gamma2.0_01.gif", [pub.gamma8(frame) for frame in noisy])
    out = tmp_path / "carotid.md"
    assert main(["finetune-curve", "--carotid-steps", "1", "--reference", str(tmp_path), "--weights",
                 str(tiny_weights), "--out", str(out)]) == 0
    rows = [line.split("|") for line in out.read_text().splitlines() if line.startswith("| ") and "---" not in line]
    assert [r[1].strip() for r in rows[1:]] == ["01", "mean"]
    before, after = float(rows[1][2]), float(rows[1][3])
    assert -1 <= before <= 1 and -1 <= after <= 1 and rows[1][7].strip() in ("yes", "no")  # a random network
    assert float(rows[1][4]) == pytest.approx(after - before, abs=0.0015)  # the change, from unrounded values


def test_carotid_figure_shows_input_published_and_ours_side_by_side(tmp_path, tiny_weights):
    from speckle2self.bench import published as pub
    from speckle2self.bench.sets import eight_bit

    noisy = [eight_bit(s.noisy) for s in simulate_set("S-III", 2, 64)]
    write_gif(tmp_path / "Input_01.gif", noisy)
    write_gif(tmp_path / "Speckle2Self_gamma2.0_01.gif", [pub.gamma8(frame) for frame in noisy])
    path, scored = pub.comparison_figure(tmp_path, tmp_path / "carotid.png", tiny_weights,
                                         frames=(("01", 1), ("01", 0)))
    figure = np.array(Image.open(path))
    assert figure.shape == (2 * 64 + 4, 3 * 64 + 8)
    assert np.array_equal(figure[:64, :64], pub.gamma8(noisy[1]))
    assert np.array_equal(figure[:64, 68:132], pub.gamma8(noisy[1]))  # the published frame, already gamma 2
    ours = despeckle(np.stack(noisy), weights=tiny_weights)  # the clip despeckled as one sequence, as tuned
    assert np.array_equal(figure[:64, 136:200], pub.gamma8(ours[1]))
    shown = [pub.gamma8(frame) for frame in ours]  # the protocol
    ssim = np.mean([structural_similarity(pub.unit(a), pub.unit(b), data_range=1.0, gaussian_weights=True,
                                          sigma=1.5, use_sample_covariance=False)
                    for a, b in zip(shown, [pub.gamma8(frame) for frame in noisy])])
    assert list(scored) == ["01"] and scored["01"]["out of the box"]["ssim"] == pytest.approx(ssim, abs=1e-9)
    path, tuned_scores = pub.comparison_figure(tmp_path, tmp_path / "tuned.png", tiny_weights, frames=(("01", 1),),
                                               finetune_steps=1)
    tuned = np.array(Image.open(path))
    assert tuned.shape == (64, 4 * 64 + 12) and np.array_equal(tuned[:, :200], figure[:64])
    assert list(tuned_scores["01"]) == ["out of the box", "fine-tuned 1 steps"]


@pytest.mark.parametrize("lr", ["0", "-1e-3"])
def test_finetune_curve_refuses_a_bad_learning_rate_before_any_work(shared_data, tmp_path, capsys, lr):
    out = tmp_path / "finetune.md"
    assert main(["finetune-curve", "--data", str(shared_data), f"--lr={lr}", "--seconds", "1", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "Learning rate" in captured.err and captured.err.count("\n") == 1 and captured.out == ""
    assert not out.exists()


def test_targets_table_checks_each_target_against_the_right_peers():
    from speckle2self.bench.benchmark import BenchResult
    from speckle2self.bench.published import PaperRow
    from speckle2self.bench.sets import TestSet
    from speckle2self.bench.targets import targets_table

    simulated = TestSet("S-II", [], ["a"], [], None, clean=[np.zeros((2, 2))])
    real = TestSet("real", [], ["phantom", "carotid"], [], None)
    flat = np.full((8, 8), 100, np.uint8)  # GLCM homogeneity 1
    carotid = TestSet("carotid", [], ["clip 01 frame 1", "clip 04 frame 1"], [], None, published=[flat, flat])
    structure = {"fwhm": [1.0], "grid": [1.1], "beta": [0.30]}
    scores = {"raw": {  # one value per image; Speckle2Self's own rows never count as peers
        "input": {"S-II": {"psnr": [20.0], "ssim": [0.2], "hom": [0.3], **structure},
                  "real": {"hom": [0.5, 0.5], "gcnr": [0.8, 0.9]},
                  "carotid": {"ssim": [0.68, 0.70], "hom": [0.6, 0.6]}},
        "median": {"S-II": {"psnr": [26.0], "ssim": [0.90], "hom": [0.85], **structure},
                   "carotid": {"ssim": [0.60, 0.62], "hom": [0.8, 0.8]}},
        "n2v": {"S-II": {"psnr": [19.0], "ssim": [0.95], "hom": [0.60], **structure},
                "carotid": {"ssim": [0.75, 0.71], "hom": [0.8, 0.8]}},
        "s2s-budget": {"S-II": {"psnr": [21.0], "ssim": [0.99], "hom": [0.99], **structure},
                       "carotid": {"ssim": [0.99, 0.99], "hom": [0.9, 0.9]}},
        "s2s": {"S-II": {"psnr": [28.0], "ssim": [0.92], "hom": [0.90], "fwhm": [1.3], "grid": [1.5], "beta": [0.25]},
                "real": {"hom": [0.80, 0.65], "gcnr": [0.85, 0.85]},
                "carotid": {"ssim": [0.80, 0.68], "hom": [0.98, 0.99]}},
    }}
    paper = [PaperRow("Speckle2Self (authors' model, published)", carotid.labels, {"raw": {"ssim": [0.99, 0.99]}}),
             PaperRow("NLM", carotid.labels[:1], {"raw": {"ssim": [0.78]}})]  # the authors' own row is no peer
    result = BenchResult(QUICK_CONFIG, [simulated, real, carotid], select(list(scores["raw"])), {}, scores, {}, {}, 1.0,
                         paper)
    lines = targets_table(result).splitlines()[2:]
    assert [line.split(" | ")[0].lstrip("| ") for line in lines if line.startswith("| **")] == [
        "**1. Real scans**", "**2. Structure on the simulations**", "**3. Simulated PSNR / SSIM / Hom**"]
    rows = [line.split(" | ") for line in lines if not line.startswith("| **")]
    verdicts = [(row[0].lstrip("| "), row[1], row[-1].rstrip(" |")) for row in rows]
    assert verdicts == [
        ("SSIM to the published output above the unfiltered input's", "carotid clips 01-04", "yes"),  # 0.74 > 0.69
        ("first on SSIM to the published output among the methods run here", "carotid clips 01-04", "yes"),  # > n2v
        ("SSIM to the published output at least the paper's best peer's", "carotid, the paper's peer clips", "yes"),
        ("Hom within 0.03 of the published output's", "carotid clips 01-04", "yes"),  # 0.985 against 1
        ("Hom at least 0.7", "phantom", "yes"), ("gCNR not below the input's", "phantom", "yes"),
        ("Hom at least 0.7", "carotid", "**no**"), ("gCNR not below the input's", "carotid", "**no**"),
        ("point-target FWHM ratio within 0.8-1.25", "S-II", "**no**"),  # 1.3
        ("grid score at most 2.0", "S-II", "yes"),
        ("edge beta at least the noisy input's", "S-II", "**no**"),  # 0.25 < 0.30
        ("PSNR at least the best classical filter's", "S-II", "yes"),          # 28 >= median 26
        ("SSIM at least 0.03 above the best classical filter's", "S-II", "**no**"),  # 0.92 - 0.90 < 0.03
        ("first on SSIM among methods without clean data", "S-II", "**no**"),  # Noise2Void 0.95
        ("first on Hom among methods without clean data", "S-II", "yes"),      # 0.90 > median 0.85
    ]


def test_fine_tuning_grid_runs_are_saved_scored_and_tabled(tmp_path, tiny_weights, capsys):
    """finetune_grid saves each run at its step counts, finetune_verdicts scores them against the published
    frames and prints each check's agreement; a folder shaped like carotid_published, made from simulations."""
    from speckle2self.bench import finetune_grid, finetune_verdicts
    from speckle2self.bench import published as pub
    from speckle2self.bench.sets import eight_bit

    noisy = [eight_bit(s.noisy) for s in simulate_set("S-II", 3, 160)]
    write_gif(tmp_path / "Input_01.gif", noisy)
    write_gif(tmp_path / "Speckle2Self_gamma2.0_01.gif", [pub.gamma8(frame) for frame in noisy])
    grid = tmp_path / "grid"
    finetune_grid.main([str(grid), "--weights", str(tiny_weights), "--lrs", "1e-3", "--steps", "1,2",
                        "--clips", "01", "--reference", str(tmp_path)])
    assert json.loads(capsys.readouterr().out)["held_out"] == [1]
    assert sorted(p.name for p in grid.glob("*.pt")) == ["01_1e-3_1.pt", "01_1e-3_2.pt"]
    rows = list(finetune_verdicts.score_runs(grid, tiny_weights, tmp_path))
    assert [r["steps"] for r in rows] == [1, 2] and len(rows[0]["after"]["frames"]) == 3
    assert set(rows[0]["checks"]) == {"loss", "homogeneity", "sharpness", "residual"}
    curve = finetune_verdicts.curve(rows, "1e-3").splitlines()
    assert curve[0] == "| clip | out of the box | 1 steps | 2 steps |" and curve[2].startswith("| 01 | ")
    assert curve[3].startswith("| mean | ") and f"{rows[1]['after']['ssim']:.3f}" in curve[2]
    # a made-up pair of runs: one that hurt and was refused, one that helped and was kept
    made = [{**rows[0], "after": {**rows[0]["before"], "ssim": rows[0]["before"]["ssim"] + sign * 0.02},
             "checks": {name: {**check, "worse": sign < 0} for name, check in rows[0]["checks"].items()}}
            for sign in (-1, 1)]
    lines = finetune_verdicts.table(made).splitlines()
    assert lines[-1].endswith("| 1 of 1 | 0 | 0 of 1 | 2 of 2 |") and "the safeguard" in lines[-1]
