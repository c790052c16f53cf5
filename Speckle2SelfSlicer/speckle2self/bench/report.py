"""The benchmark's outputs: a markdown report (the targets, the real carotid scans against the method's
published output, tables shaped like the paper's, structure metrics; each as published and calibrated),
a figure grid and a JSON of every number."""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import tempfile
import textwrap
from dataclasses import asdict
from pathlib import Path

from ..errors import UserError
from ..metrics import homogeneity
from ..weights import DEFAULT_WEIGHTS, read_card
from . import published as pub
from .benchmark import EDGE_BAND, BenchResult, calibrated_clean, finite_mean, fmt
from .peers import KINDS, Method
from .sets import REAL_IMAGES, SECOND_REALISATION_SEED, TRAIN_SEED
from .targets import targets_table

NAMES = ("benchmark.md", "benchmark.png", "benchmark.json")
DOCS = Path(__file__).resolve().parents[3] / "docs"
"""The repository's docs folder, where the full benchmark's report is kept."""


def output_folder(out: str | Path | None, quick: bool) -> Path:
    """Where the report goes: `out`; else a new temporary folder (quick mode, never docs/) or the
    repository's docs/ (full mode)."""
    if out is not None:
        return Path(out)
    if quick:
        return Path(tempfile.mkdtemp(prefix="speckle2self-bench-"))
    if not DOCS.is_dir():
        raise UserError(f"No docs folder at {DOCS} (not a source checkout)", "give the report folder with --out")
    return DOCS


def machine() -> dict:
    """Where the run happened: CPU model and cores, torch version and threads."""
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")]
        cpu = models[0] if models else cpu
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def _groups(result: BenchResult) -> list[tuple[str, list[Method]]]:
    without = [m for m in result.methods if not m.uses_clean_data]
    with_clean = [m for m in result.methods if m.uses_clean_data]
    return [("Without clean data", without), ("With clean data (simulations only: upper bounds)", with_clean)]


def _rows(title: str, names: list[str], cells: list[list[str]], width: int) -> list[str]:
    lines = [f"| **{title}** |" + " |" * (width - 1)] if names else []
    return lines + ["| " + " | ".join([name] + row) + " |" for name, row in zip(names, cells)]


def _table(result: BenchResult, header: list[str], row, groups=None) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for title, methods in groups or _groups(result):
        lines += _rows(title, [m.name for m in methods], [row(m) for m in methods], len(header))
    return lines


def _ms_per_frame(result: BenchResult, key: str, names: list[str]) -> float:
    return finite_mean([v for name in names for v in result.scores["raw"][key].get(name, {}).get("ms", [])])


def simulated_names(result: BenchResult) -> list[str]:
    return [s.name for s in result.sets if s.simulated]


def main_table(result: BenchResult, chain: str = "raw") -> str:
    """Rows = methods grouped by clean-data use; PSNR / SSIM / Hom per simulated set, then Hom, gCNR,
    SNR and ENL on the marked real images, and (as published) the time per frame (on the marked real images
    where a method ran on them, else on the simulations)."""
    simulated = simulated_names(result)
    real = next((s.name for s in result.sets if s.marked), None)
    header = ["Method"] + [f"{name} PSNR / SSIM / Hom" for name in simulated]
    header += ["real Hom", "real gCNR", "real SNR", "real ENL"] if real else []
    header += ["ms / frame"] if chain == "raw" else []

    def row(m: Method) -> list[str]:
        cells = [" / ".join(fmt(result.mean(m.key, name, metric, chain), digits) for metric, digits in
                            (("psnr", 2), ("ssim", 3), ("hom", 3))) for name in simulated]
        if real:
            cells += [fmt(result.mean(m.key, real, metric, chain), digits)
                      for metric, digits in (("hom", 3), ("gcnr", 3), ("snr", 2), ("enl", 2))]
        if chain != "raw":
            return cells
        timed = [real] if real in result.scores["raw"][m.key] else simulated
        return cells + [fmt(_ms_per_frame(result, m.key, timed), 0)]

    return "\n".join(_table(result, header, row))


STRUCTURE = (("fwhm", 2), ("grid", 2), ("beta", 3), ("gcnr", 3))


def structure_table(result: BenchResult, chain: str = "raw") -> str:
    """Point-target FWHM ratio, grid score, edge beta and gCNR (target vs background) per simulated set;
    calibrated, with the clean image through the same chain as a reference row."""
    simulated = simulated_names(result)
    header = ["Method"] + [f"{name} FWHM ratio / grid / edge beta / gCNR" for name in simulated]

    def cell(value_of) -> str:
        return " / ".join(fmt(value_of(metric), digits) for metric, digits in STRUCTURE)

    def row(m: Method) -> list[str]:
        return [cell(lambda metric: result.mean(m.key, name, metric, chain)) for name in simulated]

    lines = _table(result, header, row)
    if chain == "calibrated":
        floors = [calibrated_clean(s) for s in result.sets if s.simulated]
        lines += _rows("Reference", ["clean image, calibrated: a perfect output after the chain"],
                       [[cell(floor.get) for floor in floors]], len(header))
    return "\n".join(lines)


