"""`vssflow features extract RECIPE --manifest M`: cache the outputs of a recipe's frozen encoders.

Under `torchrun --nproc_per_node=N -m vssflow features extract ...` each process encodes its share of the
missing clips (docs/scale.md)."""

from __future__ import annotations

import argparse
import sys

from vssflow.cli.processes import add_option


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the `features` subcommand group."""
    p = sub.add_parser("features", help="precompute frozen-encoder features into a cache")
    fsub = p.add_subparsers(dest="features_command", metavar="ACTION", required=True)
    ext = fsub.add_parser("extract", help="run each frozen encoder of a recipe over a manifest (resumable)")
    ext.add_argument("recipe", metavar="RECIPE", help="recipe file or built-in recipe name")
    ext.add_argument("--manifest", required=True, metavar="M.jsonl", help="clips to encode")
    ext.add_argument("--out", default=None, help="cache root (default: the recipe's data.features_cache, "
                     "else a features/ folder next to the manifest)")
    ext.add_argument("--workers", type=int, default=0, help="DataLoader worker processes for decoding (default 0)")
    ext.add_argument("--batch-size", type=int, default=4, help="clips per encoder call (default 4)")
    ext.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")
    add_option(ext)
    ext.add_argument("--conditions", default=None, metavar="A,B", help="only these conditions (default: all)")
    ext.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="recipe override (repeatable)")
    ext.add_argument("--no-progress", action="store_true", help="no progress bar")
    ext.set_defaults(func=run_extract)


def run_extract(args: argparse.Namespace) -> int:
    """Build the recipe's encoders, extract the frozen ones, print where the features went."""
    from vssflow.cli.processes import run_split

    split = run_split(args, run_extract)
    if split is not None:
        return split
    from pathlib import Path

    from vssflow.core.errors import RecipeError, VssflowError
    from vssflow.core.feature_extraction import extract_features
    from vssflow.core.manifest import read_manifest
    from vssflow.core.sharding import Shard, process_group, rank_device
    from vssflow.registry import create, get_spec
    from vssflow.registry.catalog import validate_params
    from vssflow.registry.recipe import load_recipe

    if args.workers < 0 or args.batch_size < 1:
        raise VssflowError("--workers must be >= 0 and --batch-size >= 1")
    # only the encoders matter here: validate those, not the whole model
    recipe = load_recipe(args.recipe, args.overrides, components=False)
    wanted = None if args.conditions is None else [c.strip() for c in args.conditions.split(",") if c.strip()]
    unknown = [c for c in wanted or [] if c not in recipe.conditions]
    if unknown:
        raise RecipeError(f"{args.recipe}: no condition {unknown[0]!r} (it has: {', '.join(recipe.conditions)})")
    records = read_manifest(args.manifest)
    root = Path(args.out or (recipe.data.features_cache if recipe.data and recipe.data.features_cache else
                              Path(args.manifest).parent / "features"))
    encoders, tasks = {}, {}
    for cname, cond in recipe.conditions.items():
        if wanted is not None and cname not in wanted:
            continue
        spec = get_spec("encoder", cond.encoder.name)
        params = validate_params(spec, cond.encoder.params, where=f"conditions.{cname}.encoder.params")
        encoders[cname] = create("encoder", cond.encoder.name, **params.model_dump(mode="json"))
        tasks[cname] = cond.tasks
    shard = Shard.from_env()
    device = rank_device(args.device, shard)  # under torchrun: one GPU per process
    with process_group(shard):
        reports = extract_features(encoders, records, root, tasks=tasks, workers=args.workers,
                                   batch_size=args.batch_size, device=device,
                                   progress=not args.no_progress and shard.is_main, shard=shard)
    prefix = f"[rank {shard.rank}/{shard.world}] " if shard.sharded else ""
    # one write for all of a rank's lines: the ranks share the terminal, and a line must not be split by another
    sys.stdout.write("".join(f"{prefix}{report.line()}\n" for report in reports))
    sys.stdout.flush()
    if not any(r.folder is not None for r in reports) and shard.is_main:
        print("no frozen encoders in this recipe: nothing to cache")
    return 0
