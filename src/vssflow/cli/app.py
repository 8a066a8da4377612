"""`vssflow app --checkpoint DIR [--checkpoint DIR2] [--host 127.0.0.1] [--port 7860]`: the local web app."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the `app` subcommand."""
    p = sub.add_parser("app", help="a local web app: generate, compare and batch-generate in the browser "
                                   "(pip install 'vssflow[app]')")
    p.add_argument("--checkpoint", action="append", required=True, metavar="DIR",
                   help="checkpoint directory (runs/NAME/checkpoints/last); give it twice to compare two models")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    p.add_argument("--out", default="runs/app", help="where generated files are kept (default: runs/app)")
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=int, default=8, help="windows generated at once")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl+C; prints the address to open."""
    from vssflow.app import require_gradio, serve

    require_gradio()  # before the checkpoints are loaded

    def ready(url: str) -> None:
        print(f"vssflow app: open {url} in a browser (Ctrl+C stops it); outputs go to {args.out}", flush=True)

    serve(args.checkpoint, host=args.host, port=args.port, out=args.out, device=args.device,
          batch_size=args.batch_size, ready=ready)
    return 0
