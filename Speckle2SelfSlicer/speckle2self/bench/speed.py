"""`speckle2self bench-speed`: inference and fine-tuning speed of each execution path, measured here.

Prints and writes (docs/performance.md) ms per frame for the reference path (eager fp32) and each
optimised one (torch, OpenVINO, the int8 network), the GFLOP/s they reach against this machine's
matrix-multiply peak, how far the default output is from the reference on held-out real frames, a cine
read -> despeckle -> write run with its peak memory, and the fine-tuning step time. On a CPU above AVX2 the
inference, end-to-end, cine and training figures are measured again in subprocesses restricted to AVX2
code paths (ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2), and to AVX2 with AVX-VNNI where this
processor has it: the common laptop and workstation cases (VNNI: most laptops since 2021), emulated on this
processor. Figures are measured, never asserted.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..allocator import keep_freed_blocks
from ..precision import bf16_is_fast, resolve_precision

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "BkCurvilinearScanConvertedData.nrrd"
HELD_OUT_FRAMES = (("pluslibdata/SpinePhantomFreehand.igs.mha", 5), ("pluslibdata/SpinePhantomFreehand.igs.mha", 15),
                   ("pluslibdata/UltrasonixCurvilinearScanConvertedData.igs.mha", 2),
                   ("pluslibdata/Prostate10_video.igs.mhd", 4),
                   ("pluslibdata/vtkVolumeReconstructorTestIMLiFvolumeRef.mha", 5),
                   ("pymust_examples/carotid.jpg", 0), ("pymust_examples/bmode_PWI_disk.mat", 0),
                   ("pymust_examples/bmode_PWI_disk.mat", 16))
"""(shared file, frame) for the fidelity table: real frames that are not among the int8 calibration frames."""
RESTRICTED = {"AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
              "AVX2 with AVX-VNNI": {"ONEDNN_MAX_CPU_ISA": "AVX2_VNNI", "ATEN_CPU_CAPABILITY": "avx2"}}
"""Environments that restrict torch's and OpenVINO's kernels to AVX2 code paths (the second with the
8-bit dot-product instructions of AVX-VNNI, which OpenVINO's int8 kernels use)."""
NEEDS_FLAG = {"AVX2 with AVX-VNNI": "avx_vnni"}
"""The /proc/cpuinfo flag a processor needs to emulate a level of `RESTRICTED`."""


@dataclass(frozen=True)
class SpeedPlan:
    sizes: tuple[int, ...] = (256, 512)
    despeckle_shapes: tuple[tuple[int, int], ...] = ((256, 256), (512, 512), (383, 517))
    despeckle_frames: int = 8
    repeats: int = 5
    cine_frames: tuple[int, ...] = (200, 1000)
    """Cine lengths of the default path; the fp32 reference runs the first only."""
    cine_size: int = 512
    train_steps: int = 6
    compile: bool = True
    avx2: bool = True
    """Measure again restricted to AVX2 (and AVX2 with AVX-VNNI) where this CPU has more."""


QUICK = SpeedPlan(sizes=(64,), despeckle_shapes=((64, 64), (47, 81)), despeckle_frames=2, repeats=1, cine_frames=(4,),
                  cine_size=64, train_steps=2, compile=False, avx2=False)


def timed(fn, repeats: int, warmup: int = 1) -> float:
    """Median seconds of `fn()` over `repeats` calls after `warmup` calls (the median, as a busy neighbour on
    a shared machine slows single calls)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def matmul_peak(dtype: torch.dtype, n: int = 2048) -> float:
    """GFLOP/s of an n x n matrix product in `dtype`: the machine's practical peak."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n ** 3 / timed(lambda: a @ b, 5) / 1e9


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
    bf16 = bf16_is_fast(cpu)
    for precision in ("fp32", "bf16") if bf16 else ("fp32",):
        cast = autocast(precision, cpu)
        yield f"eager {precision}", _under(cast, net)
        yield f"eager {precision} channels-last", _under(cast, channels_last, torch.channels_last)
        if plan.compile:
            yield f"torch.compile {precision}", _under(cast, torch.compile(net, dynamic=False))
    session = _onnx_session(net)
    if session is not None:
        yield "ONNX Runtime fp32", lambda x: torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
    if default_precision() == "int8":
        from ..inference import network_function

        for hint in ("f32", "bf16") if bf16 else ("f32",):
            yield f"OpenVINO {hint}", _openvino(net, hint)
            yield f"OpenVINO {hint}, sub-pixel decoder", _openvino(net, hint, subpixel=True)
        yield f"OpenVINO int8{' (bf16 rest)' if bf16 else ''}", network_function(net, "int8", cpu)


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


def _openvino(net: torch.nn.Module, hint: str, subpixel: bool = False):
    """`net` converted to OpenVINO (no quantisation), run at precision `hint`; with `subpixel`, its transposed
    convolutions rewritten as the int8 path has them (`speckle2self.subpixel`)."""
    import openvino as ov

    from ..subpixel import openvino_model

    example = torch.zeros(1, 1, 64, 64)
    model = (openvino_model(net, example) if subpixel
             else ov.convert_model(net, example_input=example, input=[(-1, 1, -1, -1)]))
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                      "INFERENCE_NUM_THREADS": torch.get_num_threads()})
    return lambda x: compiled(x.numpy())[0]


