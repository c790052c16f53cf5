"""How long Slicer's main thread is blocked at most while despeckling and fine-tuning, in-process (the job
stepped from a timer, one batch or one training step a tick) against the separate process (the runner polled
from a timer). Runs on slicer-core, no Slicer application: the call that starts the job and every call the
timer would make are timed; the last poll of the separate process reads the result and stores it.

    .venv/bin/python Testing/responsiveness.py [--frames 20] [--size 128] [--steps 50] [--finetune-size 64]
        [--workloads despeckle finetune] [--paths in-process subprocess] [--weights CHECKPOINT]

The fine-tuning workload fine-tunes on (and then despeckles) the first two frames only.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import SimpleITK as sitk
import slicer
import slicer.util

from Speckle2SelfSlicerLib import Speckle2SelfLogic

SAMPLE = "Speckle2SelfSlicer/Resources/SampleData/BkCurvilinearScanConvertedData.nrrd"
POLL_INTERVAL = 0.1
"""Seconds between two polls of the separate process (the module's timer interval)."""


def timed(call) -> tuple[object, float]:
    start = time.perf_counter()
    value = call()
    return value, time.perf_counter() - start


def run(start_job, advance, pause: float) -> tuple[float, float, float, int]:
    """Time the call that makes the job and every later timer call (`advance`, `pause` seconds apart) until
    the job ends: (start call, longest later call, wall time, number of later calls)."""
    begin = time.perf_counter()
    job, first = timed(start_job)
    longest, calls = 0.0, 0
    while True:
        running, seconds = timed(lambda: advance(job))
        longest, calls = max(longest, seconds), calls + 1
        if not running:
            return first, longest, time.perf_counter() - begin, calls
        time.sleep(pause)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--size", type=int, default=128, help="frame side in pixels (crops of the sample)")
    parser.add_argument("--steps", type=int, default=50, help="fine-tuning steps")
    parser.add_argument("--finetune-size", type=int, default=64)
    workloads, paths = ("despeckle", "finetune"), ("in-process", "subprocess")
    parser.add_argument("--workloads", nargs="+", choices=workloads, default=list(workloads))
    parser.add_argument("--paths", nargs="+", choices=paths, default=list(paths))
    parser.add_argument("--weights", help="checkpoint (default: the shipped model)")
    args = parser.parse_args()

    image = sitk.GetArrayFromImage(sitk.ReadImage(SAMPLE))
    rows, cols = slice(100, 100 + args.size), 200
    frames = np.stack([image[rows, cols + 4 * i:cols + 4 * i + args.size] for i in range(args.frames)])
    scene = slicer.vtkMRMLScene()
    volumes = {}
    for name, stack in (("despeckle", frames), ("finetune", frames[:2])):
        volumes[name] = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        slicer.util.updateVolumeFromArray(volumes[name], stack)
    logic = Speckle2SelfLogic(modelsDir="/tmp/speckle2self-responsiveness-models")
    common = {"device": "cpu", "weights": args.weights}
    workloads = {"despeckle": (f"despeckle {args.frames} frames of {args.size}x{args.size}", common),
                 "finetune": (f"fine-tune {args.steps} steps ({args.finetune_size} px crops), despeckle 2 frames",
                              {**common, "finetune_steps": args.steps, "finetune_size": args.finetune_size,
                               "save_finetuned": False})}
    import speckle2self.training  # noqa: F401  torch and MONAI imported once, as after a first run in Slicer

    paths = {"in-process": ("in-process, job stepped", logic.process_job, lambda job: job.step(), 0.0),
             "subprocess": ("separate process, polled", logic.process_in_subprocess, lambda job: job.poll(),
                            POLL_INTERVAL)}
    print("| workload | path | start call (s) | longest later call (s) | wall time (s) | later calls |")
    print("|---|---|---|---|---|---|")
    for workload in args.workloads:
        name, options = workloads[workload]
        for path, make, advance, pause in (paths[p] for p in args.paths):
            first, longest, wall, calls = run(lambda: make(volumes[workload], **options), advance, pause)
            print(f"| {name} | {path} | {first:.3f} | {longest:.3f} | {wall:.1f} | {calls} |", flush=True)


if __name__ == "__main__":
    main()
