"""`vssflow demo`: synthetic data -> tiny unified model -> generation -> an offline HTML report."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the `demo` subcommand."""
    p = sub.add_parser("demo", help="end to end on this machine: data, training, generation, report")
    p.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    p.add_argument("--recipe", default="unified-demo", help="recipe (default: unified-demo)")
    p.add_argument("--clips", type=int, default=None, help="synthetic training clips")
    p.add_argument("--steps", type=int, default=None, help="training steps")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default=None)
    p.add_argument("--processes", default="auto", metavar="N",
                   help="training processes on a CPU, each on its share of every batch (default auto: one per "
                        "core, up to 4; 1: train in this process)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print where the report is."""
    import os

    # before torch loads OpenMP: idle threads sleep instead of spinning, so a busy machine (or the demo's own
    # data worker) does not make every parallel region wait for a descheduled spinner (docs/scale.md)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from vssflow.cli.processes import processes_arg
    from vssflow.demo import run_demo

    report = run_demo(out=args.out, recipe=args.recipe, clips=args.clips, steps=args.steps,
                      overrides=args.overrides, device=args.device,
                      processes=processes_arg(args.processes))
    print(f"report: {report}")
    import shlex
    from pathlib import Path

    checkpoint = shlex.quote(str(Path(args.out) / "run" / "checkpoints" / "last"))
    print(f"try the model in the browser (needs pip install 'vssflow[app]'): vssflow app --checkpoint {checkpoint}")
    return 0