def _fast_paths(net: torch.nn.Module):
    """The fast model's paths: its eager fp32 and what despeckling runs it at by default."""
    from ..inference import int8_pays, network_function
    from ..precision import autocast

    cpu = torch.device("cpu")
    precision = resolve_precision("auto", cpu, despeckling=True, int8_pays=int8_pays(net, 0))
    yield "fast model: eager fp32", _under(autocast("fp32", cpu), net)
    yield f"fast model: default ({precision})", network_function(net, precision, cpu)


def shipped_nets() -> dict[str, torch.nn.Module]:
    """The inference paths of the shipped models, by name."""
    from ..inference import inference_model
    from ..weights import SHIPPED

    return {name: inference_model(path, device="cpu") for name, path in SHIPPED.items()}


def measure_paths(nets: dict[str, torch.nn.Module], plan: SpeedPlan, peak_fp32: float) -> list[dict]:
    """ms per frame (batch of one) and GFLOP/s of each path of the default model, and of the fast model's
    reference and default paths, at each size."""
    rows = []
    for size in plan.sizes:
        x = torch.rand(1, 1, size, size)
        for net, paths in ((nets["default"], _paths(nets["default"], plan)), (nets["fast"], _fast_paths(nets["fast"]))):
            rows += _path_rows(net, paths, x, plan.repeats, peak_fp32)
    return rows


def _path_rows(net: torch.nn.Module, paths, x: torch.Tensor, repeats: int, peak_fp32: float) -> list[dict]:
    size, rows = x.shape[-1], []
    gflop = network_gflop(net, size)
    for name, run in paths:
        first = time.perf_counter()
        run(x)  # compiles where the path compiles
        prepare = time.perf_counter() - first
        seconds = timed(lambda: run(x), repeats, warmup=1)
        rows.append({"size": size, "path": name, "ms_per_frame": 1e3 * seconds,
                     "gflops": gflop / seconds, "peak_fraction": gflop / seconds / peak_fp32,
                     "first_call_s": prepare})
    return rows


def end_to_end(plan: SpeedPlan) -> list[dict]:
    """ms per frame of `despeckle()` on a uint8 stack of the bundled sample (real speckle, so `--scale auto`
    chooses the factor it would for a real scan): the reference (fp32, batches of 4, the file's own grid, as
    before the speed work) against the default on the file's grid (`scale=1`) and as shipped (automatic
    precision, batch and speckle scale), square and odd sizes; each row with the scale factor it ran at."""
    from ..inference import despeckle, despeckle_job
    from ..weights import shipped_weights

    rows = []
    for h, w in plan.despeckle_shapes:
        stack = sample_stack(plan.despeckle_frames, h, w)
        for name, options in (("reference", {"precision": "fp32", "batch_size": 4, "scale": 1}),
                              ("default on the file's grid (--scale 1)", {"scale": 1}), ("default", {}),
                              ("fast model (--model fast)", {"weights": shipped_weights("fast")})):
            warm_up = despeckle_job(stack[:1], **options)  # the int8 network is prepared (or read from the cache)
            warm_up.run()
            factor = warm_up.info["scale"]["factor"]
            seconds = timed(lambda: despeckle(stack, **options), 3, warmup=0)
            rows.append({"shape": f"{h}x{w}", "path": name, "factor": factor,
                         "ms_per_frame": 1e3 * seconds / len(stack)})
    return rows


