"""The int8 path: the inference network quantised to 8-bit integers with NNCF and run by OpenVINO.

Each network is converted and quantised once (keyed by its tensors, `RECIPE` and the calibration frames),
kept in the cache folder and compiled once per process with dynamic frame sizes; the shipped model's int8
twins ship with them (models/int8_default/ and int8_fast/, made by
`python -m speckle2self.bench.int8_twins`). Quantising takes seconds
to tens of seconds, so 'auto' only does it for a job large enough to earn it back (`WORTH_PIXELS`).

The calibration frames are real scans bundled with the package (`models/calibration_frames.npz`, BSD-3
frames of PlusLibData, see models/README.md). Activation ranges are NNCF's histogram ranges (the least
quantisation error over all calibration frames): the frames' extremes left the despeckled PyMUST disk frames
38.4-39.4 dB from the fp32 path (42.3-42.8 so, recipe 3), and ranges averaged over frames clipped a bright specular
wall of a held-out prostate frame (8-bit error up to 97 levels; 26 so). The decoder's transposed
convolutions are converted as convolutions and pixel shuffles (`subpixel`): OpenVINO runs transposed ones in
f32 only (19.6 instead of 26.8 ms per 512 x 512 frame). The last decoder level (the
transposed convolution into it, its residual block and the output layer) stays in floating point, bf16
where that is fast: quantised, it cost most of the fidelity (its residual block quantised as well: 33.5-38.2
dB); narrower networks keep two levels so.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
import weakref
from pathlib import Path

import numpy as np
import torch

from .network import InferenceNet, pad_to_multiple
from .subpixel import openvino_model
from . import weights

RECIPE = "3"
"""Bumped whenever the quantisation changes, so that cached models of an earlier recipe are rebuilt."""
CALIBRATION = weights.MODELS / "calibration_frames.npz"
SHIPPED = {name: weights.MODELS / f"int8_{name}" for name in weights.SHIPPED}
"""The shipped models' int8 twins (model.xml and .bin, and key.txt: the `key` of the network it was made from)."""
WORTH_PIXELS = 300 * 512 * 512
"""'auto' quantises a network not quantised yet only for a job of at least this many pixels: preparing
takes about 15 s on two cores and saves tens of milliseconds per 512 x 512 frame (docs/performance.md)."""
FLOAT_LAYERS = (r".*decoder\.[567][./].*",)
"""OpenVINO node names (from the module path) of the layers kept in floating point."""
NARROW_FLOAT_LAYERS = (r".*decoder\.[34567][./].*",)
"""The same for networks narrower than the paper's 32 (the fast student): the last two decoder levels, as
with the last one alone its despeckled held-out real frames were 36.3-41.3 dB from its fp32 path's (41.8-47.0 so, recipe 3)."""


def float_layers(net: InferenceNet) -> tuple[str, ...]:
    """The layers of `net` kept in floating point."""
    return FLOAT_LAYERS if next(net.encoder.parameters()).shape[0] >= 32 else NARROW_FLOAT_LAYERS


def missing() -> str | None:
    """Why the int8 path cannot run here (a one-line reason), or None when it can."""
    for module in ("openvino", "nncf"):  # looked up, not imported: importing NNCF takes most of a second
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    return None


def cache_folder() -> Path:
    """Where quantised models are kept: $SPECKLE2SELF_CACHE, else ~/.cache/speckle2self."""
    return Path(os.environ.get("SPECKLE2SELF_CACHE") or Path.home() / ".cache" / "speckle2self")


def calibration_frames() -> list[np.ndarray]:
    """The bundled real frames as the network sees them: (1, 1, H, W) float32 in [0, 1], padded, and
    each mirrored left to right as well."""
    from .frames import normalise

    with np.load(CALIBRATION) as bundle:
        frames = [bundle[name] for name in bundle.files]
    units = [pad_to_multiple(torch.from_numpy(normalise(f)[0][None, None])).numpy() for f in frames]
    return units + [np.ascontiguousarray(u[..., ::-1]) for u in units]


