"""`--processes N|auto`: run a command in N local CPU processes (vssflow.launch), each with its share.

`train` splits every batch (data parallel); `generate`, `evaluate` and `features extract` split the manifest
exactly as under torchrun (vssflow.core.sharding), so their outputs equal one process's.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def processes_arg(text: str) -> int | str:
    """`--processes`: "auto" or a count."""
    from vssflow.core.errors import RecipeError

    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise RecipeError(f"--processes {text!r}: give a number of processes or 'auto'") from None


def add_option(parser: argparse.ArgumentParser, share: str = "its share of the manifest") -> None:
    """Add `--processes` (default 1) to a command that shards under torchrun."""
    parser.add_argument("--processes", default="1", metavar="N",
                        help=f"on a CPU: run in N local processes, each on {share}, with the result of one "
                             "process (`auto`: one per core, up to 4); default 1. GPUs: use torchrun")


def run_split(args: argparse.Namespace, command: Callable[[argparse.Namespace], int]) -> int | None:
    """Run `command(args)` in the processes `args.processes` asks for and return the exit code (the largest of
    the processes'); None when it asks for one process, so the caller runs the command itself."""
    from vssflow.launch import can_split, plan_processes, run_processes

    requested = processes_arg(args.processes)
    if requested == 1:
        return None
    if not can_split(requested, getattr(args, "device", None)):
        return None
    processes, threads = plan_processes(requested)
    if processes == 1:
        return None
    rank_args = argparse.Namespace(**{**vars(args), "processes": "1"})
    codes = run_processes(_call, (command, rank_args), processes=processes, threads=threads,
                          after_crash="run the same command again: the finished clips are kept and only the missing "
                                      "ones are done")
    return max(int(code or 0) for code in codes)


def _call(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> Any:
    return command(args)