def real_frames(data: Path | None) -> list[tuple[str, np.ndarray]]:
    """Grey real frames at their own size: the bundled sample and, with `data`, the held-out shared frames."""
    from ..frames import grey_stack
    from ..image_io import read_image

    frames = [(SAMPLE.name, grey_stack(read_image(SAMPLE).array)[0])]
    for name, index in HELD_OUT_FRAMES if data else ():
        if (data / name).is_file():
            frames.append((f"{Path(name).name} [{index}]", grey_stack(read_image(data / name).array)[index]))
    return frames


def sample_stack(frames: int, h: int, w: int) -> np.ndarray:
    """`frames` uint8 frames of the bundled sample at h x w (reflect-padded, cropped), each shifted a little."""
    from ..image_io import read_image

    frame = read_image(SAMPLE).array
    base = np.pad(frame, [(0, max(0, h - frame.shape[0])), (0, max(0, w - frame.shape[1]))], mode="reflect")[:h, :w]
    return np.stack([np.roll(base, i % 32, axis=1) for i in range(frames)])


def agreement(frames: list[tuple[str, np.ndarray]]) -> list[dict]:
    """How far each output is from its reference, per real frame: PSNR of the float outputs, and the largest
    and the share of 8-bit differences above 1. The default and bf16 paths against the fp32 reference path;
    the fast model's default path against its own fp32 path, and that against the full model's (what
    distillation left)."""
    from ..inference import despeckle
    from ..weights import shipped_weights

    cpu = torch.device("cpu")
    fast = {"weights": shipped_weights("fast")}
    paths = [("default", {}, default_precision())] + ([("bf16", {"precision": "bf16"}, "bf16")]
                                                       if bf16_is_fast(cpu) else [])
    rows = []
    for name, frame in frames:
        unit = frame.astype(np.float32) / max(float(frame.max()), 1.0)
        reference, fast_reference = despeckle(unit, precision="fp32"), despeckle(unit, precision="fp32", **fast)
        compared = [(path, precision, reference, despeckle(unit, **options)) for path, options, precision in paths]
        compared += [("fast model", default_precision(), fast_reference, despeckle(unit, **fast)),
                     ("fast model fp32 against the full model's", "fp32", reference, fast_reference)]
        for path, precision, expected, output in compared:
            rows.append({"frame": name, "shape": "x".join(map(str, frame.shape)), "path": path,
                         "precision": precision, **_difference(expected, output)})
    return rows


def _difference(expected: np.ndarray, output: np.ndarray) -> dict:
    from ..metrics import psnr

    diff8 = np.abs(np.rint(expected * 255) - np.rint(output * 255))
    return {"psnr_db": psnr(expected, output), "max_8bit_diff": float(diff8.max()),
            "share_8bit_diff_over_1": float((diff8 > 1).mean())}


def cine_run(frames: int, size: int, precision: str, env: dict | None = None, scale: str = "auto") -> dict:
    """Time and peak resident memory of `speckle2self despeckle` on a frames x size x size uint8 cine of the
    bundled sample (`sample_stack`), in a fresh process (with `env` added), at `scale`; the row names the
    factor that scale comes to."""
    from .. import scale as sc
    from ..image_io import write_image
    from ..inference import training_grain

    cine = sample_stack(frames, size, size)
    factor = sc.choose(cine[:1], sc.parse_scale(scale), training_grain())["factor"]
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "cine.mha", Path(folder) / "despeckled.mha"
        write_image(source, cine)
        del cine
        start = time.perf_counter()
        command = [sys.executable, "-m", "speckle2self", "despeckle", str(source), "-o", str(target),
                   "--precision", precision, "--scale", scale]
        rss_kib = _peak_rss_kib(command, env)
        seconds = time.perf_counter() - start
    return {"frames": frames, "size": size, "precision": precision, "factor": factor, "seconds": seconds,
            "ms_per_frame": 1e3 * seconds / frames, "peak_rss_mib": rss_kib / 1024,
            "buffers_mib": 2 * frames * size * size / 2 ** 20}


