"""`speckle2self bench`: every method on S-I/S-II/S-III and on real images, as one cancellable Job.

Nothing is tuned at run time: the methods' parameters are the constants in `peers`, fixed once with
`tune` (`speckle2self bench --tune`) on S-II images that the benchmark's test split does not use.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Generator

import numpy as np
from scipy import ndimage

from ..errors import UserError
from ..inference import resolve_device
from ..jobs import Job, Progress
from ..metrics import edge_beta, enl, gcnr, homogeneity, psnr, snr, ssim
from ..weights import load_checkpoint
from .peers import QUICK, Method, candidate, select
from .peers.learned import Budget, Trainer
from .sets import DEFAULT_DATA, TestSet, real_set, simulated_sets
from .simulate import simulate_set

EDGE_BAND = 3
"""Edge beta is measured within this many pixels of the echogenicity map's boundaries."""
TUNING_SEED = 20_000
"""Tuning images come from seeds here on, apart from the test (0...) and training (10,000...) splits."""


@dataclass(frozen=True)
class BenchConfig:
    """What a benchmark run does. `data`: the shared real-data folder, None to leave real images out."""

    size: int = 256
    test_count: int = 8
    train_count: int = 32
    budget: Budget = field(default_factory=lambda: Budget(seconds=90.0))
    methods: tuple[str, ...] | None = None
    data: Path | None = None
    real_count: int | None = None
    quick: bool = False
    weights: Path | None = None
    """Other Speckle2Self weights to score beside the shipped model (an extra row), or None."""


QUICK_CONFIG = BenchConfig(size=128, test_count=2, train_count=4, budget=Budget(seconds=1.5, size=64, width=8),
                           methods=QUICK, real_count=1, quick=True)
"""`bench --quick`: tiny images, few methods, seconds of training; for CI and smoke tests."""


def bench_config(quick: bool = False, seconds: float | None = None, methods: list[str] | None = None,
                 data: str | Path | None = None, count: int | None = None, device: str = "cpu",
                 weights: str | Path | None = None) -> BenchConfig:
    """The full or quick configuration with the command line's overrides. Without `data` the shared
    folder beside the repository is used when it exists; a `data` folder that does not exist is an error."""
    config = QUICK_CONFIG if quick else BenchConfig()
    if data is None:
        folder = DEFAULT_DATA if DEFAULT_DATA.is_dir() else None
    elif Path(data).is_dir():
        folder = Path(data)
    else:
        raise UserError(f"Data folder {data} not found", "pass the shared data folder to --data, or leave it out")
    if seconds is not None and not seconds > 0:
        raise UserError(f"The training budget must be positive, got {seconds}", "e.g. --budget 90")
    if count is not None and count < 1:
        raise UserError(f"The image count must be at least 1, got {count}", "e.g. --count 8")
    select(methods)  # unknown names fail here, before any work
    if weights is not None:
        load_checkpoint(weights)  # so do missing or foreign weights
    budget = replace(config.budget, seconds=seconds or config.budget.seconds, device=str(resolve_device(device)))
    return replace(config, budget=budget, data=folder, methods=tuple(methods) if methods else config.methods,
                   test_count=count or config.test_count, weights=Path(weights) if weights else None)


@dataclass
class BenchResult:
    """Every score per method, set, metric and image, and one example image per set for the figure."""

    config: BenchConfig
    sets: list[TestSet]
    methods: list[Method]
    skipped: dict[str, str]
    """Method name -> why it did not run."""
    scores: dict[str, dict[str, dict[str, list[float]]]]
    """method key -> set name -> metric -> one value per image."""
    examples: dict[str, dict[str, np.ndarray]]
    """set name -> "input", "clean" (simulations) or a method key -> the example image."""
    example_index: dict[str, int]
    seconds: float


