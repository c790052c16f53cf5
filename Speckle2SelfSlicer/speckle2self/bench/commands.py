"""The research ring's commands (`bench-speed`, `bench`, `simulate`, `finetune-curve`, `ablation`), registered in
`speckle2self`'s command line through the `speckle2self.commands` entry point group: the product's cli never
imports this ring, and runs without it where it is not shipped (the Slicer extension)."""
from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from ..cli import progress_bar
from ..errors import UserError


def cmd_bench_speed(args) -> None:
    from .speed import QUICK, SpeedPlan, bench_speed, markdown, write

    data = Path(args.data) if args.data else None
    if data is not None and not data.is_dir():
        raise UserError(f"Data folder {data} not found", "give the shared data folder or leave --data out")
    results = bench_speed(QUICK if args.quick else SpeedPlan(compile=not args.no_compile), data)
    print(markdown(results))
    if args.out:
        write(results, Path(args.out))
        print(args.out)


def cmd_bench(args) -> None:
    from .benchmark import bench_config, benchmark_job, tune
    from .report import main_table, output_folder, tuning_table, write_report

    if args.tune:
        print(tuning_table(tune(args.count or 4, methods=args.methods, device=args.device)))
        return
    if args.carotid_figure:
        from .published import DEFAULT_REFERENCE, comparison_figure

        path, scored = comparison_figure(Path(args.reference or DEFAULT_REFERENCE), Path(args.carotid_figure),
                                         args.weights, finetune_steps=args.finetune_steps)
        print(json.dumps({"figure": str(path), "scores": scored}, indent=1))
        return
    config = bench_config(args.quick, args.budget, args.methods, args.data, args.count, args.device, args.weights,
                          args.reference)
    out = output_folder(args.out, args.quick)
    result = progress_bar(benchmark_job(config), "task")
    print(main_table(result))
    for path in write_report(result, out, "speckle2self " + shlex.join(args.argv)):
        print(path)


def cmd_simulate(args) -> None:
    import numpy as np

    from ..image_io import write_image
    from .sets import eight_bit
    from .simulate import simulate_set

    if args.count < 1:
        raise UserError(f"The image count must be at least 1, got {args.count}", "e.g. --count 24")
    if args.clean and Path(args.clean).resolve() == Path(args.output).resolve():
        raise UserError("--clean names the same file as --output", "give the clean references their own file")
    images = simulate_set(args.setting, args.count, args.size, args.seed)
    stacks = {args.output: eight_bit(np.stack([i.noisy for i in images]))}
    if args.clean:
        stacks[args.clean] = eight_bit(np.stack([i.clean for i in images]))
    for path, stack in stacks.items():  # every output is checked before the first is written
        write_image(path, stack, force=args.force, check_only=True)
    for path, stack in stacks.items():
        write_image(path, stack, force=args.force)
        print(path)


def _check_page(out: str | None) -> None:
    """Refuse a markdown output whose folder is missing, before any work."""
    if out and not Path(out).resolve().parent.is_dir():
        raise UserError(f"The output folder {Path(out).parent} does not exist", "create it first")


def _print_page(table: str, out: str | None, title: str, intro: str) -> None:
    """Print a result table and, with `out`, write it as a markdown page under `title` and `intro`."""
    print(table)
    if out:
        Path(out).write_text(f"# {title}\n\n{intro}\n\n{table}\n")
        print(out)


def cmd_finetune_curve(args) -> None:
    from .finetune_curve import HELD_OUT, finetune_curve, markdown
    from .sets import DEFAULT_DATA

    _check_page(args.out)
    if args.carotid_steps is not None:
        from .finetune_curve import carotid_finetune, carotid_markdown
        from .published import DEFAULT_REFERENCE

        rows = carotid_finetune(Path(args.reference or DEFAULT_REFERENCE), args.carotid_steps, args.weights)
        _print_page(carotid_markdown(rows), args.out, "Fine-tuning on each real carotid clip",
                    f"each clip's 3 input frames, fine-tuned as the Slicer module does, scored against the "
                    f"method's published output; `speckle2self {shlex.join(args.argv)}`")
        return
    rate = {} if args.lr is None else {"lr": args.lr}  # the parser is built without torch: no FINETUNE_LR here
    rows = finetune_curve(Path(args.data or DEFAULT_DATA), tuple(args.seconds), args.weights, **rate)
    _print_page(markdown(rows), args.out, "Fine-tuning on a held-out sequence",
                f"`{HELD_OUT}` (never used in training), fine-tuned as the Slicer module does; "
                f"`speckle2self {shlex.join(args.argv)}`")


