"""Command line: `speckle2self despeckle | batch | train | distil | evaluate | info`, and the commands other
packages register under the `speckle2self.commands` entry point group (COMMANDS): the research ring's
`bench-speed | bench | simulate | finetune-curve | ablation` and the browser page's `view`."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from . import frames as fr
from .allocator import keep_freed_blocks
from .budgets import FINETUNE_STEPS
from .errors import EXIT_USER_ERROR, Cancelled, UserError
from .jobs import Job, Progress
from .postprocess import SMOOTHING
from .precision import PRECISIONS

COMMANDS = "speckle2self.commands"
"""Entry point group of functions that add subcommands to the parser's subparsers, so that the product names
neither the research ring nor the browser page, and runs where they are not installed."""


def progress_bar(job: Job, unit: str):
    """Run a job under a tqdm progress bar (on stderr) and return its result."""
    from tqdm import tqdm

    with tqdm(desc=job.description, unit=unit, dynamic_ncols=True, leave=False) as bar:
        def show(p: Progress) -> None:
            bar.total = round(p.total)
            bar.n = round(p.done)
            bar.set_postfix_str(p.message, refresh=False)
            bar.refresh()
        return job.run(show)


def _json_lines(job: Job, phase: str, **fields):
    """Run a job printing one JSON object per update on stdout (`--progress json`, read by the Slicer module):
    phase, done, total, elapsed and seconds_left (null before the first unit), message and `fields`."""
    def show(p: Progress) -> None:
        print(json.dumps({"phase": phase, "done": p.done, "total": p.total, "elapsed": round(p.elapsed, 3),
                          "seconds_left": p.seconds_left, "message": p.message, **job.info, **fields}), flush=True)
    return job.run(show)


def _run(job: Job, args, unit: str, phase: str, **fields):
    """Run a job under the progress display --progress asks for."""
    return _json_lines(job, phase, **fields) if args.progress == "json" else progress_bar(job, unit)


def _output_paths(inputs: list[Path], output: Path) -> list[Path]:
    if len(inputs) == 1 and not output.is_dir():
        return [output]
    if not output.is_dir():
        raise UserError(f"With {len(inputs)} inputs the output {output} must be an existing folder",
                        "create the folder or give one input")
    return [output / p.name for p in inputs]


def _finetune(image_array: np.ndarray, source: Path, args, **fields) -> object:
    """The fine-tuned model (or, if the safeguard refused it, the un-tuned one), saying which on stderr (in a
    JSON line with --progress json). With --save-finetuned a kept model is saved, and returned as saved."""
    from .finetuning import finetune_job
    from .weights import load_checkpoint, save_checkpoint

    extra = {"source": source.stem, "command": "speckle2self " + shlex.join(args.argv)}
    job = finetune_job([image_array], weights=args.weights, steps=args.finetune_steps,
                       minutes=args.finetune_minutes, size=args.finetune_size, precision=args.precision,
                       device=args.device, card_extra=extra, scale=args.scale)
    result = _run(job, args, "step", "fine-tuning", **fields)
    if args.progress == "json":
        print(json.dumps({"phase": "fine-tuning", "accepted": result.accepted, "verdict": result.verdict,
                          **fields}), flush=True)
    else:
        print(f"speckle2self: {result.verdict}", file=sys.stderr)
    if not (args.save_finetuned and result.accepted):
        return result.model
    save_checkpoint(result.model, Path(args.save_finetuned), result.card)
    return load_checkpoint(args.save_finetuned)[0]  # as saved: despeckling with the file gives this result


def _check_save_finetuned(args, inputs: list[Path]) -> None:
    """Refuse a --save-finetuned that cannot be honoured, before any work."""
    if not args.save_finetuned:
        return
    target = Path(args.save_finetuned)
    if args.finetune_steps is None and args.finetune_minutes is None:
        raise UserError("--save-finetuned keeps a fine-tuned model, but no fine-tuning was asked for",
                        "add --finetune (or --finetune-steps / --finetune-minutes)")
    if len(inputs) > 1:
        raise UserError("--save-finetuned takes one input (each input is fine-tuned on its own)",
                        "run once per input")
    if not target.resolve().parent.is_dir():
        raise UserError(f"The folder of {target} does not exist", "create it first")
    if target.exists() and not args.force:
        raise UserError(f"{target} already exists", "choose another name or overwrite it with --force")


def _despeckle_options(args) -> dict:
    """The `despeckle_job` options of the despeckle and batch commands."""
    from .inference import GIB, MEMORY_LIMIT

    return {"device": args.device, "gamma": args.gamma, "batch_size": args.batch,
            "memory_limit": MEMORY_LIMIT if args.max_memory is None else int(args.max_memory * GIB),
            "precision": args.precision, "match_brightness": not args.network_brightness,
            "smoothing": args.smoothing, "log_bias": args.log_bias, "degrid": not args.keep_grid,
            "scale": args.scale}


def cmd_despeckle(args) -> None:
    from .files import despeckle_file

    inputs = [Path(p) for p in args.inputs]
    if args.finetune:
        args.finetune_steps = FINETUNE_STEPS
    if args.preview and len(inputs) > 1:
        raise UserError("--preview takes one input", "run once per input")
    outputs = _output_paths(inputs, Path(args.output))
    _check_save_finetuned(args, inputs)
    finetuning = args.finetune_steps is not None or args.finetune_minutes is not None
    for number, (source, target) in enumerate(zip(inputs, outputs), 1):
        which = {"input": number, "inputs": len(inputs)}
        tune = (lambda grey: _finetune(grey, source, args, **which)) if finetuning else None
        despeckle_file(source, target, weights=args.weights, force=args.force, compress=args.compress or None,
                       preview=args.preview, run=lambda job: _run(job, args, "frame", "despeckling", **which),
                       tune=tune, **_despeckle_options(args))
        print(target)
        if args.preview:
            print(args.preview)


def cmd_batch(args) -> int:
    import time

    from tqdm import tqdm

    try:
        from .batch import MANIFEST, connect, despeckle_archive, summary
    except ImportError as err:
        raise UserError(f"speckle2self batch needs Dask's distributed scheduler ({err})",
                        "pip install 'speckle2self[batch]'") from None
    client = None if args.scheduler == "local" else connect(args.scheduler)
    manifest = Path(args.output) / MANIFEST
    bars = []  # one files bar, opened once every check has passed

    def show(record: dict, finished: int, total: int) -> None:
        bars[0].update(1)
        bars[0].set_postfix_str(f"{record['input']}: {record['status']}")

    start = time.perf_counter()
    try:
        records = despeckle_archive(
            args.input_dir, args.output, client, workers=args.workers, pattern=args.pattern, weights=args.weights,
            retry_failed=args.retry_failed, on_record=show, compress=args.compress or None,
            on_start=lambda total: bars.append(tqdm(total=total, desc="batch", unit="file", dynamic_ncols=True)),
            **_despeckle_options(args))
    except KeyboardInterrupt:
        print(f"speckle2self: interrupted; the files finished so far are recorded in {manifest}: rerun to go on",
              file=sys.stderr)
        return 130
    finally:
        for bar in bars:
            bar.close()
        if client is not None:
            client.close()
    print(summary(records, time.perf_counter() - start))
    failed = sum(r["status"] == "failed" for r in records)
    if failed:
        raise UserError(f"{failed} of {len(records)} files failed; {manifest} gives each reason",
                        "fix or remove them and rerun with --retry-failed")
    return 0


def _training_data(args) -> tuple[list, dict]:
    """The grey frames of the `data` files, and the card entries naming the command and the files."""
    from .image_io import read_image

    sources = [fr.grey_stack(read_image(Path(p)).array) for p in args.data]
    return sources, {"command": "speckle2self " + shlex.join(args.argv), "data": [Path(p).name for p in args.data]}


def _grain(value: str) -> float | None:
    """--grain: 'native' or a positive number of pixels."""
    if value == "native":
        return None
    try:
        return float(value)
    except ValueError:
        raise UserError(f"Grain {value!r} is not a number of pixels", "use e.g. --grain 6, or --grain native") from None


def cmd_train(args) -> None:
    from .losses import LossWeights
    from .training import TrainConfig, train_job

    sources, extra = _training_data(args)
    config = TrainConfig(steps=args.steps, minutes=args.minutes, size=args.size, batch=args.batch,
                         seed=args.seed, width=args.width, head=args.head, checkpoint_minutes=args.checkpoint_minutes,
                         precision=args.precision, lr=args.lr, compile=args.compile,
                         grain=_grain(args.grain), resume=args.resume, schedule=args.schedule,
                         warmup=args.warmup, ema=args.ema,
                         loss=LossWeights(consistency=(args.consistency,) * 3))
    result = progress_bar(train_job(sources, config, init=args.init, device=args.device, out=args.out,
                                     card_extra=extra), "step")
    print(json.dumps({k: result.card[k] for k in ("steps", "seconds", "final_loss", "sha256")}))


def cmd_distil(args) -> None:
    from .distillation import DistilConfig, distil_job

    sources, extra = _training_data(args)
    length = {"minutes": None, "steps": args.steps} if args.steps is not None else {"minutes": args.minutes or 60.0}
    config = DistilConfig(**length, width=args.width, size=args.size, batch=args.batch, lr=args.lr,
                          seed=args.seed, checkpoint_minutes=args.checkpoint_minutes, precision=args.precision)
    _, card = progress_bar(distil_job(sources, args.teacher, config, device=args.device, out=args.out,
                                       card_extra=extra, init=args.init), "s")
    print(json.dumps({k: card[k] for k in ("steps", "seconds", "final_loss", "sha256")}))


def cmd_info(args) -> None:
    from .inference import resolve_device
    from .network import count_parameters
    from .weights import DEFAULT_WEIGHTS, load_checkpoint, sha256

    path = Path(args.weights) if args.weights else DEFAULT_WEIGHTS
    model, card = load_checkpoint(path)
    print(json.dumps({
        "parameters_inference": count_parameters(model.inference_path()),
        "parameters_training": count_parameters(model),
        "width": model.width, "head": model.head, "weights_path": str(path), "weights_sha256": sha256(path),
        "device": str(resolve_device(args.device)),
        "cumulative_steps": card.get("cumulative_steps"), "cumulative_hours": card.get("cumulative_hours"),
    }, indent=2))


def cmd_evaluate(args) -> None:
    from .evaluation import evaluate_file, markdown_table

    rows = [evaluate_file(Path(p), weights=args.weights, device=args.device) for p in args.inputs]
    print(json.dumps(rows, indent=2) if args.json else markdown_table(rows))


def _precision_option(command: argparse.ArgumentParser, despeckling: bool = True) -> None:
    text = "bf16 where the CPU/GPU runs it fast, else fp32 (the reference path)"
    if despeckling:
        text = f"on the CPU int8 (OpenVINO) where installed, else {text}; fine-tuning runs at auto for int8"
    command.add_argument("--precision", default="auto", choices=[p for p in PRECISIONS if despeckling or p != "int8"],
                         help=f"auto: {text}")


def _weights_options(command: argparse.ArgumentParser) -> None:
    """--weights FILE or --model NAME (a shipped model); main() turns the name into its file."""
    from .weights import SHIPPED

    which = command.add_mutually_exclusive_group()
    which.add_argument("--weights", help="checkpoint (default: the shipped model)")
    which.add_argument("--model", choices=list(SHIPPED), help="a shipped model: default (the full network) or fast "
                       "(its width-16 student: a quarter of the operations, MODEL_CARD.md)")


def _despeckle_arguments(command: argparse.ArgumentParser) -> None:
    """The options of the despeckle and batch commands that shape the output."""
    _weights_options(command)
    command.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    command.add_argument("--gamma", type=float, default=1.0, help="display gamma applied to the output (default 1.0)")
    command.add_argument("--compress", action="store_true", help="compress NRRD/MetaImage outputs of any size "
                         "(default: up to 16 MiB of pixels; ITK compresses in memory, about 4x the pixels)")
    command.add_argument("--network-brightness", action="store_true",
                         help="keep the network's own brightness instead of fitting the output to the input's")
    command.add_argument("--smoothing", type=float, default=SMOOTHING,
                         help=f"Gaussian smoothing of the output in pixels, 0 for none (default {SMOOTHING})")
    command.add_argument("--log-bias", action="store_true", help="show the log of the mean echo intensity (2.51 dB "
                         "brighter in fully developed speckle) instead of the mean of the log-compressed speckle")
    command.add_argument("--keep-grid", action="store_true", help="keep the decoder's 16-pixel periodic pattern "
                         "(default: removed by a notch filter at its frequencies)")
    command.add_argument("--scale", default="auto", help="resample each frame by this factor before the network "
                         "and back after; auto (default) measures the speckle grain and brings it to the model's "
                         "training grain; 1 runs on the file's own grid")
    command.add_argument("--batch", type=int, help="frames per batch (default: automatic, cache-sized on a CPU)")
    command.add_argument("--max-memory", type=float, help="GiB one batch of frames may use (default 8); batches "
                         "shrink to fit, a frame that needs more is refused")
    _precision_option(command)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="speckle2self", description="Self-supervised ultrasound despeckling.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("despeckle", help="despeckle images, volumes or sequences")
    d.add_argument("inputs", nargs="+", help="input files (.nrrd .nii .mha .igs.mha .seq.nrrd .png .npy ...)")
    d.add_argument("-o", "--output", required=True, help="output file (one input) or existing folder")
    _despeckle_arguments(d)
    tune = d.add_mutually_exclusive_group()
    tune.add_argument("--finetune", action="store_true", help="fine-tune the model (--weights or the shipped one) on "
                      f"each input first, for the default budget ({FINETUNE_STEPS} steps: most of the gain measured "
                      "on unseen scans); kept only if not worse on the input's held-out frames")
    tune.add_argument("--finetune-steps", type=int, help="fine-tune the model (--weights or the shipped one) "
                      "on each input first, for this many steps; kept only if not worse on the input")
    tune.add_argument("--finetune-minutes", type=float, help="the same, for this many minutes")
    d.add_argument("--finetune-size", type=int, default=256, help="fine-tuning crop size")
    d.add_argument("--save-finetuned", metavar="CHECKPOINT", help="keep the fine-tuned model, if the safeguard "
                   "keeps it, in this file (a model card goes beside it; one input) and despeckle with it as saved")
    d.add_argument("--progress", choices=("bar", "json"), default="bar",
                   help="bar: a progress bar on stderr; json: one JSON line per update on stdout (phase "
                   "fine-tuning or despeckling, done, total, elapsed, seconds_left, message, input, inputs, "
                   "scale: the resampling factor with the measured and the model's speckle grain), "
                   "and after fine-tuning one with the safeguard's accepted and verdict")
    d.add_argument("--preview", help="also write a before/after PNG of the middle frame (one input)")
    d.add_argument("--force", action="store_true", help="overwrite existing outputs")
    d.set_defaults(func=cmd_despeckle)

    w = sub.add_parser("batch", help="despeckle every image under a folder on Dask, resumably "
                       "(speckle2self-batch.json)")
    w.add_argument("input_dir", help="folder of images, searched recursively")
    w.add_argument("-o", "--output", required=True, help="output folder: the same relative paths and formats")
    w.add_argument("--scheduler", default="local", help="local (a new LocalCluster, default) or the ADDRESS of a "
                   "running Dask scheduler (`dask scheduler`)")
    w.add_argument("--workers", type=int, default=2,
                   help="local workers, one file and one torch thread each (default 2)")
    w.add_argument("--pattern", help="only files matching this glob, e.g. '*.igs.mha'")
    w.add_argument("--retry-failed", action="store_true", help="retry the files that failed before")
    _despeckle_arguments(w)
    w.set_defaults(func=cmd_batch)

    t = sub.add_parser("train", help="train or fine-tune on noisy images (no clean data)")
    t.add_argument("data", nargs="+", help="training images, volumes or sequences")
    t.add_argument("--out", required=True, help="checkpoint to write (a .json model card goes beside it)")
    length = t.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=int)
    length.add_argument("--minutes", type=float)
    t.add_argument("--size", type=int, default=256, help="training crop size (multiple of 16)")
    t.add_argument("--batch", type=int, default=4)
    t.add_argument("--width", type=int, default=32, help="network width (32 = paper)")
    t.add_argument("--head", choices=("faithful", "linear"),  # network.HEADS; the parser is built without torch
                   help="decoder's last layer: faithful (InstanceNorm + ReLU, as the paper; default for a new "
                   "model) or linear (follows the input's brightness); an --init model keeps its own unless given")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3, the paper's; lower "
                   "polishes an --init model)")
    t.add_argument("--schedule", choices=("constant", "cosine"), default="constant",  # training.SCHEDULES
                   help="learning rate over this run: constant, or cosine (down to zero at its last step or minute)")
    t.add_argument("--warmup", type=int, default=0, help="steps over which the learning rate rises from zero")
    t.add_argument("--ema", type=float, metavar="DECAY", help="write an exponential moving average of the weights "
                   "(e.g. 0.999) instead of the last ones (checkpoints saved during the run hold the last ones)")
    t.add_argument("--consistency", type=float, default=1.0, help="weight of each of the three consistency terms "
                   "(default 1, the paper's; higher asks the scales' outputs to agree more, smoothing more)")
    t.add_argument("--seed", type=int, default=777)
    t.add_argument("--init", help="start from this checkpoint (fine-tuning, resuming)")
    t.add_argument("--resume", action="store_true", help="also restore Adam's state saved beside --init "
                   "(FILE.adam.pt, written with every checkpoint), to go on with a stopped run")
    t.add_argument("--grain", default="6", help="speckle grain in pixels every frame is resampled to before "
                   "training (default 6, the shipped models'; 'native' trains on the files' own grids)")
    t.add_argument("--device", default="auto")
    t.add_argument("--checkpoint-minutes", type=float, default=10.0)
    t.add_argument("--compile", action="store_true", help="run the network through torch.compile: tens of seconds "
                   "of compilation first, then faster steps (docs/performance.md); for long runs")
    _precision_option(t, despeckling=False)
    t.set_defaults(func=cmd_train)

    di = sub.add_parser("distil", help="train a narrower, faster network to reproduce a trained one (--model fast "
                       "is the shipped model's)")
    di.add_argument("data", nargs="+", help="noisy images, volumes or sequences to draw crops from")
    di.add_argument("--out", required=True, help="checkpoint to write (a .json model card goes beside it)")
    di.add_argument("--teacher", help="the checkpoint to reproduce (default: the shipped model)")
    di.add_argument("--init", help="a student of this teacher to go on distilling (its card's steps add up)")
    length = di.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="length of the run (default 60; the learning rate decays over it)")
    length.add_argument("--steps", type=int, help="or a number of steps")
    di.add_argument("--width", type=int, default=16, help="student width (16: a quarter of the paper's operations)")
    di.add_argument("--size", type=int, default=256, help="crop size (multiple of 16)")
    di.add_argument("--batch", type=int, default=4)
    di.add_argument("--lr", type=float, default=1e-3, help="peak Adam learning rate (cosine decay to 0)")
    di.add_argument("--seed", type=int, default=777)
    di.add_argument("--device", default="auto")
    di.add_argument("--checkpoint-minutes", type=float, default=5.0)
    _precision_option(di, despeckling=False)
    di.set_defaults(func=cmd_distil)

    e = sub.add_parser("evaluate", help="GLCM homogeneity before/after, outside-sector zeros kept and time per frame, per file")
    e.add_argument("inputs", nargs="+")
    _weights_options(e)
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    e.set_defaults(func=cmd_evaluate)

    i = sub.add_parser("info", help="print model and device information as JSON")
    _weights_options(i)
    i.add_argument("--device", default="auto")
    i.set_defaults(func=cmd_info)
    _registered_commands(sub)
    return p


def _registered_commands(sub: argparse._SubParsersAction) -> None:
    """Add the subcommands of the installed packages' COMMANDS entry points (none where they are not shipped)."""
    from importlib.metadata import entry_points

    found = entry_points()
    for entry in found.select(group=COMMANDS) if hasattr(found, "select") else found.get(COMMANDS, []):
        try:
            register = entry.load()
        except ImportError:  # its package is not shipped here (the research ring in the Slicer extension)
            continue
        register(sub)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    keep_freed_blocks()
    args.argv = argv
    if getattr(args, "model", None):
        from .weights import shipped_weights

        args.weights = str(shipped_weights(args.model))
    try:
        status = args.func(args)
    except UserError as err:
        print(f"speckle2self: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Cancelled:
        print("speckle2self: cancelled; nothing was written", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("speckle2self: interrupted; nothing was written", file=sys.stderr)
        return 130
    return status or 0