def eight_bit(image: np.ndarray) -> np.ndarray:
    """[0, 1] display values to 8-bit grey levels, without stretching (what the screen would show)."""
    return np.rint(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def _defined(metric: Callable[..., float], *args) -> float:
    """The metric, or NaN where it is undefined for this output (e.g. a flat image has no edges or spread)."""
    try:
        value = metric(*args)
    except (UserError, ZeroDivisionError, FloatingPointError):
        return float("nan")
    return value if np.isfinite(value) else float("nan")


def measure(output: np.ndarray, regions: dict[str, np.ndarray], clean: np.ndarray | None = None) -> dict[str, float]:
    """Hom and gCNR on the 8-bit display image, SNR and ENL on the homogeneous region ([0, 1] display
    values), and against a clean reference PSNR, SSIM and edge beta."""
    display = eight_bit(output)
    scores = {"hom": homogeneity(display),
              "gcnr": _defined(gcnr, display, regions["target"], regions["background"]),
              "snr": _defined(snr, output, regions["homogeneous"]),
              "enl": _defined(enl, output, regions["homogeneous"])}
    if clean is not None:
        band = ndimage.binary_dilation(regions["edges"], iterations=EDGE_BAND)
        scores.update(psnr=psnr(clean, output), ssim=ssim(clean, output),
                      beta=_defined(edge_beta, clean, output, band))
    return scores


def _relay(job: Job, trainer: Trainer, done: float, total: float, prefix: str) -> Generator[Progress, None, object]:
    """Run a trainer to its end, reporting each step and honouring cancel; returns its denoiser."""
    while True:
        job.check()
        try:
            message = next(trainer)
        except StopIteration as stop:
            return stop.value
        yield job.progress(done, total, f"{prefix}: {message}")


def benchmark_job(config: BenchConfig) -> Job[BenchResult]:
    """The whole benchmark as a job: progress per image and per training step, cancel any time."""
    chosen = select(list(config.methods) if config.methods else None)
    if config.weights is not None:
        chosen.append(candidate(str(config.weights)))
    methods = [m for m in chosen if m.available()]
    skipped = {m.name: f"`{m.requires}` is not installed (pip install 'speckle2self[bench]')"
               for m in chosen if not m.available()}

    def work(job: Job) -> Generator[Progress, None, BenchResult]:
        start = time.perf_counter()
        yield job.progress(0, 1, "making the image sets")
        sets = simulated_sets(config.test_count, config.train_count, config.size)
        if config.data is not None:
            sets.append(real_set(config.data, config.real_count))
        tasks = [(s, m) for s in sets for m in methods if s.simulated or not m.uses_clean_data]
        total = sum(len(s.images) + m.trains for s, m in tasks)
        done = 0
        scores: dict = {m.key: {} for m in methods}
        example_index = {s.name: i % len(s.images) for i, s in enumerate(sets)}  # a different phantom per set
        examples = {s.name: {"input": s.images[example_index[s.name]]} for s in sets}
        for s in filter(lambda s: s.simulated, sets):
            examples[s.name]["clean"] = s.clean[example_index[s.name]]
        for s, m in tasks:
            prefix = f"{m.name} on {s.name}"
            if m.trains:
                denoiser = yield from _relay(job, m.train(s.training, config.budget), done, total, prefix)
                done += 1
            else:
                denoiser = m.denoiser(config.budget)
            per_metric: dict[str, list[float]] = {}
            for i, image in enumerate(s.images):
                job.check()
                began = time.perf_counter()
                output = denoiser(image)
                elapsed_ms = 1000 * (time.perf_counter() - began)
                values = measure(output, s.regions[i], s.clean[i] if s.simulated else None)
                for name, value in {**values, "ms": elapsed_ms}.items():
                    per_metric.setdefault(name, []).append(value)
                if i == example_index[s.name]:
                    examples[s.name][m.key] = output
                done += 1
                yield job.progress(done, total, prefix)
            scores[m.key][s.name] = per_metric
        return BenchResult(config, sets, methods, skipped, scores, examples, example_index,
                           time.perf_counter() - start)

    return Job(work, "benchmark")


def _grid_scores(method: Method, images: list, budget: Budget) -> list[tuple[float, float, float]]:
    """(value, mean PSNR, mean SSIM) for each value of the method's grid; a method with a trajectory
    (Deep Image Prior) is run once per image and read at each grid value."""
    outputs: dict[float, list[np.ndarray]] = {value: [] for value in method.grid}
    for image in images:
        if method.trajectory is not None:
            params = {k: v for k, v in method.params.items() if k != method.tuned}
            steps = method.trajectory(image.noisy, budget, max(method.grid), math.gcd(*method.grid), **params)
            for value, output in steps:
                outputs.get(value, []).append(output)
        else:
            for value in method.grid:
                variant = replace(method, params={**method.params, method.tuned: value})
                outputs[value].append(variant.denoiser(budget)(image.noisy))
    return [(value, float(np.mean([psnr(i.clean, o) for i, o in zip(images, outs)])),
             float(np.mean([ssim(i.clean, o) for i, o in zip(images, outs)]))) for value, outs in outputs.items()]


def tune(count: int = 4, size: int = 256, methods: list[str] | None = None, device: str = "cpu") -> list[dict]:
    """Score each tunable method's grid of its main parameter on `count` S-II images (seeds apart from
    the benchmark's splits). Returns rows (method, parameter, value, psnr, ssim, best); the best value
    has the highest mean PSNR: the fidelity measure on which classical filters beat Speckle2Self in the
    paper, so tuning on it favours the peers."""
    budget = Budget(seconds=0.0, device=str(resolve_device(device)))
    images = simulate_set("S-II", count, size, seed=TUNING_SEED)
    rows = []
    for method in select(methods):
        if not method.grid or not method.available():
            continue
        scored = _grid_scores(method, images, budget)
        best = max(scored, key=lambda item: item[1])[0]
        rows += [{"method": method.key, "parameter": method.tuned, "value": value, "psnr": p, "ssim": q,
                  "best": value == best} for value, p, q in scored]
    return rows