def carotid_columns(result: BenchResult) -> list[tuple[str, list[int]]]:
    """(title, frame indices) of the carotid set's columns: every clip run, and the clips the paper's peers
    cover when those are fewer."""
    carotid = next(s for s in result.sets if s.against_published)
    clips = [pub.clip_of(label) for label in carotid.labels]
    peer = [i for i, clip in enumerate(clips) if clip in pub.PEER_CLIPS]
    columns = [(pub.clip_span(carotid.labels), list(range(len(clips))))]
    if peer and len(peer) < len(clips):
        columns.append((pub.clip_span([carotid.labels[i] for i in peer]), peer))
    return columns


def carotid_values(values: list[float], labels: list[str], indices: list[int], all_labels: list[str]) -> list[float]:
    """The values of a row (frames `labels`) at the frames `indices` of the carotid set (`all_labels`); empty
    unless the row covers each of them."""
    position = {label: i for i, label in enumerate(labels)}
    wanted = [all_labels[i] for i in indices]
    return [values[position[label]] for label in wanted] if all(w in position for w in wanted) else []


def carotid_table(result: BenchResult, chain: str = "raw") -> str:
    """SSIM to the published gamma-2 output and Hom per column of `carotid_columns`: the benchmarked methods,
    then the published outputs (the authors' model, the paper's peers)."""
    carotid = next(s for s in result.sets if s.against_published)
    columns = carotid_columns(result)
    header = ["Method"] + [f"{title}: SSIM to published / Hom" for title, _ in columns]

    def cells(values: dict[str, list[float]], labels: list[str]) -> list[str]:
        return [" / ".join(fmt(finite_mean(carotid_values(values[metric], labels, indices, carotid.labels)), 3)
                           for metric in ("ssim", "hom")) for _, indices in columns]

    methods = [m for m in result.methods if carotid.name in result.scores[chain][m.key]]
    lines = _table(result, header, lambda m: cells(result.scores[chain][m.key][carotid.name], carotid.labels),
                   [("Run by this benchmark", methods)])
    lines += _rows("Published outputs", [row.name for row in result.paper],
                   [cells(row.scores[chain], row.labels) for row in result.paper], len(header))
    return "\n".join(lines)


def _parameters(result: BenchResult) -> list[str]:
    lines = ["| Method | key | kind | parameters | tuned on S-II (values tried) | note |", "|---|---|---|---|---|---|"]
    for m in result.methods:
        params = ", ".join(f"{k}={v}" for k, v in m.params.items()) or "-"
        tuned = f"{m.tuned} ({', '.join(map(str, m.grid))})" if m.tuned else "-"
        lines.append(f"| {m.name} | `{m.key}` | {KINDS[m.kind]} | {params} | {tuned} | {m.note} |")
    return lines


def _carotid_section(result: BenchResult) -> list[str]:
    carotid = next((s for s in result.sets if s.against_published), None)
    if carotid is None:
        return ["Not run: the reference folder (`../shared/reference/carotid_published`, or `--reference`) was "
                "not found.", ""]
    own = finite_mean([homogeneity(frame) for frame in carotid.published])
    return [
        f"{len(carotid.images)} frame{'s' if len(carotid.images) != 1 else ''} of real carotid scans (Clarius L7) "
        "and the method's own published output of each (`../shared/reference/carotid_published`, evaluation only: no method trains on the published "
        "outputs; the self-supervised ones train on these inputs). Scored with the reference's protocol, with "
        "numbers identical to its `evaluate_published.py`: each output shown as an 8-bit file with display "
        "gamma 2, SSIM to the published gamma-2 frame and Hom of the shown frame, means over the frames. "
        f"The published gamma-2 frames themselves have Hom {own:.3f}. The published outputs below are the "
        "authors' released model (its gamma-1 GIFs, shown as every output is) and the paper's peers (clips "
        f"{pub.PEER_CLIPS[0]}-{pub.PEER_CLIPS[-1]}), so that each of our peers can be compared with the paper's.",
        "",
        "As published (each method's own output):",
        "",
        carotid_table(result, "raw"),
        "",
        "Calibrated (the same calibration chain for every method, the published outputs included):",
        "",
        carotid_table(result, "calibrated"),
        "",
    ]


