"""`vssflow train-vocoder SOURCE [--out DIR] [--steps N]`: GAN-train a `vocos` vocoder.

SOURCE is a recipe (its dataset's audio, at its codec's mel analysis) or a folder of .wav/.flac/.ogg files
(mel analysis from --sample-rate/--n-mels/--hop-length/--n-fft, the paper's by default). The folder written
(config.json + model.safetensors) is what vocoder `vocos` loads: `vocoder: {name: vocos, params: {path: DIR}}`.
Running again with the same --out resumes.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the `train-vocoder` subcommand."""
    p = sub.add_parser("train-vocoder", help="train a vocos vocoder on a recipe's audio or a folder of audio files")
    p.add_argument("source", metavar="RECIPE", help="recipe file or name, or a folder of audio files")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override (repeatable)")
    p.add_argument("--out", default=None, help="output folder (default: runs/vocoder-<recipe or folder name>)")
    p.add_argument("--steps", type=int, default=20000, help="total training steps (default 20000)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--segment-s", type=float, default=1.0, help="seconds of audio per training example")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--gan-start", type=int, default=0, help="mel-loss-only steps before the GAN losses join")
    p.add_argument("--disc-scale", type=float, default=1.0, help="discriminator width multiplier")
    p.add_argument("--dim", type=int, default=512, help="vocos backbone width")
    p.add_argument("--intermediate-dim", type=int, default=1536, help="vocos MLP width")
    p.add_argument("--layers", type=int, default=8, help="vocos ConvNeXt blocks")
    p.add_argument("--max-clips", type=int, default=None, help="use at most this many clips")
    p.add_argument("--sample-rate", type=int, default=16000, help="folder source only")
    p.add_argument("--n-mels", type=int, default=64, help="folder source only")
    p.add_argument("--hop-length", type=int, default=160, help="folder source only")
    p.add_argument("--n-fft", type=int, default=1024, help="folder source only")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--ckpt-every", type=int, default=1000)
    p.set_defaults(func=run)


def _recipe_audio(source: str, overrides: list[str], limit: int | None):
    """(name, clips, MelSpec) from a recipe: its dataset's audio at its codec's mel analysis."""
    from vssflow.core.errors import RecipeError
    from vssflow.registry import create
    from vssflow.registry.recipe import load_recipe

    recipe = load_recipe(source, overrides)
    if recipe.data is None:
        raise RecipeError(f"{source}: the recipe has no data section; pass a folder of audio files instead")
    codec = create("codec", recipe.audio.codec.name, **recipe.audio.codec.params)
    if codec.mel is None:
        raise RecipeError(f"{source}: codec {recipe.audio.codec.name!r} decodes straight to a waveform; it has no mel "
                          "for a vocoder to learn")
    dataset = create("dataset", recipe.data.name, **recipe.data.params)
    if hasattr(dataset, "configure"):  # serve audio at the recipe's rate and window, no conditions
        from vssflow.core.sequence import SequenceSpec

        dataset = dataset.configure(spec=SequenceSpec(codec.sample_rate, codec.hop_length, recipe.audio.duration_s))
    clips = []
    for i in range(len(dataset) if limit is None else min(limit, len(dataset))):
        item = dataset[i]
        wav = item["wav"]
        clips.append(wav[: int(item.get("wav_length", wav.shape[-1]))])
    return recipe.name, clips, codec.mel


def run(args: argparse.Namespace) -> int:
    """Train and print the folder to load with vocoder `vocos`."""
    from pathlib import Path

    import torch

    from vssflow.core.interfaces import MelSpec
    from vssflow.plugins.vocoders.training import VocoderTrainConfig, read_wav_dir, train_vocoder

    source = Path(args.source)
    if source.is_dir():
        mel = MelSpec(args.sample_rate, args.n_fft, args.n_fft, args.hop_length, args.n_mels, 0.0, args.sample_rate / 2)
        name, clips = source.resolve().name, read_wav_dir(source, mel.sample_rate, args.max_clips)
    else:
        name, clips, mel = _recipe_audio(args.source, args.overrides, args.max_clips)
    out = Path(args.out) if args.out else Path("runs") / f"vocoder-{name}"
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    config = VocoderTrainConfig(
        steps=args.steps, batch_size=args.batch_size, segment_s=args.segment_s, lr=args.lr, gan_start=args.gan_start,
        disc_scale=args.disc_scale, seed=args.seed, log_every=args.log_every, ckpt_every=args.ckpt_every, device=device,
    )
    params = {"dim": args.dim, "intermediate_dim": args.intermediate_dim, "layers": args.layers}
    print(f"training vocoder on {len(clips)} clips ({sum(c.numel() for c in clips) / mel.sample_rate:.1f} s) -> {out}")
    train_vocoder(clips, mel, out, config, params)
    print(f"vocoder: {out}  (recipe: vocoder: {{name: vocos, params: {{path: {out}}}}})")
    return 0
