"""`vssflow checkpoint consolidate SHARDED_DIR --out DIR`: the plain checkpoint of a sharded (FSDP) one."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the `checkpoint` subcommand group."""
    p = sub.add_parser("checkpoint", help="work with checkpoint folders (consolidate sharded FSDP checkpoints)")
    csub = p.add_subparsers(dest="checkpoint_command", metavar="ACTION", required=True)
    con = csub.add_parser("consolidate", help="join a sharded (train.strategy: fsdp) checkpoint into the plain "
                          "single-file one")
    con.add_argument("checkpoint", metavar="DIR", help="sharded checkpoint (runs/NAME/checkpoints/last)")
    con.add_argument("--out", required=True, help="folder for the plain checkpoint (created atomically)")
    con.set_defaults(func=run_consolidate)


def run_consolidate(args: argparse.Namespace) -> int:
    """Consolidate and print where the plain checkpoint went."""
    from vssflow.core.sharded_checkpoint import consolidate

    print(f"checkpoint: {consolidate(args.checkpoint, args.out)}")
    return 0