def _setup(result: BenchResult) -> list[str]:
    c, b = result.config, result.config.budget
    simulated = [s for s in result.sets if s.simulated]
    real = [s for s in result.sets if s.marked]
    lines = [
        f"- Simulated sets ({', '.join(s.name for s in simulated)}, `speckle2self.bench.simulate`): {c.test_count} "
        f"test images of {c.size} x {c.size} pixels per set (seeds 0..{c.test_count - 1}, phantoms cycling "
        f"{', '.join(c.phantoms)}) and {c.train_count} training images (seeds from {TRAIN_SEED}); Noise2Noise "
        f"gets a second speckle realisation of each training image (seed {SECOND_REALISATION_SEED}).",
    ]
    if real:
        lines.append(f"- Marked real images ({len(real[0].images)}, from the shared data folder, 8-bit grey / 255; "
                     "regions marked by eye; the self-supervised methods train on these same noisy images; "
                     "whether the shipped model saw frames of each file is from its model card's command):")
        shipped_command = read_card(DEFAULT_WEIGHTS).get("command", "")
        for image in REAL_IMAGES[:len(real[0].images)]:
            seen = "in" if image.file in shipped_command else "held out of"
            lines.append(f"  - {image.label}: `{image.file}` frame {image.frame}, crop (top, left, height, "
                         f"width) {image.crop}; target {image.target}, background {image.background}, "
                         f"homogeneous {image.homogeneous}; {seen} the shipped model's training data")
    else:
        lines.append("- Marked real images: none (the shared data folder was not found).")
    lines += [
        f"- Training budget of every trained method (ours from scratch included), per set: {b.seconds:g} s of "
        f"wall clock, crops of {b.size} x {b.size} (smaller where an image is), batch {b.batch}, network width "
        f"{b.width}, Adam lr 1e-3 betas (0.5, 0.999), seed {b.seed}, precision {b.precision}. Per-image "
        "methods run a fixed number of iterations on each test image; their time per frame includes the fit.",
        "- One intensity domain for all: every method gets and returns [0, 1] display values (8-bit / 255). "
        "PSNR and SSIM (Gaussian window, sigma 1.5) against the clean reference in that domain; Hom (GLCM, "
        "64 levels) and gCNR on the 8-bit image without stretching; SNR = mean / std and ENL = SNR^2 on the "
        "homogeneous region in display values (log-compressed, so not the envelope's 1.91 or the intensity's "
        f"1); edge beta within {EDGE_BAND} pixels of the echogenicity map's boundaries.",
        "- Structure (`speckle2self.bench.structure`): the FWHM ratio is each point target's axial and lateral "
        "FWHM in the output over its FWHM in the clean reference, in intensity, averaged (points phantom only; "
        "1 is perfect, blur grows it, an erased point counts as its whole window); the grid score is the "
        "output's spectral peak-to-neighbourhood ratio at 1/2, 1/4, 1/8 and 1/16 of the sampling frequency "
        "over the clean reference's, averaged over the four (1: no periodic artefact).",
        "- Two treatments, the same for every method. As published: each output as the method gives it. "
        "Calibrated: `speckle2self.bench.calibration.calibrated`, brightness matching to the input and then "
        "the log-bias step (`speckle2self.postprocess`: the mean of log-compressed speckle mapped to the log of "
        "the mean intensity, the speckle spread measured on each image, no clean data). The clean reference is "
        "the log of the mean intensity, so a filter estimating the mean of the log display sits 2.51 dB low in "
        "fully developed speckle (a median 1.59 dB low) until calibrated. No method is smoothed: smoothing is "
        "filtering, what the methods compete on, not a calibration. The Speckle2Self rows are the network's "
        "output brightness-matched to the input (`despeckle(..., smoothing=0, log_bias=False)`).",
        "",
        "Parameters (fixed; the tuned ones chosen once by `speckle2self bench --tune`, best mean PSNR on S-II "
        "images outside the test and training splits):",
        "",
        *_parameters(result),
    ]
    if result.skipped:
        lines += ["", "Not run:", ""] + [f"- {name}: {why}" for name, why in result.skipped.items()]
    return lines


