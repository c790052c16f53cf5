"""`speckle2self bench-speed`: inference and fine-tuning speed of each execution path, measured here.

Prints and writes (docs/performance.md) ms per frame for the reference path (eager fp32) and each
optimised one, the GFLOP/s they reach against this machine's matrix-multiply peak, how far the
optimised output is from the reference on real frames, a cine read -> despeckle -> write run with its
peak memory, and the fine-tuning step time. Figures are measured, never asserted.
"""
from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..precision import bf16_is_fast

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "BkCurvilinearScanConvertedData.nrrd"
SHARED_FRAMES = ("pluslibdata/UltrasonixLinearScanConvertedData.igs.mha",
                 "pluslibdata/SpinePhantomFreehand.igs.mha", "pymust_examples/carotid.jpg")


@dataclass(frozen=True)
class SpeedPlan:
    sizes: tuple[int, ...] = (256, 512)
    despeckle_shapes: tuple[tuple[int, int], ...] = ((256, 256), (512, 512), (383, 517))
    despeckle_frames: int = 8
    repeats: int = 5
    cine_frames: tuple[int, ...] = (200, 1000)
    cine_size: int = 512
    train_steps: int = 6
    compile: bool = True


QUICK = SpeedPlan(sizes=(64,), despeckle_shapes=((64, 64), (47, 81)), despeckle_frames=2, repeats=1, cine_frames=(4,), cine_size=64, train_steps=2, compile=False)


def _timed(fn, repeats: int, warmup: int = 1) -> float:
    """Mean seconds of `fn()` over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def matmul_peak(dtype: torch.dtype, n: int = 2048) -> float:
    """GFLOP/s of an n x n matrix product in `dtype`: the machine's practical peak."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n ** 3 / _timed(lambda: a @ b, 5) / 1e9


