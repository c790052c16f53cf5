"""Despeckle an archive on Dask: every image file under a folder into the same place under another,
on a local cluster or an existing Dask scheduler, resumable through a manifest in the output folder.

Each file is one Dask task that runs `files.despeckle_file`, the per-file work of `speckle2self despeckle`,
so outputs are the same bytes. A worker loads the weights once (`inference.inference_model` is cached per
process). The manifest (`speckle2self-batch.json`) is rewritten atomically after each file; a rerun skips
files done with the same input sha256, weights and options, redoes changed ones and retries failures only
when asked.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from distributed import Client, KilledWorker, LocalCluster, as_completed, get_worker

from .allocator import keep_freed_blocks
from .errors import UserError
from .image_io import SUPPORTED_EXTENSIONS
from .weights import DEFAULT_WEIGHTS, atomic_write, code_version, sha256, stamped_sha256

MANIFEST = "speckle2self-batch.json"
FORMAT = "speckle2self-batch"
DATA_FILE = re.compile(rb"^(?:ElementDataFile\s*=|data ?file:)\s*(.+?)\s*$", re.M | re.I)
"""The data file line of a detached MetaImage (.mhd) or NRRD (.nhdr) header."""
PROBE = np.zeros((16, 16), np.float32)
"""A smallest frame, to check options and weights on the client the way `despeckle_job` does."""


@dataclass(frozen=True)
class Settings:
    """What every task of one run is given."""

    weights: str | None
    """Absolute path, or None for each worker's shipped model."""
    weights_sha256: str
    options: dict
    """`despeckle_file` options (compress and the `despeckle_job` options), as the manifest records them."""
    retry_failed: bool


# ----------------------------------------------------------------------------------------------- files

def find_inputs(input_dir: Path, output_dir: Path, pattern: str | None = None) -> list[str]:
    """Relative POSIX paths of the supported image files under `input_dir`, recursively, matching the glob
    `pattern` when given; hidden files and folders and everything under `output_dir` are left out."""
    found = []
    for path in sorted(input_dir.rglob(pattern or "*")):
        relative = path.relative_to(input_dir)
        if (path.is_file() and path.name.lower().endswith(SUPPORTED_EXTENSIONS) and not path.is_relative_to(output_dir)
                and not any(part.startswith(".") for part in relative.parts)):
            found.append(relative.as_posix())
    return found


def input_sha256(path: Path) -> str:
    """sha256 of an image file, combined with its data file's when it is a detached header (.mhd, .nhdr)."""
    digest = sha256(path)
    if not path.name.lower().endswith((".mhd", ".nhdr")):
        return digest
    with open(path, "rb") as header:
        match = DATA_FILE.search(header.read(1 << 16))
    data = path.parent / match.group(1).decode(errors="replace") if match else None
    if data is None or not data.is_file():
        return digest
    return hashlib.sha256(f"{digest} {sha256(data)}".encode()).hexdigest()


def weights_sha256(weights: str | None) -> str:
    """sha256 of a weights file (None: the shipped model), hashed once per process while it is unchanged."""
    path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise UserError(f"Weights file {path} not found", "check --weights; on a cluster every worker must see it")
    return stamped_sha256(path)


# ----------------------------------------------------------------------------------------------- the task

_code_version = functools.lru_cache(maxsize=1)(code_version)


