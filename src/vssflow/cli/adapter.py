"""`vssflow adapter merge BASE A [A ...] --out DIR` and `vssflow adapter show A`."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the `adapter` subcommand group."""
    p = sub.add_parser("adapter", help="adapter checkpoints (LoRA fine-tunes): merge into a base, show")
    asub = p.add_subparsers(dest="adapter_command", metavar="ACTION", required=True)
    merge = asub.add_parser("merge", help="fold adapters into their base checkpoint: a plain checkpoint for generate")
    merge.add_argument("base", metavar="BASE", help="the checkpoint the adapters were trained on")
    merge.add_argument("adapters", nargs="+", metavar="ADAPTER", help="adapter checkpoints (runs/FT/checkpoints/last)")
    merge.add_argument("--scale", dest="scales", action="append", type=float, default=[], metavar="S",
                       help="scale of the adapter at the same position (repeatable; default 1)")
    merge.add_argument("--out", required=True, metavar="DIR", help="new checkpoint folder")
    merge.add_argument("--no-ema", action="store_true", help="merge into the raw base weights, not the EMA weights")
    merge.set_defaults(func=run_merge)
    show = asub.add_parser("show", help="what an adapter checkpoint holds: adapter, modules, size, base")
    show.add_argument("adapter", metavar="ADAPTER")
    show.set_defaults(func=run_show)


def run_merge(args: argparse.Namespace) -> int:
    """Merge and say where the checkpoint is."""
    from vssflow.adapters import merge_adapters, parse_adapters

    out = merge_adapters(args.base, parse_adapters(args.adapters, args.scales), args.out, ema=not args.no_ema)
    print(f"{out}: merged {len(args.adapters)} adapter(s) into {args.base}; "
          f"vssflow generate --checkpoint {out} ...")
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Print the adapter's meta.json entry in a few lines."""
    from vssflow.adapters import adapter_info

    ckpt, info = adapter_info(args.adapter)
    size = sum(f.stat().st_size for f in ckpt.path.glob("*.safetensors") if f.name in ("model.safetensors",))
    base = info.get("base") or {}
    print(f"{ckpt.path}: adapter {info.get('name')} {info.get('params')}")
    print(f"  {len(info.get('modules') or [])} modules, {info.get('parameters')} parameters, "
          f"model.safetensors {size / 1e6:.3f} MB, step {ckpt.meta.get('step')}")
    print(f"  base: {base.get('path')} (recipe {base.get('recipe_name')}, step {base.get('step')}, "
          f"sha256 {str(base.get('sha256'))[:16]})")
    return 0
