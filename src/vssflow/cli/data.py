"""`vssflow data synth|manifest|check`: make the synthetic benchmark, build manifests, validate manifests."""

from __future__ import annotations

import argparse
import sys

LAYOUT_NAMES = ("vggsound", "lrs", "grid", "chem", "folder")
FAMILY_NAMES = ("v2s", "visualtts", "mix")


def _families(text: str) -> tuple[str, ...]:
    names = tuple(f.strip() for f in text.split(",") if f.strip())
    bad = [f for f in names if f not in FAMILY_NAMES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown families {bad}; choose from {','.join(FAMILY_NAMES)}")
    return names


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the `data` subcommand group."""
    p = sub.add_parser("data", help="synthetic benchmark, dataset manifests and their validation")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    synth = dsub.add_parser("synth", help="generate the synthetic audio-visual benchmark (mp4 + wav + labels)")
    synth.add_argument("--out", required=True, help="output folder (reused if complete with the same settings)")
    synth.add_argument("--clips", type=int, default=1000, help="number of clips (default 1000)")
    synth.add_argument("--seconds", type=float, default=4.0, help="clip length in seconds (default 4)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; clip i depends only on (seed, i)")
    synth.add_argument("--families", type=_families, default=FAMILY_NAMES, metavar="F,F",
                       help="comma-separated families: v2s, visualtts, mix (default: all)")
    synth.add_argument("--size", type=int, default=96, help="frame size in pixels (default 96)")
    synth.add_argument("--sample-rate", type=int, default=16000, help="audio sample rate in Hz (default 16000)")
    synth.add_argument("--channels", type=int, default=1, choices=(1, 2),
                       help="audio channels: 2 pans each on-screen source by its x position (default 1)")
    synth.add_argument("--sentences", type=int, default=1,
                       help="sentences per talking-face clip, one after another (default 1; more for long talks)")
    synth.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")
    synth.set_defaults(func=run_synth)

    manifest = dsub.add_parser("manifest", help="build a manifest from a dataset folder of a known layout")
    manifest.add_argument("root", metavar="ROOT", help="dataset folder")
    manifest.add_argument("--layout", default="folder", choices=LAYOUT_NAMES,
                          help="folder layout (see docs/data.md); default folder: any folder of videos with sound")
    manifest.add_argument("--out", required=True, metavar="M.jsonl", help="manifest to write")
    manifest.add_argument("--segment", type=float, metavar="SECONDS",
                          help="folder layout: cut each video into clips of this many seconds (e.g. the model's window)")
    manifest.add_argument("--val-every", type=int, default=10, metavar="N",
                          help="folder layout: every N-th video goes to the val split (default 10; 0: none)")
    manifest.set_defaults(func=run_manifest)

    check = dsub.add_parser("check", help="validate a manifest: fields, files, and with --probe the media itself")
    check.add_argument("manifest", metavar="M.jsonl")
    check.add_argument("--probe", action="store_true", help="also open every media file (slower)")
    check.add_argument("--workers", type=int, default=1, help="threads for --probe")
    check.add_argument("--max-errors", type=int, default=20, help="problems to print (default 20)")
    check.set_defaults(func=run_check)


def run_synth(args: argparse.Namespace) -> int:
    """Generate the synthetic set and print its summary."""
    import time

    from vssflow.plugins.datasets.synth import SynthConfig, generate, read_config

    if args.workers < 1:
        from vssflow.core.errors import VssflowError

        raise VssflowError(f"--workers must be >= 1, got {args.workers}")
    from vssflow.core.files import ensure_dir, write_error

    config = SynthConfig(clips=args.clips, seconds=args.seconds, seed=args.seed, families=tuple(args.families),
                         size=args.size, sample_rate=args.sample_rate, channels=args.channels,
                         sentences=args.sentences)
    started = time.perf_counter()
    ensure_dir(args.out)
    try:
        manifest = generate(args.out, config, workers=args.workers, progress=not args.no_progress)
    except OSError as exc:
        raise write_error(getattr(exc, "filename", None) or args.out, exc) from None
    elapsed = time.perf_counter() - started
    summary = read_config(args.out) or {}
    fams = ", ".join(f"{k}: {v}" for k, v in summary.get("families", {}).items())
    splits = ", ".join(f"{k}: {v}" for k, v in summary.get("splits", {}).items())
    print(f"{manifest}  ({config.clips} clips of {config.seconds:g} s; {fams}; {splits}; {elapsed:.1f} s)")
    return 0


def run_manifest(args: argparse.Namespace) -> int:
    """Scan ROOT with the chosen layout and write the manifest."""
    from vssflow.core.files import write_error
    from vssflow.plugins.datasets.layouts import build_manifest

    try:
        options = {}
        if args.layout == "folder":
            options = {"segment": args.segment, "val_every": args.val_every}
        elif args.segment is not None:
            from vssflow.core.errors import VssflowError

            raise VssflowError(f"--segment goes with --layout folder, not {args.layout}")
        report = build_manifest(args.layout, args.root, args.out, **options)
    except OSError as exc:  # writing the manifest (or its temporary sibling); reading ROOT fails otherwise
        from pathlib import Path

        if exc.filename and Path(exc.filename).parent != Path(args.out).parent:
            raise
        raise write_error(args.out, exc) from None
    print(f"{args.out}: {report.summary()}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Report every problem of a manifest; exit 2 if there is any."""
    from collections import Counter

    from vssflow.core.errors import VssflowError
    from vssflow.core.manifest import check_manifest

    records, problems = check_manifest(args.manifest, probe_media=args.probe, workers=args.workers)
    for problem in problems[: args.max_errors]:
        print(problem.message, file=sys.stderr)
    if len(problems) > args.max_errors:
        print(f"... and {len(problems) - args.max_errors} more", file=sys.stderr)
    tasks = Counter(r.task for r in records)
    hours = sum(r.seconds or 0.0 for r in records) / 3600
    print(f"{args.manifest}: {len(records)} valid clips (" + ", ".join(f"{k}: {v}" for k, v in sorted(tasks.items()))
          + (f"; {hours:.2f} h where lengths are known" if hours else "") + ")")
    if problems:
        raise VssflowError(f"{args.manifest}: {len(problems)} problem(s), first: {problems[0].message}")
    return 0
