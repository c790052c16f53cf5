"""`speckle2self bench`: every method on S-I/S-II/S-III, on real images and on the real carotid scans
whose published output is the reference, as one cancellable Job. Each output is scored twice: as the
method gives it ("raw", the "as published" tables) and after the one calibration chain every method gets
(`calibration`).

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
from . import published as pub
from .calibration import calibrated
from .peers import QUICK, Method, candidate, select
from .peers.learned import Budget, Trainer
from .sets import DEFAULT_DATA, TestSet, eight_bit, real_set, simulated_sets
from .simulate import PHANTOMS, simulate_set, to_intensity
from .structure import fwhm_ratio, grid_score

EDGE_BAND = 3
"""Edge beta is measured within this many pixels of the echogenicity map's boundaries."""
TUNING_SEED = 20_000
"""Tuning images come from seeds here on, apart from the test (0...) and training (10,000...) splits."""
CHAINS = ("raw", "calibrated")
"""Each output as the method gives it, and after `calibration.calibrated`."""


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
    reference: Path | None = None
    """The carotid_published folder (the method's published output on real scans), None to leave it out."""
    clips: tuple[str, ...] = pub.CLIPS
    carotid_count: int | None = None
    """Frames of the carotid clips to use (the first ones), None for all."""
    phantoms: tuple[str, ...] = PHANTOMS
    """The simulated test images cycle through these."""
    quick: bool = False
    weights: Path | None = None
    """Other Speckle2Self weights to score beside the shipped model (an extra row), or None."""


QUICK_CONFIG = BenchConfig(size=128, test_count=2, train_count=4, budget=Budget(seconds=1.5, size=64, width=8),
                           methods=QUICK, real_count=1, clips=pub.CLIPS[:1], carotid_count=1,
                           phantoms=("cyst", "points"), quick=True)
"""`bench --quick`: tiny images, few methods, one carotid frame, seconds of training; for CI and smoke tests."""


def _folder(given: str | Path | None, default: Path, option: str, what: str) -> Path | None:
    """`given`, which must exist; without it `default` where it exists, else None."""
    if given is None:
        return default if default.is_dir() else None
    if not Path(given).is_dir():
        raise UserError(f"{what} folder {given} not found", f"pass the shared {what.lower()} folder to {option}, "
                        "or leave it out")
    return Path(given)


def bench_config(quick: bool = False, seconds: float | None = None, methods: list[str] | None = None,
                 data: str | Path | None = None, count: int | None = None, device: str = "cpu",
                 weights: str | Path | None = None, reference: str | Path | None = None) -> BenchConfig:
    """The full or quick configuration with the command line's overrides. Without `data` (`reference`) the
    shared folder beside the repository is used when it exists; a folder given that does not exist is an
    error."""
    config = QUICK_CONFIG if quick else BenchConfig()
    folder = _folder(data, DEFAULT_DATA, "--data", "Data")
    reference = _folder(reference, pub.DEFAULT_REFERENCE, "--reference", "Reference")
    if seconds is not None and not seconds > 0:
        raise UserError(f"The training budget must be positive, got {seconds}", "e.g. --budget 90")
    if count is not None and count < 1:
        raise UserError(f"The image count must be at least 1, got {count}", "e.g. --count 8")
    select(methods)  # unknown names fail here, before any work
    if weights is not None:
        load_checkpoint(weights)  # so do missing or foreign weights
    budget = replace(config.budget, seconds=seconds or config.budget.seconds, device=str(resolve_device(device)))
    return replace(config, budget=budget, data=folder, reference=reference,
                   methods=tuple(methods) if methods else config.methods,
                   test_count=count or config.test_count, weights=Path(weights) if weights else None)


@dataclass
class BenchResult:
    """Every score per method, set, metric and image, and one example image per set for the figure."""

    config: BenchConfig
    sets: list[TestSet]
    methods: list[Method]
    skipped: dict[str, str]
    """Method name -> why it did not run."""
    scores: dict[str, dict[str, dict[str, dict[str, list[float]]]]]
    """chain ("raw", "calibrated") -> method key -> set name -> metric -> one value per image."""
    examples: dict[str, dict[str, np.ndarray]]
    """set name -> "input", "clean" (simulations; the published frame on the carotid set) or a method key
    -> the example image (with display gamma 2 on the carotid set, as it is scored)."""
    example_index: dict[str, int]
    seconds: float
    paper: list[pub.PaperRow] = field(default_factory=list)
    """The published outputs on the carotid set (the authors' model and the paper's peers)."""

    def mean(self, key: str, set_name: str, metric: str, chain: str = "raw") -> float:
        """A method's mean score on a set (NaN where it did not run or the metric is undefined)."""
        return finite_mean(self.scores[chain].get(key, {}).get(set_name, {}).get(metric, []))


