"""`vssflow train RECIPE [--set k=v] [--out runs/NAME] [--resume [auto]]` (also under torchrun for several processes)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the `train` subcommand."""
    p = sub.add_parser("train", help="train a model from a recipe (torchrun for several GPUs or nodes)")
    p.add_argument("recipe", metavar="RECIPE", help="recipe file or built-in recipe name")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=None, help="run directory (default: runs/<recipe name>)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="auto",
                   help="continue from the newest complete checkpoint in <out>/checkpoints (an error when there "
                        "is none); `--resume auto`: continue if possible, else start a new run")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--steps", type=int, default=None, help="stop after this many steps (default: train.steps)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--processes", default="1", metavar="N",
                   help="on a CPU: train data-parallel in N local processes, each on its share of every batch "
                        "(`auto`: one per core, up to 4); default 1. GPUs: use torchrun")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train and print where the checkpoint is."""
    from vssflow.cli.processes import processes_arg
    from vssflow.training import train

    result = train(
        args.recipe, out_dir=args.out, overrides=args.overrides, resume=args.resume, device=args.device,
        max_steps=args.steps, progress=not args.no_progress,
        processes=processes_arg(args.processes),
    )
    if result is not None:
        print(f"checkpoint: {result}")
    return 0

