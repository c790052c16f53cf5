"""Despeckling: one pass through the large-scale encoder and the shared decoder, frames in batches."""
from __future__ import annotations

import functools
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from . import frames as fr
from . import int8
from . import scale as sc
from .errors import UserError
from .jobs import Job
from .network import DOWNSAMPLING, InferenceNet, Speckle2SelfNet, pad_to_multiple
from .postprocess import SMOOTHING, brightness_matched, degridded, log_bias_removed, smoothed
from .precision import autocast, bf16_is_fast, resolve_precision
from .weights import DEFAULT_WEIGHTS, load_checkpoint, read_card, stamped_sha256

GIB = 2 ** 30
MEMORY_LIMIT = 8 * GIB
"""Default for the most memory (bytes) one batch may take; a frame that needs more is refused up front."""
CPU_BATCH_PIXELS = 2 * 256 * 256
"""Automatic CPU batches hold about this many pixels: larger ones fall out of cache and run slower per
frame (docs/performance.md: 512x512 is fastest one frame at a time, 256x256 two at a time)."""
GPU_BATCH = 16
STREAMS = 2
"""Batches the int8 path despeckles side by side (`streams_for`): the resampling, grid removal and brightness
matching of one batch then run beside the network of the other (20 frames of 512 x 512 at --scale auto on two
cores: 290 ms a frame against 328 one batch at a time; README, "Speed")."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' is cuda when present, else cpu; asking for cuda without one is a user error."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("No CUDA GPU is available to this torch build", "use --device cpu or auto")
    if name.split(":")[0] not in ("cpu", "cuda"):
        raise UserError(f"Unknown device {name!r}", "use auto, cpu or cuda")
    return torch.device(name)


@functools.lru_cache(maxsize=4)
def _cached_model(path: str, digest: str, device: str) -> InferenceNet:
    model, _ = load_checkpoint(Path(path))
    return model.inference_path().to(device).eval()


def inference_model(weights: Path | str | None = None, device: str | torch.device = "auto") -> InferenceNet:
    """The inference path of a checkpoint (default: the shipped model), cached per file and device."""
    path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise UserError(f"Weights file {path} not found", "check --weights or reinstall the package")
    return _cached_model(str(path.resolve()), stamped_sha256(path), str(resolve_device(device)))


def training_grain(weights: Path | str | None = None) -> float:
    """The speckle grain (pixels) a checkpoint was trained at, from its card; `scale.REFERENCE_GRAIN` for cards
    that record none."""
    card = read_card(Path(weights) if weights is not None else DEFAULT_WEIGHTS)
    return float(card.get("speckle_grain") or sc.REFERENCE_GRAIN)


def _as_inference(model: InferenceNet | Speckle2SelfNet) -> InferenceNet:
    return model.inference_path() if isinstance(model, Speckle2SelfNet) else model


def memory_needed(h: int, w: int, width: int) -> int:
    """Bytes to despeckle one h x w frame with a network of `width`: about 40 + 7 x width bytes per padded
    pixel (measured on the CPU: network activations plus the numpy working copies)."""
    padded = -(-h // DOWNSAMPLING) * -(-w // DOWNSAMPLING) * DOWNSAMPLING ** 2
    return padded * (40 + 7 * width)


def _frames_that_fit(h: int, w: int, factor: float, net: InferenceNet, memory_limit: int) -> int:
    """How many h x w frames, resampled by `factor`, a batch may hold within `memory_limit`; UserError when not
    even one."""
    sh, sw = sc.scaled_shape(h, w, factor)
    needed = memory_needed(sh, sw, next(net.encoder.parameters()).shape[0])
    if needed > memory_limit:
        at = f" at speckle scale {factor:g}x ({sh}x{sw} pixels)" if factor != 1 else ""
        raise UserError(f"Despeckling a {h}x{w} frame would need about {needed / GIB:.1f} GiB of memory{at}, more "
                        f"than the limit of {memory_limit / GIB:.1f} GiB",
                        "crop or downsample the image, " + ("use --scale 1, " if factor > 1 else "")
                        + "or raise the limit (--max-memory)")
    return memory_limit // needed


def automatic_batch(h: int, w: int, device: torch.device) -> int:
    """Frames per batch when none is asked for: cache-sized on the CPU, 16 on a GPU."""
    if device.type == "cuda":
        return GPU_BATCH
    return max(1, CPU_BATCH_PIXELS // (h * w))


def int8_pays(net: InferenceNet, pixels: int) -> bool:
    """Whether 'auto' should despeckle `pixels` with the int8 twin of `net`: it is ready, or the job is
    large enough to earn its preparation back."""
    return pixels >= int8.WORTH_PIXELS or int8.cached(net) is not None


def streams_for(precision: str, device: torch.device, batches: int, fitting: int) -> int:
    """Batches despeckled side by side: STREAMS on the int8 path when the job has that many batches, the CPU
    that many threads and the memory limit room for a frame per stream, else one. Torch's own path keeps one:
    its convolutions already use every thread, and two of them at once only contend."""
    if precision == "int8" and device.type == "cpu" and min(batches, torch.get_num_threads(), fitting) >= STREAMS:
        return STREAMS
    return 1


def network_function(net: InferenceNet, precision: str, device: torch.device, streams: int = 1):
    """`net` at a resolved `precision` as a function of a padded (B, 1, H, W) CPU tensor to a (B, H, W)
    float32 array; 'int8' is its OpenVINO twin (`int8`), prepared now, callable from `streams` threads at once."""
    if precision == "int8":
        fast = int8.int8_network(net, bf16_is_fast(device), streams)
        return lambda batch: fast(batch.numpy())[:, 0]

    def run(batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode(), autocast(precision, device):
            return net(batch.to(device))[:, 0].float().cpu().numpy()
    return run


def in_order(function, items: list, workers: int, check=lambda: None):
    """(item, function(item)) for each of `items` in order, computed by `workers` threads with at most that many
    in flight (inline for one); `check()` runs before each item starts, and what it raises stops the rest."""
    if workers == 1:
        for item in items:
            check()
            yield item, function(item)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending = deque()
        for item in items:
            check()
            pending.append((item, pool.submit(function, item)))
            if len(pending) == workers:
                item, future = pending.popleft()
                yield item, future.result()
        while pending:
            item, future = pending.popleft()
            yield item, future.result()


def despeckle_job(array: np.ndarray, weights: Path | str | None = None,
                  model: InferenceNet | Speckle2SelfNet | None = None, device: str | torch.device = "auto",
                  gamma: float = 1.0, batch_size: int | None = None, memory_limit: int = MEMORY_LIMIT,
                  precision: str = "auto", match_brightness: bool = True, smoothing: float = SMOOTHING,
                  log_bias: bool = False, degrid: bool = True, scale: float | str = "auto",
                  grain: float | None = None) -> Job[np.ndarray]:
    """A job that despeckles `array` (see `frames` for layouts) and returns a new array of the same
    shape, dtype and per-frame intensity range. The input is never modified. Batches (automatic by
    default) are made smaller to stay within `memory_limit` bytes; a frame that alone needs more is
    refused before any work. `precision` 'fp32' is the reference path; on the CPU 'auto' is 'int8' where
    OpenVINO and NNCF are installed and the network's int8 twin is ready (the shipped model's ships with it)
    or the job is large enough to earn its quantisation back (`int8.WORTH_PIXELS`), else bf16 where fast.
    Each output frame then goes through `postprocess`, before the display `gamma`: `degrid` removes the
    decoder's 16-pixel periodic pattern (a notch filter on the padded output), `match_brightness` fits
    it to its input's brightness (False keeps the network's own min-max mapping), `smoothing` is a Gaussian
    sigma in pixels (default 0: none) and `log_bias` True maps the mean of the log-speckle to the log of the
    mean intensity (default False keeps the mean displayed value: the log-bias step lowered the similarity to
    the method's published output on real carotid scans, SSIM 0.716 -> 0.657 with the previous model).
    `scale` resamples every frame by a factor before the network and back after (`scale`: bicubic in, area
    out): 'auto' chooses the factor that brings the speckle grain measured on the input to the `grain` the
    model was trained at (None: from the weights' card); 1 runs on the input's own grid. The job's `info`
    says what was measured and chosen."""
    layout = fr.validate(array)
    if not gamma > 0:
        raise UserError(f"Gamma must be positive, got {gamma}", "use e.g. --gamma 1.0")
    if not 0 <= smoothing < float("inf"):
        raise UserError(f"Smoothing must be a finite number of pixels, 0 or more, got {smoothing}",
                        "use e.g. --smoothing 1")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"Batch size must be at least 1, got {batch_size}", "use e.g. 4")
    dev = resolve_device(device)
    net = (_as_inference(model).to(dev).eval() if model is not None else inference_model(weights, dev))
    total = fr.frame_count(layout)
    h, w = fr.frame_shape(array, layout)
    info = sc.choose([fr.grey_frame(array, layout, i, sc.MEASURED_SIDE) for i in sc.spread(total)], scale,
                     training_grain(weights) if grain is None else grain)
    factor = info["factor"]
    sh, sw = sc.scaled_shape(h, w, factor)
    worth = precision == "auto" and dev.type == "cpu" and int8_pays(net, total * sh * sw)  # hashes the net once
    precision = resolve_precision(precision, dev, despeckling=True, int8_pays=worth)
    fitting = _frames_that_fit(h, w, factor, net, memory_limit)
    batch_size = min(batch_size or automatic_batch(sh, sw, dev), fitting)
    streams = streams_for(precision, dev, -(-total // batch_size), fitting)
    batch_size = min(batch_size, fitting // streams)  # every batch in flight within the memory limit
    at = f" at {factor:g}x" if factor != 1 else ""

    def despeckled(indices: range, forward) -> list[np.ndarray]:
        """The output frames of one batch: resampled, through the network, back, post-processed."""
        grey = [fr.grey_frame(array, layout, i) for i in indices]
        normalised = [fr.normalise(g) for g in grey]
        batch = sc.to_grid(torch.from_numpy(np.stack([n[0] for n in normalised])[:, None]), factor)
        padded = forward(pad_to_multiple(batch))
        on_grid = np.stack([(degridded(p) if degrid else p)[:sh, :sw] for p in padded])
        result = sc.from_grid(torch.from_numpy(on_grid)[:, None], (h, w), factor)[:, 0].numpy()
        frames = []
        for g, unit, (source, lo, hi) in zip(grey, result, normalised):
            outside = fr.background(g)
            inside = ~outside
            if match_brightness:
                unit = brightness_matched(unit, source, inside)
            unit = smoothed(unit, inside, smoothing)
            if log_bias:
                unit = log_bias_removed(unit, source, inside)
            if gamma != 1.0:
                unit = unit ** gamma
            frame = fr.to_range(unit, lo, hi, array.dtype)
            frame[outside] = 0
            frames.append(frame)
        return frames

    def work(job: Job):
        out = array.copy() if layout.colour else np.empty_like(array)
        if precision == "int8" and int8.cached(net) is None:
            yield job.progress(0, total, "preparing the int8 model of these weights (once)")
        forward = network_function(net, precision, dev, streams)
        yield job.progress(0, total, "despeckling" + at)
        batches = [range(start, min(start + batch_size, total)) for start in range(0, total, batch_size)]
        for indices, frames in in_order(lambda indices: despeckled(indices, forward), batches, streams, job.check):
            for i, frame in zip(indices, frames):
                fr.put_frame(out, layout, i, frame)
            yield job.progress(indices[-1] + 1, total, f"frame {indices[-1] + 1}/{total}{at}")
        return out

    return Job(work, "despeckling", info={"scale": info})


def despeckle(array: np.ndarray, **options) -> np.ndarray:
    """Despeckle an image, stack or sequence; options as for `despeckle_job`."""
    return despeckle_job(array, **options).run()