def quantise(net: InferenceNet, target: Path) -> None:
    """Convert `net` to OpenVINO, quantise it and save it as target/model.xml, all or nothing."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    nncf.set_log_level(logging.ERROR)
    calibration = calibration_frames()
    model = openvino_model(net, torch.from_numpy(calibration[0]))
    quantised = nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration),
                              preset=nncf.QuantizationPreset.MIXED,
                              ignored_scope=nncf.IgnoredScope(patterns=list(float_layers(net))),
                              advanced_parameters=AdvancedQuantizationParameters(
                                  activations_range_estimator_params=RangeEstimatorParametersSet.HISTOGRAM))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".building-"))
    try:
        ov.save_model(quantised, str(staging / "model.xml"))
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the model from other users of a shared cache
        try:
            staging.rename(target)
        except OSError:  # another process finished the same model first: keep theirs
            if not (target / "model.xml").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_keys: "weakref.WeakKeyDictionary[InferenceNet, tuple[tuple[int, ...], str]]" = weakref.WeakKeyDictionary()
"""Each network's key with its tensors' version counters, so that an unchanged network is not hashed again."""


def key(net: InferenceNet) -> str:
    """Names a quantised model: the network's tensors, the recipe and the calibration frames (an OpenVINO
    model file is readable by later OpenVINO versions, so theirs is not part of it)."""
    tensors = [*net.parameters(), *net.buffers()]  # cheaper than state_dict(), hashed only when changed
    versions = tuple(id(t) for t in tensors) + tuple(t._version for t in tensors)  # bumped by in-place changes
    known = _keys.get(net)
    if known is None or known[0] != versions:
        recipe = hashlib.sha256(repr((RECIPE, float_layers(net))).encode() + CALIBRATION.read_bytes()).hexdigest()
        known = _keys[net] = (versions, f"{weights.tensor_digest(net.state_dict())[:24]}-{recipe[:12]}")
    return known[1]


def cached(net: InferenceNet) -> Path | None:
    """The int8 model of `net` (model.xml) where it is shipped or cached already, else None."""
    name = key(net)
    for twin in SHIPPED.values():
        if (twin / "key.txt").is_file() and (twin / "key.txt").read_text().strip() == name:
            return twin / "model.xml"
    path = cache_folder() / "int8" / name / "model.xml"
    return path if path.is_file() else None


def quantised_model(net: InferenceNet) -> Path:
    """The int8 model of `net` (model.xml), quantised into the cache folder now if it is not there yet."""
    path = cached(net)
    if path is None:
        path = cache_folder() / "int8" / key(net) / "model.xml"
        quantise(net, path.parent)
    return path


class Int8Network:
    """Callable like the network on a (B, 1, H, W) float32 array padded to the downsampling multiple, from as
    many threads at once as it has `streams` (each thread gets its own inference request): one stream runs a
    batch on every thread (least latency), several run that many batches side by side (most frames a second:
    the work between network calls of one batch overlaps another's network call)."""

    def __init__(self, path: Path, bf16: bool, streams: int = 1):
        import openvino as ov

        config = {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
                  "INFERENCE_NUM_THREADS": torch.get_num_threads(),
                  **({"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams} if streams > 1
                     else {"PERFORMANCE_HINT": "LATENCY"})}
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self._local = threading.local()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)}, share_inputs=True)[0]


@functools.lru_cache(maxsize=4)
def _network(path: str, bf16: bool, threads: int, streams: int) -> Int8Network:
    return Int8Network(Path(path), bf16, streams)


def int8_network(net: InferenceNet, bf16: bool, streams: int = 1) -> Int8Network:
    """The int8 twin of `net`, compiled for this process with `streams` (cached on disk across processes)."""
    return _network(str(quantised_model(net)), bf16, torch.get_num_threads(), streams)
