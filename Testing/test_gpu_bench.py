"""The prepared GPU figures script (`python -m speckle2self.bench.gpu`), checked where it runs here: the CPU."""
from __future__ import annotations

import json
import subprocess
import sys


def test_the_gpu_script_measures_every_path_and_step_it_can_here_and_writes_them(tmp_path):
    done = subprocess.run([sys.executable, "-m", "speckle2self.bench.gpu", "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "gpu.json").read_text())
    paths = {(r["batch"], r["path"]) for r in results["inference"]}
    assert paths >= {(b, p) for b in (1, 2) for p in ("eager fp32", "eager bf16")}
    assert all(r["ms_per_frame"] > 0 for r in results["inference"])
    assert {(r["batch"], r["precision"]) for r in results["steps"]} == {(2, "fp32"), (2, "bf16")}
    assert all(r["seconds_per_step"] > 0 for r in results["steps"])
    page = (tmp_path / "gpu.md").read_text()
    assert "| 2 | eager bf16 |" in page and "64 x 64" in page and page in done.stdout
