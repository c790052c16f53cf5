"""`python -m speckle2self.bench.gpu [--out FOLDER]`: the GPU figures of docs/performance.md in one run.

Made for a lent accelerator with a few minutes (needs torch, numpy, scipy and MONAI, not SimpleITK or
OpenVINO): ms per 512 x 512 frame of the shipped default network at batch 1 and 16 in fp32, bf16 and fp16
autocast, bf16 also replayed as a CUDA graph and under torch.compile, and a fine-tuning step (three
branches, 256 x 256) at batch 4 and 32 in fp32 and bf16. Writes gpu.json and gpu.md into FOLDER and prints
the markdown (after each part, so a run cut short keeps what it measured). Without CUDA it measures the
CPU's eager paths; `--quick`: tiny sizes and one repeat, a check of the script (Testing/test_gpu_bench.py).

On the device tool's machine (MONAI as a wheel: `pip download --no-deps --only-binary=:all: --python-version
3.12 -d .whl monai==1.6.1`, `.whl` in .git/info/exclude), carry [".whl"] and run, timeout about 300 s:
`python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
PYTHONPATH=/tmp/site:Speckle2SelfSlicer python3 -m speckle2self.bench.gpu --out $OUT`.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import time
from pathlib import Path

import numpy as np
import torch

from .speed import timed, training_step

SIZE = 512
BATCHES = (1, 16)
AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
QUICK = {"repeats": 1, "steps": 1, "batches": (1, 2), "size": 64, "step_batches": (2,), "step_size": 64}


def _synchronised(fn, device: torch.device):
    def run():
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out
    return run


def _eager(net, x, dtype):
    def run():
        cast = torch.autocast(x.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with torch.inference_mode(), cast:
            return net(x)
    return run


def _cuda_graph(net, x, dtype):
    """The network's forward captured once as a CUDA graph and replayed (no per-kernel launch cost)."""
    static = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            _eager(net, static, dtype)()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, cache_enabled=False), torch.cuda.graph(graph):
        net(static)
    return graph.replay


def inference_rows(net, device: torch.device, repeats: int, batches=BATCHES, size: int = SIZE) -> list[dict]:
    """ms per frame of each path at each batch size."""
    rows = []
    for batch in batches:
        x = torch.rand(batch, 1, size, size, device=device)
        paths = [(f"eager {name}", functools.partial(_eager, net, x, dtype)) for name, dtype in AUTOCAST.items()
                 if device.type == "cuda" or name != "fp16"]  # each path's maker: graphs capture, compile compiles
        if device.type == "cuda":
            paths.append(("CUDA graph bf16", functools.partial(_cuda_graph, net, x, torch.bfloat16)))
            paths.append(("torch.compile bf16", lambda: _eager(torch.compile(net), x, torch.bfloat16)))
        for name, make in paths:
            try:  # device time is scarce: a path that fails is recorded and the others still run
                first = time.perf_counter()
                fn = make()
                _synchronised(fn, device)()
                prepare = time.perf_counter() - first
                ms = 1e3 * timed(_synchronised(fn, device), repeats, warmup=3)
            except Exception as error:  # noqa: BLE001
                rows.append({"batch": batch, "path": name, "error": f"{type(error).__name__}: {error}"[:300]})
                continue
            rows.append({"batch": batch, "path": name, "ms_per_frame": ms / batch, "first_call_s": prepare})
    return rows


def step_rows(device: torch.device, steps: int, batches=(4, 32), size: int = 256) -> list[dict]:
    """Seconds per fine-tuning step (size x size crops) in fp32 and bf16 at each batch size."""
    return [{"batch": batch, "precision": precision,
             "seconds_per_step": training_step(precision, steps, size, batch=batch, device=str(device))}
            for batch in batches for precision in ("fp32", "bf16")]


def markdown(results: dict) -> str:
    lines = [f"## GPU: {results['device']} (`python -m speckle2self.bench.gpu`, torch {results['torch']})", "",
             f"| batch | path | ms per {results['size']} x {results['size']} frame | speed-up over eager fp32 | first call (s) |",
             "|---|---|---|---|---|"]
    eager = {r["batch"]: r["ms_per_frame"] for r in results["inference"] if r["path"] == "eager fp32"}
    lines += [_inference_line(r, eager.get(r["batch"])) for r in results["inference"]]
    if not results.get("steps"):
        return "\n".join(lines + [""])
    side = results["step_size"]
    lines += ["", f"| fine-tuning step (three branches, {side} x {side}) | batch | seconds/step | pixels/s |",
              "|---|---|---|---|"]
    lines += [f"| {r['precision']} | {r['batch']} | {r['seconds_per_step']:.3f} | "
              f"{3 * r['batch'] * side * side / r['seconds_per_step']:.2e} |" for r in results["steps"]]
    return "\n".join(lines + [""])


def _inference_line(row: dict, eager_ms: float | None) -> str:
    if "error" in row:
        return f"| {row['batch']} | {row['path']} | failed: {row['error']} | - | - |"
    ratio = f"{eager_ms / row['ms_per_frame']:.2f}x" if eager_ms else "-"
    return f"| {row['batch']} | {row['path']} | {row['ms_per_frame']:.2f} | {ratio} | {row['first_call_s']:.1f} |"


def measure(out: Path, repeats: int = 20, steps: int = 10, batches=BATCHES, size: int = SIZE,
            step_batches=(4, 32), step_size: int = 256) -> dict:
    """Every figure, on the GPU where there is one, written to `out` (gpu.json, gpu.md) as each part ends."""
    from ..inference import inference_model, resolve_device

    device = resolve_device("auto")
    net = inference_model(device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.backends.cpu.get_cpu_capability()})"
    results = {"device": name, "torch": torch.__version__, "size": size, "step_size": step_size}
    results["inference"] = inference_rows(net, device, repeats, batches, size)
    _write(results, out)
    results["steps"] = step_rows(device, steps, step_batches, step_size)
    _write(results, out)
    return results


def _write(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(results, indent=2))
    (out / "gpu.md").write_text(markdown(results))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for gpu.json and gpu.md")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a check of the script")
    args = parser.parse_args(argv)
    print(markdown(measure(args.out, **QUICK) if args.quick else measure(args.out)))


if __name__ == "__main__":
    main()
