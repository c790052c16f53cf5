"""The real reference: the benchmark scores the carotid scans with numbers identical to the reference's own
`evaluate_published.py` (run as a subprocess and imported), on the raw input and on the paper's NLM."""
from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from speckle2self.bench import published as pub
from speckle2self.bench.benchmark import QUICK_CONFIG, benchmark_job
from speckle2self.metrics import homogeneity

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def evaluate_published(folder, *args) -> dict:
    """The reference's script, as its README runs it."""
    done = subprocess.run([sys.executable, str(folder / "evaluate_published.py"), *args], check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def script(published_reference):
    spec = importlib.util.spec_from_file_location("evaluate_published", published_reference / "evaluate_published.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench(published_reference):
    """The benchmark on all 15 carotid frames, the noisy input as the only method."""
    config = replace(QUICK_CONFIG, methods=("input",), data=None, reference=published_reference, clips=pub.CLIPS,
                     carotid_count=None, test_count=1)
    return benchmark_job(config).run()


def rounded(values: list[float]) -> float:
    return round(float(np.mean(values)), 3)


def test_the_raw_input_scores_as_the_script_scores_it(bench, published_reference):
    copy = shlex.join([sys.executable, "-c", "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[3])"])
    expected = evaluate_published(published_reference, "--cli", copy)  # the input as the "despeckled" output
    assert expected["frames"] == 15
    ours = bench.scores["raw"]["input"]["carotid"]
    assert (rounded(ours["ssim"]), rounded(ours["hom"])) == (expected["ssim"], expected["hom"])
    assert (expected["ssim"], expected["hom"]) == (expected["input_ssim"], expected["input_hom"])
    carotid = next(s for s in bench.sets if s.against_published)
    assert rounded([homogeneity(frame) for frame in carotid.published]) == expected["published_hom"]


def test_the_papers_nlm_scores_as_the_script_scores_it(bench, published_reference):
    expected = evaluate_published(published_reference, "--method", "nlm")
    nlm = next(row for row in bench.paper if row.name == "NLM")
    assert len(nlm.labels) == expected["frames"] == 9
    raw = nlm.scores["raw"]
    assert (rounded(raw["ssim"]), rounded(raw["hom"])) == (expected["ssim"], expected["hom"])
    assert [row.name for row in bench.paper] == ["Speckle2Self (authors' model, published)", *pub.PAPER_PEERS.values()]


def test_every_frame_scores_exactly_as_the_scripts_functions(script, published_reference):
    inputs = pub.clip_frames(published_reference, "Input", pub.PEER_CLIPS)
    outputs = pub.clip_frames(published_reference, "nlm", pub.PEER_CLIPS)
    published = pub.clip_frames(published_reference, "Speckle2Self_gamma2.0", pub.PEER_CLIPS)
    for frame_in, frame_out, reference in zip(inputs, outputs, published):
        for frame in (frame_in, frame_out):
            shown = script.gamma8(frame)
            assert pub.scores(frame / 255, reference) == {"ssim": script.ssim(shown, reference),
                                                          "hom": script.hom64(shown)}


def test_the_carotid_rows_come_in_both_chains_and_calibration_changes_them(bench):
    for rows in (bench.scores, *(row.scores for row in bench.paper)):
        assert set(rows) == {"raw", "calibrated"}
    nlm = next(row for row in bench.paper if row.name == "NLM")
    assert nlm.scores["raw"]["ssim"] != nlm.scores["calibrated"]["ssim"]