def network_gflop(net: torch.nn.Module, size: int) -> float:
    """GFLOP of one size x size frame through `net` (torch's FLOP counter: convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net(torch.zeros(1, 1, size, size))
    return counter.get_total_flops() / 1e9


def _paths(net: torch.nn.Module, plan: SpeedPlan):
    """(name, callable(x) -> output) for each execution path worth measuring."""
    from ..precision import autocast

    cpu = torch.device("cpu")
    channels_last = _channels_last_copy(net)
    for precision in ("fp32", "bf16"):
        cast = autocast(precision, cpu)
        yield f"eager {precision}", _under(cast, net)
        yield f"eager {precision} channels-last", _under(cast, channels_last, torch.channels_last)
        if plan.compile:
            yield f"torch.compile {precision}", _under(cast, torch.compile(net, dynamic=False))
    session = _onnx_session(net)
    if session is not None:
        yield "ONNX Runtime fp32", lambda x: torch.from_numpy(session.run(None, {"x": x.numpy()})[0])


def _channels_last_copy(net: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(net).to(memory_format=torch.channels_last)


def _under(cast, net, memory_format=torch.contiguous_format):
    def run(x):
        with torch.inference_mode(), cast:
            return net(x.contiguous(memory_format=memory_format)).float()
    return run


def _onnx_session(net: torch.nn.Module):
    """An ONNX Runtime session of `net` when onnxruntime and onnx are installed (an optional lever)."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime
    except ImportError:
        return None
    path = Path(tempfile.mkdtemp()) / "speckle2self.onnx"
    torch.onnx.export(net, (torch.zeros(1, 1, 64, 64),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {2: "h", 3: "w"}}, dynamo=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure_paths(net: torch.nn.Module, plan: SpeedPlan, peak_fp32: float) -> list[dict]:
    """ms per frame (batch of one) and GFLOP/s of each path at each size."""
    rows = []
    for size in plan.sizes:
        x = torch.rand(1, 1, size, size)
        gflop = network_gflop(net, size)
        for name, run in _paths(net, plan):
            first = time.perf_counter()
            run(x)  # compiles where the path compiles
            prepare = time.perf_counter() - first
            seconds = _timed(lambda: run(x), plan.repeats, warmup=1)
            rows.append({"size": size, "path": name, "ms_per_frame": 1e3 * seconds,
                         "gflops": gflop / seconds, "peak_fraction": gflop / seconds / peak_fp32,
                         "first_call_s": prepare})
    return rows


def end_to_end(plan: SpeedPlan) -> list[dict]:
    """ms per frame of `despeckle()` on a uint8 stack: the reference (fp32, batches of 4, as before the
    speed work) against the default (automatic precision and batch), square and odd sizes."""
    from ..inference import despeckle

    rng = np.random.default_rng(0)
    rows = []
    for h, w in plan.despeckle_shapes:
        stack = rng.integers(0, 256, (plan.despeckle_frames, h, w), dtype=np.uint8)
        for name, options in (("reference", {"precision": "fp32", "batch_size": 4}), ("default", {})):
            seconds = _timed(lambda: despeckle(stack, **options), 1)
            rows.append({"shape": f"{h}x{w}", "path": name, "ms_per_frame": 1e3 * seconds / len(stack)})
    return rows


def real_frames(data: Path | None, size: int) -> list[tuple[str, np.ndarray]]:
    """Grey frames of real scans, reflect-padded or cropped to size x size: the bundled sample and,
    with `data`, a frame of each of a few shared files."""
    from ..frames import grey_stack
    from ..image_io import read_image

    paths = [SAMPLE] + ([data / name for name in SHARED_FRAMES if (data / name).is_file()] if data else [])
    frames = []
    for path in paths:
        stack = grey_stack(read_image(path).array)
        frames.append((path.name, _square(stack[len(stack) // 2], size)))
    return frames


def _square(frame: np.ndarray, size: int) -> np.ndarray:
    pad = [(0, max(0, size - n)) for n in frame.shape]
    return np.pad(frame, pad, mode="reflect")[:size, :size]


def agreement(frames: list[tuple[str, np.ndarray]]) -> list[dict]:
    """How far the default (auto precision) output is from the fp32 reference, per real frame:
    PSNR of the float outputs, and the largest and the share of 8-bit differences above 1."""
    from ..inference import despeckle
    from ..metrics import psnr

    rows = []
    for name, frame in frames:
        unit = frame.astype(np.float32) / max(float(frame.max()), 1.0)
        reference, fast = (despeckle(unit, precision=p) for p in ("fp32", "auto"))
        diff8 = np.abs(np.rint(reference * 255) - np.rint(fast * 255))
        rows.append({"frame": name, "psnr_db": psnr(reference, fast), "max_8bit_diff": float(diff8.max()),
                     "share_8bit_diff_over_1": float((diff8 > 1).mean())})
    return rows


def cine_run(frames: int, size: int, precision: str) -> dict:
    """Time and peak resident memory of `speckle2self despeckle` on a frames x size x size uint8 cine
    (the bundled sample, shifted a little each frame), in a fresh process."""
    from ..image_io import read_image, write_image

    base = _square(read_image(SAMPLE).array, size)
    cine = np.stack([np.roll(base, i % 32, axis=1) for i in range(frames)])
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "cine.mha", Path(folder) / "despeckled.mha"
        write_image(source, cine)
        del cine
        start = time.perf_counter()
        command = [sys.executable, "-m", "speckle2self", "despeckle", str(source), "-o", str(target),
                   "--precision", precision]
        rss_kib = _peak_rss_kib(command)
        seconds = time.perf_counter() - start
    return {"frames": frames, "size": size, "precision": precision, "seconds": seconds,
            "ms_per_frame": 1e3 * seconds / frames, "peak_rss_mib": rss_kib / 1024,
            "buffers_mib": 2 * frames * size * size / 2 ** 20}


def _peak_rss_kib(command: list[str]) -> float:
    """Peak resident memory (KiB) of `command`, run in a fresh process of its own."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
             "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", probe, *command], check=True, capture_output=True, text=True)
    return float(done.stdout.strip())


def training_step(precision: str, steps: int, size: int = 256, batch: int = 4) -> float:
    """Median seconds of a full fine-tuning step (three branches, batch, size x size crops), first excluded."""
    from ..training import TrainConfig, train

    crops = np.random.default_rng(0).random((2, max(size, 64) * 2, max(size, 64) * 2), dtype=np.float32)
    result = train([crops], TrainConfig(steps=steps + 1, size=size, batch=batch, precision=precision),
                   device="cpu")
    times = np.diff([0.0] + [t for _, t, _ in result.history])[1:]
    return float(np.median(times))


def bench_speed(plan: SpeedPlan = SpeedPlan(), data: Path | None = None) -> dict:
    """Every figure of docs/performance.md, measured now on the CPU."""
    from ..inference import inference_model

    net = inference_model(device="cpu")
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    train_size = 256 if plan.sizes[-1] >= 256 else plan.sizes[-1]
    return {
        "machine": {"processor": platform.processor() or platform.machine(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "bf16_fast": bf16_is_fast(torch.device("cpu"))},
        "matmul_gflops": peaks,
        "paths": measure_paths(net, plan, peaks["fp32"]),
        "despeckle": end_to_end(plan),
        "agreement": agreement(real_frames(data, plan.sizes[-1])),
        "cine": [cine_run(n, plan.cine_size, p) for p in ("fp32", "auto") for n in plan.cine_frames],
        "training_step_s": {p: training_step(p, plan.train_steps, train_size) for p in ("fp32", "auto")},
        "training_size": train_size,
    }


def markdown(results: dict) -> str:
    """docs/performance.md from `bench_speed` results."""
    m, peaks = results["machine"], results["matmul_gflops"]
    lines = ["# Performance", "",
             "Measured by `speckle2self bench-speed` (`make bench-speed`) on the CPU: "
             f"{m['processor']}, {m['threads']} torch threads, torch {m['torch']}, "
             f"bf16 fast here: {'yes' if m['bf16_fast'] else 'no'}. "
             f"Matrix-multiply peak: {peaks['fp32']:.0f} GFLOP/s fp32, {peaks['bf16']:.0f} GFLOP/s bf16.",
             "", "## Inference paths (one frame per call)", "",
             "| size | path | ms/frame | speed-up over eager fp32 | GFLOP/s | of fp32 peak | first call (s) |",
             "|---|---|---|---|---|---|---|"]
    eager = {r["size"]: r["ms_per_frame"] for r in results["paths"] if r["path"] == results["paths"][0]["path"]}
    lines += [f"| {r['size']} | {r['path']} | {r['ms_per_frame']:.1f} | {eager[r['size']] / r['ms_per_frame']:.2f}x | "
              f"{r['gflops']:.0f} | {r['peak_fraction']:.0%} | {r['first_call_s']:.1f} |" for r in results["paths"]]
    lines += ["", f"## `despeckle()` end to end (uint8 stack, normalisation and background included)", "",
              "| frame | path | ms/frame |", "|---|---|---|"]
    lines += [f"| {r['shape']} | {r['path']} | {r['ms_per_frame']:.1f} |" for r in results["despeckle"]]
    lines += ["", "## Default path against the fp32 reference, real frames", "",
              "| frame | PSNR (dB, float output) | largest 8-bit difference | 8-bit pixels off by more than 1 |",
              "|---|---|---|---|"]
    lines += [f"| {r['frame']} | {r['psnr_db']:.1f} | {r['max_8bit_diff']:.0f} | {r['share_8bit_diff_over_1']:.2%} |"
              for r in results["agreement"]]
    lines += ["", "## Cine: read -> despeckle -> write (`speckle2self despeckle`, fresh process)", "",
              "| frames | size | precision | seconds | ms/frame | peak RSS (MiB) | input + output buffers (MiB) |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['frames']} | {r['size']} | {r['precision']} | {r['seconds']:.1f} | {r['ms_per_frame']:.0f} | "
              f"{r['peak_rss_mib']:.0f} | {r['buffers_mib']:.0f} |" for r in results["cine"]]
    lines += ["", "Peak RSS beyond the input and output buffers: " + ", ".join(
        f"{r['frames']} frames {r['precision']} {r['peak_rss_mib'] - r['buffers_mib']:.0f} MiB" for r in results["cine"])
        + " (flat in the number of frames when the figures for one precision agree)."]
    steps, size = results["training_step_s"], results["training_size"]
    lines += ["", f"## Fine-tuning step (three branches, batch 4, {size}x{size})", "",
              "| precision | seconds/step |", "|---|---|"]
    lines += [f"| {p} | {s:.2f} |" for p, s in steps.items()]
    lines += [f"", f"Speed-up of the default over fp32: {steps['fp32'] / steps['auto']:.2f}x.", ""]
    return "\n".join(lines)


def write(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(results))
    path.with_suffix(".json").write_text(json.dumps(results, indent=2))