def _peak_memory_mib() -> float | None:
    """Peak resident memory of this process so far, MiB (None where the OS does not report it)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2 ** 20 if sys.platform == "darwin" else 2 ** 10), 1)


def _remove_staging(target: Path) -> None:
    """Remove what a write of `target` stopped midway (a killed worker) left: image_io's hidden
    `.NAME.XXXXXXXX` staging folders beside it."""
    import shutil

    for folder in target.parent.glob(f".{target.name}.*"):
        if folder.is_dir() and len(folder.name) == len(target.name) + 10:
            shutil.rmtree(folder, ignore_errors=True)


def _unchanged(previous: dict | None, record: dict) -> bool:
    return previous is not None and all(previous.get(k) == record[k] for k in ("sha256", "weights_sha256", "options"))


def _record_of(relative: str, settings: Settings, worker: str | None) -> dict:
    """A manifest record, failed until the file is done."""
    return {"input": relative, "output": relative, "size": None, "sha256": None, "status": "failed", "reason": "",
            "seconds": 0.0, "frames": 0, "weights_sha256": settings.weights_sha256, "options": settings.options,
            "code_version": _code_version(), "worker": worker, "peak_memory_mib": None}


def despeckle_task(relative: str, input_dir: str, output_dir: str, previous: dict | None,
                   settings: Settings) -> dict:
    """Despeckle one file of the archive (on a worker) and return its manifest record. A problem with the
    file (a UserError or an OS error) becomes a failed record with its one-line reason."""
    keep_freed_blocks()  # the worker is speckle2self's own process
    start = time.perf_counter()
    source, target = Path(input_dir, relative), Path(output_dir, relative)
    record = _record_of(relative, settings, get_worker().address)
    try:
        record["size"] = source.stat().st_size
        record["sha256"] = input_sha256(source)
        if weights_sha256(settings.weights) != settings.weights_sha256:
            raise UserError(f"The weights on worker {record['worker']} differ from the client's",
                            "give every worker the same weights file")
        if _unchanged(previous, record):
            if previous["status"] in ("done", "skipped") and target.is_file():
                return {**previous, "status": "skipped"}
            if previous["status"] == "failed" and not settings.retry_failed:
                return previous
        from .files import despeckle_file  # torch, on the first file a worker despeckles

        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_staging(target)
        record["frames"] = despeckle_file(source, target, weights=settings.weights, force=True, **settings.options)
        record["status"] = "done"
    except UserError as err:
        record["reason"] = str(err)
    except OSError as err:
        record["reason"] = f"{relative}: {err.strerror or err}"
    record["seconds"] = round(time.perf_counter() - start, 3)
    record["peak_memory_mib"] = _peak_memory_mib()
    return record


# ----------------------------------------------------------------------------------------------- the run

class Manifest:
    """The records of an output folder by input path, rewritten atomically on every change."""

    def __init__(self, output_dir: Path):
        self.path = output_dir / MANIFEST
        self.records: dict[str, dict] = {}
        if self.path.is_file():
            try:
                content = json.loads(self.path.read_text())
                self.records = {r["input"]: r for r in content["records"]}
            except (OSError, ValueError, KeyError, TypeError):
                raise UserError(f"The batch manifest {self.path} is unreadable",
                                "restore it, or delete it and the outputs to start over") from None
        elif output_dir.is_dir() and any(output_dir.iterdir()):
            raise UserError(f"The output folder {output_dir} holds files but no {MANIFEST}",
                            "give a new or empty folder, or the output folder of an earlier batch")

    def put(self, record: dict) -> None:
        self.records[record["input"]] = record
        content = {"format": FORMAT, "records": [self.records[k] for k in sorted(self.records)]}
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(json.dumps(content, indent=1) + "\n"))


def _check_folders(input_dir, output_dir) -> tuple[Path, Path]:
    """Both folders, resolved and checked."""
    input_dir, output_dir = Path(input_dir).resolve(), Path(output_dir).resolve()
    if not input_dir.is_dir():
        raise UserError(f"The input folder {input_dir} does not exist", "check the path")
    if output_dir == input_dir:
        raise UserError("The output folder is the input folder", "give a separate output folder")
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"The output {output_dir} is a file", "give a folder")
    if not output_dir.parent.is_dir():
        raise UserError(f"The folder {output_dir.parent} does not exist", "create it first")
    return input_dir, output_dir


def _settings(weights, retry_failed: bool, options: dict) -> Settings:
    """Check the weights and options on the client (on the CPU, as `despeckle_job` checks them) before any
    task is sent, so a mistake in them is one error, not a failure per file."""
    from .inference import despeckle_job

    weights = str(Path(weights).resolve()) if weights is not None else None
    checked = {k: v for k, v in options.items() if k not in ("compress", "device")}
    despeckle_job(PROBE, weights=weights, device="cpu", **checked)
    return Settings(weights, weights_sha256(weights), json.loads(json.dumps(options)), retry_failed)


def _failed(relative: str, reason: str, settings: Settings, input_dir: Path) -> dict:
    """The record of a task that raised on its worker, or whose worker died, made on the client."""
    record = {**_record_of(relative, settings, None), "reason": reason}
    source = input_dir / relative
    try:
        record["size"], record["sha256"] = source.stat().st_size, input_sha256(source)
    except OSError:  # on a cluster the client may not see the inputs
        pass
    return record


def _record(future, relative: str, settings: Settings, input_dir: Path) -> dict:
    try:
        return future.result()
    except KilledWorker:
        return _failed(relative, "Every worker that tried it died (out of memory?). Give the workers more memory "
                       "or lower --max-memory.", settings, input_dir)
    except Exception as err:  # a bug or a resource error on the worker: recorded, the other files go on
        first = (str(err).strip().splitlines() or [""])[0]
        return _failed(relative, f"{type(err).__name__}: {first}", settings, input_dir)


def local_cluster(workers: int) -> Client:
    """A client of a new LocalCluster: `workers` processes with one thread and one torch thread each."""
    if workers < 1:
        raise UserError(f"The number of workers must be at least 1, got {workers}", "e.g. --workers 2")
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           env={"OMP_NUM_THREADS": "1"}, silence_logs=logging.ERROR)
    return Client(cluster)


def connect(address: str) -> Client:
    """A client of the Dask scheduler at `address`, e.g. tcp://host:8786."""
    try:
        return Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as err:
        raise UserError(f"Cannot reach a Dask scheduler at {address} ({type(err).__name__})",
                        "start one with `dask scheduler` and workers with `dask worker ADDRESS`") from None