def _peak_rss_kib(command: list[str], env: dict | None = None) -> float:
    """Peak resident memory (KiB) of `command`, run in a fresh process of its own."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
             "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", probe, *command], check=True, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    return float(done.stdout.strip())


def training_step(precision: str, steps: int, size: int = 256, batch: int = 4, compile: bool = False,
                  width: int = 32, device: str = "cpu") -> float:
    """Median seconds of a full fine-tuning step (three branches, batch, size x size crops) of a network of
    `width` on `device`, first excluded (with `compile`, that first step is where torch.compile runs)."""
    from ..training import TrainConfig, train

    crops = np.random.default_rng(0).random((2, max(size, 64) * 2, max(size, 64) * 2), dtype=np.float32)
    result = train([crops], TrainConfig(steps=steps + 1, size=size, batch=batch, precision=precision,
                                        compile=compile, width=width), device=device)
    times = np.diff([0.0] + [t for _, t, _ in result.history])[1:]
    return float(np.median(times))


def default_precision() -> str:
    """What `despeckle()` runs the shipped model at on this CPU by default."""
    return resolve_precision("auto", torch.device("cpu"), despeckling=True, int8_pays=True)


def _machine() -> dict:
    return {"processor": platform.processor() or platform.machine(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_fast": bf16_is_fast(torch.device("cpu")),
            "default_precision": default_precision()}


def plain_figures(plan: SpeedPlan, precision: str) -> dict:
    """The eager fp32 network at the largest size and a training step at `precision`, in this process as it
    is: run in a plain subprocess (`plain_process`), glibc's allocator keeps its defaults."""
    net = shipped_nets()["default"]
    x = torch.rand(1, 1, plan.sizes[-1], plan.sizes[-1])
    with torch.inference_mode():
        seconds = timed(lambda: net(x), plan.repeats, warmup=1)
    return {"size": plan.sizes[-1], "eager_fp32_ms": 1e3 * seconds, "precision": precision,
            "training_step_s": training_step(precision, plan.train_steps, _train_size(plan))}


