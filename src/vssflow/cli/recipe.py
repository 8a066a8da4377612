"""`vssflow recipe check FILE...` and `vssflow recipe show FILE [--set k=v ...]`."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the `recipe` subcommand group."""
    p = sub.add_parser("recipe", help="validate or print recipes")
    rsub = p.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)
    check = rsub.add_parser("check", help="validate recipes (structure, then every component's params)")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    check.set_defaults(func=run_check)
    show = rsub.add_parser("show", help="print the fully resolved recipe with defaults filled in")
    show.add_argument("file", metavar="FILE")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    show.add_argument("--no-count", action="store_true", help="skip the parameter count")
    show.set_defaults(func=run_show)


def run_check(args: argparse.Namespace) -> int:
    """Validate each file; report every failure, exit 2 if any failed."""
    from vssflow.core.errors import VssflowError
    from vssflow.registry.recipe import load_recipe

    failed = 0
    for path in args.files:
        try:
            recipe = load_recipe(path, args.overrides)
        except VssflowError as exc:
            failed += 1
            print(f"vssflow recipe check: error: {exc}", file=sys.stderr)
            continue
        print(f"ok  {path}  ({recipe.name}: {recipe.task}, {len(recipe.conditions)} conditions)")
    return 2 if failed else 0


def run_show(args: argparse.Namespace) -> int:
    """Print the resolved recipe, then its trainable parameter count."""
    from vssflow.registry.recipe import load_recipe

    recipe = load_recipe(args.file, args.overrides)
    print(recipe.to_yaml(), end="")
    if not args.no_count:
        try:
            from vssflow.registry.assemble import count_parameters
        except ImportError:
            return 0
        counts = count_parameters(recipe)
        print(f"# trainable parameters: {counts['trainable']:,} ({counts['trainable'] / 1e6:.1f} M)")
        print(f"# frozen parameters: {counts['frozen']:,} ({counts['frozen'] / 1e6:.1f} M; codec "
              f"{counts['audio']['codec'] / 1e6:.1f} M)")
        a = counts["audio"]
        print(f"# audio: {a['sample_rate']} Hz, {a['channels']} channel(s); latent {a['frames']} frames x "
              f"{a['latent_channels']} channels at {a['latent_fps']:.4g} Hz (hop {a['hop_length']})")
        if recipe.adapter is not None:
            from vssflow.adapters import adapter_parameter_count
            from vssflow.core.errors import VssflowError

            try:
                n, modules = adapter_parameter_count(recipe)
            except VssflowError as exc:  # peft not installed, targets that match nothing
                print(f"# adapter {recipe.adapter.name}: not counted ({exc})")
            else:
                print(f"# adapter {recipe.adapter.name}: {n:,} parameters on {modules} modules train; the model's "
                      "parameters above stay frozen")
    return 0