def markdown(result: BenchResult, command: str, info: dict) -> str:
    c, b = result.config, result.config.budget
    lines = [
        "# Benchmark: Speckle2Self and its peers",
        "",
        f"Made by `{command}` on {info['created']} in {result.seconds / 60:.1f} min of wall time on "
        f"{info['machine']['cpu']} ({info['machine']['cpu_count']} cores, torch {info['machine']['torch']}, "
        f"{info['machine']['torch_threads']} threads, device {b.device}"
        + (f", GPU {info['machine']['gpu']}" if info['machine']['gpu'] and b.device != "cpu" else "") + ")."
        + (" Quick mode: tiny images and budgets, a smoke test, not a result." if c.quick else ""),
        "Each number is the mean over a set's test images; `benchmark.json` has every value per image. Every "
        "table comes twice: as published (each method's own output) and calibrated (one calibration chain, the "
        "same for every method, ours included; see Setup).",
        "",
        "## Targets of the shipped model",
        "",
        "On the as-published scores (what `speckle2self despeckle` writes by default): real "
        "scans first, structure second, simulated fidelity third.",
        "",
        targets_table(result),
        "",
        "## Real carotid scans against the method's published output",
        "",
        *_carotid_section(result),
        "## Results",
        "",
        "As published:",
        "",
        main_table(result, "raw"),
        "",
        "Calibrated:",
        "",
        main_table(result, "calibrated"),
        "",
        "## Structure and contrast on the simulations",
        "",
        "As published:",
        "",
        structure_table(result, "raw"),
        "",
        "Calibrated:",
        "",
        structure_table(result, "calibrated"),
        "",
        "![input, clean reference (carotid: the published output) and every method's output on one image per "
        "set](benchmark.png)",
        "",
        "## Setup",
        "",
        *_setup(result),
    ]
    return "\n".join(lines) + "\n"


def tuning_table(rows: list[dict]) -> str:
    """`bench --tune` output: mean PSNR and SSIM per method and value, the best value marked."""
    lines = ["| method | parameter | value | PSNR | SSIM | best |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['parameter']} | {r['value']} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
              f"{'<-' if r['best'] else ''} |" for r in rows]
    return "\n".join(lines)


def _title(m_key: str, result: BenchResult) -> str:
    names = {m.key: m.name for m in result.methods}
    names.update(input="Noisy input", clean="Clean reference (carotid: published)")
    return textwrap.fill(names[m_key], 18)


def figure(result: BenchResult, path: Path) -> None:
    """Rows: one example image per set; columns: input, clean reference, then each method (on the carotid set
    the published output for the reference, and every image with display gamma 2, as it is scored)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = ["input", "clean"] + [m.key for m in result.methods if m.key != "input"]
    fig = Figure(figsize=(1.25 * len(columns), 1.5 * len(result.sets)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(result.sets), len(columns), squeeze=False)
    for r, s in enumerate(result.sets):
        for c, key in enumerate(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            image = result.examples[s.name].get(key)
            if image is not None:
                ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", fontsize=7, transform=ax.transAxes)
            if r == 0:
                ax.set_title(_title(key, result), fontsize=6)
            if c == 0:
                name = f"{s.name} (gamma 2)" if s.against_published else s.name
                ax.set_ylabel(f"{name}\n{textwrap.fill(s.labels[result.example_index[s.name]], 18)}", fontsize=6)
    fig.subplots_adjust(wspace=0.04, hspace=0.04)
    fig.savefig(path, bbox_inches="tight")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _metrics(metrics: dict[str, list[float]]) -> dict:
    return {metric: {"mean": _finite(finite_mean(values)), "values": [_finite(v) for v in values]}
            for metric, values in metrics.items()}


def as_json(result: BenchResult, command: str, info: dict) -> dict:
    c = result.config
    return {
        "command": command, **info, "wall_seconds": round(result.seconds, 1),
        "config": {"size": c.size, "test_count": c.test_count, "train_count": c.train_count,
                   "real_count": c.real_count, "quick": c.quick, "data": str(c.data) if c.data else None,
                   "reference": str(c.reference) if c.reference else None, "clips": list(c.clips),
                   "phantoms": list(c.phantoms), "budget": asdict(c.budget)},
        "sets": {s.name: {"simulated": s.simulated, "against_published": s.against_published, "images": s.labels}
                 for s in result.sets},
        "methods": [{"key": m.key, "name": m.name, "kind": m.kind, "uses_clean_data": m.uses_clean_data,
                     "params": m.params, "tuned": m.tuned, "grid": list(m.grid)} for m in result.methods],
        "skipped": result.skipped,
        "scores": {chain: {key: {name: _metrics(metrics) for name, metrics in per_set.items()}
                           for key, per_set in per_key.items()}
                   for chain, per_key in result.scores.items()},
        "paper": [{"name": row.name, "images": row.labels,
                   "scores": {chain: _metrics(metrics) for chain, metrics in row.scores.items()}}
                  for row in result.paper],
    }


def write_report(result: BenchResult, out: Path, command: str = "speckle2self bench") -> list[Path]:
    """Write benchmark.md, benchmark.png and benchmark.json into `out` (created if needed)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = {"created": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine()}
    paths = [out / name for name in NAMES]
    paths[0].write_text(markdown(result, command, info))
    figure(result, paths[1])
    paths[2].write_text(json.dumps(as_json(result, command, info), indent=1) + "\n")
    return paths
