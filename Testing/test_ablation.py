import math

import pytest

from speckle2self.bench.ablation import VARIANTS, ablation_job, markdown
from speckle2self.cli import main
from speckle2self.errors import Cancelled

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_variant_is_trained_on_its_share_of_images_and_scored():
    named = {v.name: v for v in VARIANTS}
    chosen = (VARIANTS[0], named["MSP scales 0.5 and 1 (no 0.25 branch)"], named["a quarter of the training images"])
    rows = ablation_job(seconds=1.0, test_count=1, train_count=4, size=128, variants=chosen).run()
    assert [r["variant"] for r in rows] == [v.name for v in chosen]
    assert [r["images"] for r in rows] == [4, 4, 1]
    for row in rows:
        assert row["steps"] >= 1 and all(math.isfinite(row[k]) for k in ("psnr", "ssim", "hom"))
        assert row["ms"] > 0
    table = markdown(rows)
    assert len(table.splitlines()) == 2 + len(chosen) and chosen[1].name in table


def test_ablation_can_be_cancelled_and_refuses_a_bad_budget(capsys):
    job = ablation_job(seconds=5.0, test_count=1, train_count=2, size=128, variants=VARIANTS[:1])
    next(iter(job))
    job.cancel()
    with pytest.raises(Cancelled):
        job.run()
    assert main(["ablation", "--budget", "0"]) == 2
    assert "budget must be positive" in capsys.readouterr().err
