"""`vssflow generate --checkpoint DIR (--video X.mp4 [...] | --manifest M.jsonl) --out OUT`."""

from __future__ import annotations

import argparse
import sys

from vssflow.cli.processes import add_option


def _span(text: str) -> tuple[float, float]:
    try:
        start, end = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:END in seconds, e.g. 1.2:3.4, got {text!r}") from None
    if not 0 <= start < end:
        raise argparse.ArgumentTypeError(f"speech span needs 0 <= start < end, got {text!r}")
    return start, end


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, e.g. 0.5, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the `generate` subcommand."""
    p = sub.add_parser("generate", help="generate audio for videos (and transcripts) with a trained checkpoint")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (runs/NAME/checkpoints/last)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", help="a video file")
    src.add_argument("--manifest", help="a JSONL manifest of clips")
    p.add_argument("--transcript", help="the words spoken (VisualTTS)")
    p.add_argument("--caption", help="what is on screen and heard (checkpoints with a caption condition)")
    p.add_argument("--negative-prompt", metavar="TEXT",
                   help="a caption to steer away from (e.g. \"music\"): guidance contrasts with it instead of "
                        "with no caption")
    p.add_argument("--speaker", help="a reference recording of the voice")
    p.add_argument("--speech-span", type=_span, help="START:END seconds where the speech goes (mixtures)")
    p.add_argument("--prompt-audio", metavar="WAV",
                   help="continue this audio: its seconds are kept as the start of the output (audio-prompt route)")
    p.add_argument("--inpaint", type=_span, metavar="START:END",
                   help="regenerate START:END seconds of --audio, keeping the rest (audio-prompt route)")
    p.add_argument("--audio", metavar="WAV", help="the existing soundtrack --inpaint changes")
    p.add_argument("--voice-prompt", metavar="WAV",
                   help="a recording of the voice, put before the clip as known audio (audio-prompt route); the "
                        "output is the clip only")
    p.add_argument("--long", choices=["continuation", "crossfade"], default=None,
                   help="how windows of long videos join: each continues the one before (default with an "
                        "audio-prompt route) or independent windows cross-faded")
    p.add_argument("--join", type=_seconds, default=None, metavar="SECONDS",
                   help="continuation: seconds of the window before that each window writes again and "
                        "cross-fades into (default 3/4 of --overlap, at most --overlap less one latent frame; 0: "
                        "none, new audio starts right after the known audio)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--steps", type=int, help="sampling steps (default: the recipe's sampler)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale")
    p.add_argument("--sampler", help="sampler name (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8, help="clips per batch for --manifest")
    p.add_argument("--overlap", type=float, default=1.0, help="seconds of overlap between windows of long videos")
    p.add_argument("--device", default=None)
    add_option(p)
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                   help="bf16 autocast on CUDA (default: the recipe's train.precision; CPU runs fp32)")
    p.add_argument("--overwrite", action="store_true",
                   help="regenerate clips already listed in OUT/generated.jsonl (default: skip them)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    add_adapter_arguments(p)
    p.set_defaults(func=run)


def add_adapter_arguments(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """--adapter A [--adapter-scale s], both repeatable and paired by position."""
    p.add_argument("--adapter", dest="adapters", action="append", default=[], metavar="DIR",
                   help=prefix + "an adapter checkpoint trained on --checkpoint (repeatable: several adapters add up)")
    p.add_argument("--adapter-scale", dest="adapter_scales", action="append", type=float, default=[], metavar="S",
                   help="scale of the adapter at the same position (default 1; 0 turns it off)")


def run(args: argparse.Namespace) -> int:
    """Generate and list the files written, as each clip is published."""
    from vssflow.cli.processes import run_split

    split = run_split(args, run)
    if split is not None:
        return split
    from vssflow.generation import generate_cli

    for path in generate_cli(args):
        # one write a line: under torchrun the ranks share the terminal, and a path must not be split by another
        sys.stdout.write(f"{path}\n")
        sys.stdout.flush()
    return 0
