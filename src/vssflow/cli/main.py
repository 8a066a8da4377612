"""`vssflow` command line. Each subcommand lives in its own module exposing `add_parser(subparsers)`.

Command modules import nothing heavy at module level, so `vssflow --help` stays fast; user errors
(VssflowError) print one line and exit with their code, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

from vssflow import __version__

# order = order in --help
COMMAND_MODULES = (
    "demo",
    "train",
    "generate",
    "app",
    "evaluate",
    "ablate",
    "data",
    "features",
    "train_vocoder",
    "adapter",
    "checkpoint",
    "recipe",
    "plugins",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="vssflow",
        description="Video-conditioned sound and speech generation with flow matching.",
    )
    parser.add_argument("--version", action="version", version=f"vssflow {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module_name = f"vssflow.cli.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).add_parser(sub)
    return parser


def error_line(command: str, exc: BaseException) -> str:
    """The one line a user error prints: `vssflow COMMAND: error: MESSAGE` (the app shows the same line)."""
    return f"vssflow {command}: error: {exc}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vssflow` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    from vssflow.core.errors import VssflowError

    try:
        result = args.func(args)
    except VssflowError as exc:
        if args.verbose:
            raise
        print(error_line(args.command, exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"vssflow {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