def cmd_ablation(args) -> None:
    from .ablation import ablation_job, markdown

    if not args.budget > 0:
        raise UserError(f"The training budget must be positive, got {args.budget}", "e.g. --budget 120")
    _check_page(args.out)
    rows = progress_bar(ablation_job(args.budget, args.setting, device=args.device), "s")
    _print_page(markdown(rows), args.out, f"Ablation on {args.setting}",
                f"`speckle2self {shlex.join(args.argv)}`: each variant trained from scratch for {args.budget:g} s "
                "(times its budget multiple) on the setting's training images, scored on its test images.")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the research ring's commands to the command line's subparsers."""
    b = sub.add_parser("bench-speed", help="measure inference, cine and fine-tuning speed of each execution path")
    b.add_argument("--out", help="write this markdown file (and a .json beside it), e.g. docs/performance.md")
    b.add_argument("--data", help="shared data folder: adds real frames to the output-agreement check")
    b.add_argument("--quick", action="store_true", help="tiny sizes, seconds not minutes (a smoke run)")
    b.add_argument("--no-compile", action="store_true", help="skip the torch.compile paths (minutes to compile)")
    b.set_defaults(func=cmd_bench_speed)

    q = sub.add_parser("bench", help="quality benchmark: every method on simulated sets and real images")
    q.add_argument("--quick", action="store_true", help="tiny images, few methods, seconds of training (CI)")
    q.add_argument("--out", help="folder for benchmark.md/.png/.json (default: docs/; quick: a new temp folder)")
    q.add_argument("--data", help="shared data folder with the real images (default: ../shared/data if present)")
    q.add_argument("--reference", help="folder of the method's published output on real carotid scans (default: "
                   "../shared/reference/carotid_published if present)")
    q.add_argument("--budget", type=float, help="training seconds per trained method and set (default 90)")
    q.add_argument("--count", type=int, help="test images per simulated set (default 8; --tune: S-II images, 4)")
    q.add_argument("--methods", nargs="+", metavar="KEY", help="only these methods (keys as in docs/benchmark.md)")
    q.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    q.add_argument("--weights", help="also score these Speckle2Self weights (row s2s-candidate) beside the shipped ones")
    q.add_argument("--carotid-figure", metavar="PNG", help="only write input | published | ours (gamma 2) for "
                   "three real carotid frames (--weights: ours, default the shipped model); no benchmark")
    q.add_argument("--finetune-steps", type=int, help="with --carotid-figure: a fourth column, ours fine-tuned on "
                   "each clip's own input frames for this many steps")
    q.add_argument("--tune", action="store_true", help="score each method's grid on S-II and print it; no benchmark")
    q.set_defaults(func=cmd_bench)

    s = sub.add_parser("simulate", help="write simulated B-mode images (8-bit stack) and optionally their clean "
                       "references")
    s.add_argument("-o", "--output", required=True, help="output file for the noisy stack (.nrrd .mha .npy ...)")
    s.add_argument("--clean", help="also write the clean references to this file")
    s.add_argument("--setting", default="S-II", choices=("S-I", "S-II", "S-III"))
    s.add_argument("--count", type=int, default=24, help="images, cycling through the phantoms")
    s.add_argument("--size", type=int, default=256)
    s.add_argument("--seed", type=int, default=0, help="first seed (the benchmark tests on 0.., trains on 10000..)")
    s.add_argument("--force", action="store_true", help="overwrite existing outputs")
    s.set_defaults(func=cmd_simulate)

    f = sub.add_parser("finetune-curve", help="homogeneity and gCNR of a held-out real sequence against "
                       "seconds of fine-tuning")
    f.add_argument("--data", help="shared data folder (default: ../shared/data)")
    f.add_argument("--weights", help="starting weights (default: the shipped model)")
    f.add_argument("--seconds", type=float, nargs="+", default=[30, 60, 120], help="fine-tuning budgets")
    f.add_argument("--lr", type=float, help="fine-tuning learning rate (default: the module's, 3e-4)")
    f.add_argument("--carotid-steps", type=int, help="instead: fine-tune on each real carotid clip of the "
                   "published reference for this many steps and score it against the published output")
    f.add_argument("--reference", help="the carotid_published folder (default: ../shared/reference/...)")
    f.add_argument("--out", help="write the table to this markdown file")
    f.set_defaults(func=cmd_finetune_curve)

    a = sub.add_parser("ablation", help="train each design variant from scratch under one budget and score it")
    a.add_argument("--budget", type=float, default=120.0, help="training seconds of the reference variant")
    a.add_argument("--setting", default="S-II", choices=("S-I", "S-II", "S-III"))
    a.add_argument("--device", default="cpu")
    a.add_argument("--out", help="write the table to this markdown file")
    a.set_defaults(func=cmd_ablation)