def plain_process(plan: SpeedPlan, precision: str) -> dict:
    """`plain_figures` in a fresh Python process that does not call `allocator.keep_freed_blocks`, as a
    script of one's own runs the network."""
    code = ("import json, sys; from speckle2self.bench.speed import plain_figures, plan_from; "
            "print(json.dumps(plain_figures(plan_from(json.loads(sys.argv[1])), sys.argv[2])))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(asdict(plan)), precision], check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def core_figures(plan: SpeedPlan) -> dict:
    """The inference paths at 512 (the largest size), `despeckle()` end to end, a cine and the training
    step: what each restricted subprocess measures."""
    keep_freed_blocks()  # as in the CLI process that runs the rest of bench-speed
    peak = matmul_peak(torch.float32)
    return {"machine": _machine(), "matmul_gflops": {"fp32": peak}, "plain": plain_process(plan, "fp32"),
            "paths": measure_paths(shipped_nets(), SpeedPlan(**{**asdict(plan), "sizes": (plan.sizes[-1],), "compile": False}),
                                   peak),
            "despeckle": end_to_end(plan),
            "cine": [cine_run(plan.cine_frames[0], plan.cine_size, "auto")],
            "training_step_s": _training_steps(plan, ("fp32",))}


def _training_steps(plan: SpeedPlan, precisions: tuple[str, ...]) -> dict:
    """Seconds per training step at each precision, the fast model's (width 16) at the last one, and where the
    plan compiles, the last one compiled."""
    from ..weights import read_card, shipped_weights

    size, fast = _train_size(plan), read_card(shipped_weights("fast"))["width"]
    steps = {p: training_step(p, plan.train_steps, size) for p in precisions}
    steps[f"{precisions[-1]}, fast model"] = training_step(precisions[-1], plan.train_steps, size, width=fast)
    if plan.compile:
        steps[f"{precisions[-1]}, torch.compile"] = training_step(precisions[-1], plan.train_steps, size, compile=True)
    return steps


def _train_size(plan: SpeedPlan) -> int:
    return 256 if plan.sizes[-1] >= 256 else plan.sizes[-1]


def plan_from(fields: dict) -> SpeedPlan:
    """A SpeedPlan back from its JSON fields (lists become the tuples they were)."""
    def tupled(value):
        return tuple(map(tupled, value)) if isinstance(value, list) else value
    return SpeedPlan(**{name: tupled(value) for name, value in fields.items()})


def restricted(plan: SpeedPlan, env: dict) -> dict:
    """`core_figures` measured in a subprocess whose kernels are restricted by `env` (one of `RESTRICTED`)."""
    code = ("import json, sys; from speckle2self.bench.speed import core_figures, plan_from; "
            "print(json.dumps(core_figures(plan_from(json.loads(sys.argv[1])))))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(asdict(plan))], check=True, capture_output=True,
                          text=True, env={**os.environ, **env})
    return json.loads(done.stdout.strip().splitlines()[-1])


def emulable(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The `RESTRICTED` levels this CPU can emulate: none on an AVX2 CPU; AVX2, and AVX2 with AVX-VNNI where
    the processor has it (its flag in `cpuinfo`), above."""
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return []
    flags = cpuinfo.read_text().split() if cpuinfo.is_file() else []
    return [level for level in RESTRICTED if level not in NEEDS_FLAG or NEEDS_FLAG[level] in flags]


def bench_speed(plan: SpeedPlan = SpeedPlan(), data: Path | None = None) -> dict:
    """Every figure of docs/performance.md, measured now on the CPU."""
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    return {
        "machine": _machine(),
        "matmul_gflops": peaks,
        "paths": measure_paths(shipped_nets(), plan, peaks["fp32"]),
        "despeckle": end_to_end(plan),
        "agreement": agreement(real_frames(data)),
        "cine": [cine_run(plan.cine_frames[0], plan.cine_size, "fp32"),
                 cine_run(plan.cine_frames[0], plan.cine_size, "auto", scale="1")]
                + [cine_run(n, plan.cine_size, "auto") for n in plan.cine_frames],
        "training_step_s": _training_steps(plan, ("fp32", "auto")),
        "training_size": _train_size(plan),
        "plain": plain_process(plan, "auto"),
        "restricted": {level: restricted(plan, RESTRICTED[level]) for level in (emulable() if plan.avx2 else [])},
    }


def _paths_table(results: dict) -> list[str]:
    lines = ["| size | path | ms/frame | speed-up over eager fp32 | GFLOP/s | of fp32 peak | first call (s) |",
             "|---|---|---|---|---|---|---|"]
    eager = {r["size"]: r["ms_per_frame"] for r in results["paths"] if r["path"] == "eager fp32"}
    return lines + [f"| {r['size']} | {r['path']} | {r['ms_per_frame']:.1f} | {eager[r['size']] / r['ms_per_frame']:.2f}x"
                    f" | {r['gflops']:.0f} | {r['peak_fraction']:.0%} | {r['first_call_s']:.1f} |" for r in results["paths"]]


def _despeckle_table(results: dict) -> list[str]:
    """End-to-end ms/frame, with the default's speed-up over the eager fp32 network at square sizes."""
    eager = {f"{r['size']}x{r['size']}": r["ms_per_frame"] for r in results["paths"] if r["path"] == "eager fp32"}
    lines = ["| frame | path | speckle scale factor | ms/frame | speed-up over the eager fp32 network |",
             "|---|---|---|---|---|"]
    return lines + [f"| {r['shape']} | {r['path']} | {r['factor']:.2f} | {r['ms_per_frame']:.1f} | "
                    + (f"{eager[r['shape']] / r['ms_per_frame']:.2f}x |" if r["shape"] in eager else "- |")
                    for r in results["despeckle"]]


def _cine_table(results: dict) -> list[str]:
    lines = ["| frames | size | precision | speckle scale factor | seconds | ms/frame | peak RSS (MiB) | "
             "input + output buffers (MiB) |", "|---|---|---|---|---|---|---|---|"]
    return lines + [f"| {r['frames']} | {r['size']} | {r['precision']} | {r['factor']:.2f} | {r['seconds']:.1f} | "
                    f"{r['ms_per_frame']:.0f} | "
                    f"{r['peak_rss_mib']:.0f} | {r['buffers_mib']:.0f} |" for r in results["cine"]]


def _training_table(results: dict) -> list[str]:
    """Seconds per step, against fp32 and against the default step (auto; fp32 where that is all there is)."""
    steps = results["training_step_s"]
    default = steps.get("auto", steps["fp32"])
    lines = ["| precision | seconds/step | speed-up over fp32 | over the default step |", "|---|---|---|---|"]
    return lines + [f"| {p} | {s:.2f} | {steps['fp32'] / s:.2f}x | {default / s:.2f}x |" for p, s in steps.items()]


def _plain_table(results: dict) -> list[str]:
    """The eager fp32 network and the default training step here against a plain process, and the default
    despeckling's speed-up over both eager figures."""
    plain, size = results["plain"], results["plain"]["size"]
    eager = next(r["ms_per_frame"] for r in results["paths"] if r["path"] == "eager fp32" and r["size"] == size)
    default = next(r["ms_per_frame"] for r in results["despeckle"] if r["path"] == "default"
                   and r["shape"] == f"{size}x{size}")
    step = results["training_step_s"][plain["precision"]]
    return ["| | speckle2self's process (large blocks kept) | a plain process (glibc's defaults) |", "|---|---|---|",
            f"| eager fp32 network, {size}x{size} (ms) | {eager:.1f} | {plain['eager_fp32_ms']:.1f} |",
            f"| training step, {plain['precision']} (s) | {step:.2f} | {plain['training_step_s']:.2f} |",
            f"| default `despeckle()` {size}x{size} ({default:.1f} ms): speed-up over that eager network | "
            f"{eager / default:.2f}x | {plain['eager_fp32_ms'] / default:.2f}x |"]


def _machine_line(results: dict) -> str:
    m, peaks = results["machine"], results["matmul_gflops"]
    return (f"{m['processor']}, kernels {m['capability']}, {m['threads']} torch threads, torch {m['torch']}, "
            f"bf16 fast here: {'yes' if m['bf16_fast'] else 'no'}, default despeckling precision: "
            f"{m['default_precision']}. Matrix-multiply peak: "
            + ", ".join(f"{v:.0f} GFLOP/s {k}" for k, v in peaks.items()) + ".")


def markdown(results: dict) -> str:
    """docs/performance.md from `bench_speed` results."""
    size = results["training_size"]
    lines = ["# Performance", "", "Measured by `speckle2self bench-speed` (`make bench-speed`) on the CPU: "
             + _machine_line(results), "", "## Inference paths (one frame per call)", ""]
    lines += _paths_table(results)
    lines += ["", "## `despeckle()` end to end (uint8 stack, normalisation, post-processing and background included)",
              ""] + _despeckle_table(results)
    lines += ["", "## Default and bf16 paths against the fp32 reference, real frames", "",
              "None of these frames is among the int8 calibration frames (`models/calibration_frames.npz`). The fast "
              "model's default path is compared with its own fp32 path; the last row of each frame compares the "
              "fast model's fp32 output with the full model's (what distillation left, not a precision error).", "",
              "| frame | size | path | precision | PSNR (dB, float output) | largest 8-bit difference | "
              "8-bit pixels off by more than 1 |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['frame']} | {r['shape']} | {r['path']} | {r['precision']} | {r['psnr_db']:.1f} | "
              f"{r['max_8bit_diff']:.0f} | {r['share_8bit_diff_over_1']:.2%} |" for r in results["agreement"]]
    lines += ["", "## Cine: read -> despeckle -> write (`speckle2self despeckle`, fresh process)", ""]
    lines += _cine_table(results)
    lines += ["", "Peak RSS beyond the input and output buffers: " + ", ".join(
        f"{r['frames']} frames {r['precision']} at scale {r['factor']:.2f} "
        f"{r['peak_rss_mib'] - r['buffers_mib']:.0f} MiB" for r in results["cine"])
        + " (flat in the number of frames when the figures for one precision agree)."]
    lines += ["", f"## Fine-tuning step (three branches, batch 4, {size}x{size})", ""] + _training_table(results)
    lines += ["", "## Allocator: speckle2self's processes against a plain one", "",
              "speckle2self's CLI, its Slicer despeckling process and batch workers keep large freed blocks for "
              "the next frame (`speckle2self/allocator.py`); every figure above is measured so. A plain Python "
              "process running the same network keeps glibc's defaults:", ""] + _plain_table(results)
    for level, figures in results.get("restricted", {}).items():
        env = ", ".join(f"{k}={v}" for k, v in RESTRICTED[level].items())
        lines += ["", f"## Restricted to {level} code paths ({env})", "",
                  f"The same processor with torch's and OpenVINO's kernels limited to {level}, as on CPUs without "
                  "AVX-512: an emulation, not a measurement on such a CPU. " + _machine_line(figures), ""]
        lines += _paths_table(figures) + [""] + _despeckle_table(figures) + [""] + _cine_table(figures)
        lines += [""] + _training_table(figures) + [""] + _plain_table(figures)
    return "\n".join(lines + [""])


def write(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(results))
    path.with_suffix(".json").write_text(json.dumps(results, indent=2))
