"""`vssflow ablate GRID.yaml --out runs/NAME`: train, generate and score every variant x seed of a grid
(resumable), then write results.csv, results.md, plots and index.html."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the `ablate` subcommand."""
    p = sub.add_parser("ablate", help="run an ablation grid (variants x seeds) and tabulate the metrics with 95%% CIs")
    p.add_argument("grid", metavar="GRID.yaml", help="grid file: base recipe, variants, seeds, evaluation")
    p.add_argument("--out", required=True, help="ablation folder (rerun the same command to resume)")
    p.add_argument("--only", help="comma-separated variants to run (default: all)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override for every variant, after the grid's own (e.g. train.steps=60)")
    p.add_argument("--report-only", action="store_true", help="only rewrite results.md, plots and index.html")
    p.add_argument("--rescore", action="store_true",
                   help="train nothing: score the saved audio of every evaluated step with the grid's metrics "
                        "that a run lacks (metrics added to eval.metrics later), then rewrite the results")
    p.add_argument("--launcher", choices=["local", "torchrun"], help="run each training under torchrun")
    p.add_argument("--nproc", type=int, help="processes per run under torchrun (GPUs per node)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: the grid's, else cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run or resume the grid and print where the results are."""
    from vssflow.ablation import run_ablation

    only = [v.strip() for v in args.only.split(",") if v.strip()] if args.only else None
    settings = {k: v for k, v in (("launcher", args.launcher), ("nproc", args.nproc), ("device", args.device))
                if v is not None}
    page = run_ablation(args.grid, args.out, progress=not args.no_progress, only=only,
                        report_only=args.report_only, overrides=settings, recipe_overrides=args.overrides,
                        rescore=args.rescore)
    print(f"results: {page.parent / 'results.md'}\nreport: {page}")
    return 0