def despeckle_archive(input_dir, output_dir, client: Client | None = None, *, workers: int = 2,
                      pattern: str | None = None, weights=None, retry_failed: bool = False,
                      on_start: Callable[[int], None] | None = None,
                      on_record: Callable[[dict, int, int], None] | None = None, **options) -> list[dict]:
    """Despeckle every supported image file under `input_dir` (recursively; `pattern` a glob to filter) into
    the same relative path under `output_dir`, exactly as `speckle2self despeckle` writes it, and return
    this run's manifest records in input order.

    Runs on `client`, or on a new LocalCluster of `workers` when None. `options` are those of
    `files.despeckle_file` (compress and the `despeckle_job` options). Every check comes before any work;
    then `on_start(files)` is called, and `on_record(record, finished, total)` as each file finishes, after
    the manifest is saved. Files done earlier with the same input,
    weights and options are skipped; failed ones are retried with `retry_failed` or when they changed.
    """
    input_dir, output_dir = _check_folders(input_dir, output_dir)
    manifest = Manifest(output_dir)
    inputs = find_inputs(input_dir, output_dir, pattern)
    if not inputs:
        raise UserError(f"No supported image files under {input_dir}" + (f" match {pattern!r}" if pattern else ""),
                        f"give a folder holding {' '.join(SUPPORTED_EXTENSIONS)} files")
    settings = _settings(weights, retry_failed, options)
    try:
        output_dir.mkdir(exist_ok=True)
    except OSError as err:
        raise UserError(f"Cannot make the output folder {output_dir} ({err.strerror})",
                        "choose a writable folder") from None
    own = client is None
    client = local_cluster(workers) if own else client
    futures = {}
    try:
        futures = {client.submit(despeckle_task, relative, str(input_dir), str(output_dir),
                                 manifest.records.get(relative), settings, pure=False): relative
                   for relative in inputs}
        if on_start is not None:
            on_start(len(inputs))
        records = {}
        for future in as_completed(futures):
            record = _record(future, futures[future], settings, input_dir)
            manifest.put(record)
            records[record["input"]] = record
            if on_record is not None:
                on_record(record, len(records), len(inputs))
        return [records[relative] for relative in inputs]
    finally:
        client.cancel(list(futures))
        if own:
            cluster = client.cluster
            client.close()
            cluster.close()


def summary(records: list[dict], seconds: float) -> str:
    """One line: files done, skipped and failed, frames despeckled and their rate, peak memory per worker."""
    counts = Counter(r["status"] for r in records)
    done = [r for r in records if r["status"] == "done"]
    frames = sum(r["frames"] for r in done)
    peaks = {}
    for r in done:
        if r["peak_memory_mib"] is not None:
            peaks[r["worker"]] = max(peaks.get(r["worker"], 0.0), r["peak_memory_mib"])
    memory = ", ".join(f"{peaks[w]:.0f}" for w in sorted(peaks)) or "-"
    return (f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed of {len(records)} files; "
            f"{frames} frames in {seconds:.1f} s ({frames / seconds:.2f} frames/s); "
            f"peak memory per worker (MiB): {memory}")