def finite_mean(values: list[float]) -> float:
    """The mean of the finite values, NaN when there are none."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


def _defined(metric: Callable[..., float], *args) -> float:
    """The metric, or NaN where it is undefined for this output (e.g. a flat image has no edges or spread)."""
    try:
        value = metric(*args)
    except (UserError, ZeroDivisionError, FloatingPointError):
        return float("nan")
    return value if np.isfinite(value) else float("nan")


def measure(output: np.ndarray, regions: dict[str, np.ndarray], clean: np.ndarray | None = None,
            setting: str | None = None) -> dict[str, float]:
    """Hom and gCNR on the 8-bit display image, SNR and ENL on the homogeneous region ([0, 1] display
    values), and against a clean reference (of simulation `setting`) PSNR, SSIM, edge beta, the grid score
    and, where the image has point targets, their FWHM ratio (in intensity)."""
    display = eight_bit(output)
    scores = {"hom": homogeneity(display),
              "gcnr": _defined(gcnr, display, regions["target"], regions["background"]),
              "snr": _defined(snr, output, regions["homogeneous"]),
              "enl": _defined(enl, output, regions["homogeneous"])}
    if clean is not None:
        band = ndimage.binary_dilation(regions["edges"], iterations=EDGE_BAND)
        points = regions.get("points")
        fwhm = (_defined(fwhm_ratio, to_intensity(clean, setting), to_intensity(output, setting), points)
                if points is not None and points.any() else float("nan"))
        scores.update(psnr=psnr(clean, output), ssim=ssim(clean, output), fwhm=fwhm,
                      beta=_defined(edge_beta, clean, output, band), grid=_defined(grid_score, clean, output))
    return scores


def calibrated_clean(s: TestSet) -> dict[str, float]:
    """What the calibration chain alone does to a perfect output: each clean image of simulated set `s`
    calibrated against its noisy input and scored as an output would be; means over the set."""
    values = [measure(calibrated(clean, image), regions, clean, s.name)
              for clean, image, regions in zip(s.clean, s.images, s.regions)]
    return {metric: finite_mean([v[metric] for v in values]) for metric in values[0]}


def score(s: TestSet, i: int, output: np.ndarray) -> dict[str, float]:
    """The metrics of an output of image `i` of set `s`: against the published output on the carotid set,
    else `measure`."""
    if s.against_published:
        return pub.scores(output, s.published[i])
    return measure(output, s.regions[i], s.clean[i] if s.simulated else None, s.name if s.simulated else None)


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
        sets = simulated_sets(config.test_count, config.train_count, config.size, config.phantoms)
        if config.data is not None:
            sets.append(real_set(config.data, config.real_count))
        paper = []
        if config.reference is not None:
            sets.append(pub.carotid_set(config.reference, config.clips, config.carotid_count))
            paper = pub.paper_rows(config.reference, config.clips, config.carotid_count)
        tasks = [(s, m) for s in sets for m in methods if s.simulated or not m.uses_clean_data]
        total = sum(len(s.images) + m.trains for s, m in tasks)
        done = 0
        scores: dict = {chain: {m.key: {} for m in methods} for chain in CHAINS}
        example_index = {s.name: i % len(s.images) for i, s in enumerate(sets)}  # a different phantom per set
        examples = {s.name: {} for s in sets}
        for s in sets:
            index = example_index[s.name]
            if s.against_published:
                examples[s.name].update(input=pub.shown(s.images[index]) / 255, clean=s.published[index] / 255)
            else:
                examples[s.name].update(input=s.images[index], clean=s.clean[index] if s.simulated else None)
        for s, m in tasks:
            prefix = f"{m.name} on {s.name}"
            if m.trains:
                denoiser = yield from _relay(job, m.train(s.training, config.budget), done, total, prefix)
                done += 1
            else:
                denoiser = m.denoiser(config.budget)
            per_chain: dict[str, dict[str, list[float]]] = {chain: {} for chain in CHAINS}
            for i, image in enumerate(s.images):
                job.check()
                began = time.perf_counter()
                output = denoiser(image)
                elapsed_ms = 1000 * (time.perf_counter() - began)
                raw = {**score(s, i, output), "ms": elapsed_ms}
                for chain, values in (("raw", raw), ("calibrated", score(s, i, calibrated(output, image)))):
                    for name, value in values.items():
                        per_chain[chain].setdefault(name, []).append(value)
                if i == example_index[s.name]:
                    examples[s.name][m.key] = pub.shown(output) / 255 if s.against_published else output
                done += 1
                yield job.progress(done, total, prefix)
            for chain in CHAINS:
                scores[chain][m.key][s.name] = per_chain[chain]
        return BenchResult(config, sets, methods, skipped, scores, examples, example_index,
                           time.perf_counter() - start, paper)

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
