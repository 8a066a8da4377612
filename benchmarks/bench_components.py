"""Throughput of the built-in encoders, codecs and vocoders, built through the registry like a recipe does.

    python benchmarks/bench_components.py               # tiny variants (their registered `tiny` params), CPU
    python benchmarks/bench_components.py --full        # also the default (paper-sized) variants
    python benchmarks/bench_components.py --device cuda --threads 0

Encoders: frames (or phoneme/feature frames) per second of batch 2 x `--frames` frames (4 for the default
ViT-B/16 on CPU), forward only.
Codecs and vocoders: real-time factor = compute seconds / audio seconds (below 1 is faster than real time)
on batch 1 x `--seconds` of audio; codec round trips report encode and decode separately.
Each number is the best of `--repeat` timed runs after one warm-up run, under torch.inference_mode.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator

import torch

from vssflow.registry import create, get_spec

HEAVY = ("timm-video", "clip-vit-b16")  # default variants are CLIP ViT-B/16 at 224 px


def _best_seconds(fn: Callable[[], object], repeat: int, device: torch.device) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)  # the least disturbed run: other load only ever adds time


def _build(kind: str, name: str, tiny: bool, extra: dict | None = None):
    spec = get_spec(kind, name)
    required = [k for k, f in spec.params.model_fields.items() if f.is_required()]
    params = dict(spec.tiny) if tiny else {k: spec.tiny[k] for k in required}  # e.g. precomputed's dim
    params.update(extra or {})
    torch.manual_seed(0)
    return create(kind, name, **params)


def bench_encoders(args, device: torch.device, tiny: bool) -> Iterator[tuple[str, str, str]]:
    """(component, variant, frames/s) rows."""
    for name in ("tiny-cnn", "motion", "lip", "timm-video", "clip-vit-b16", "phoneme", "speaker", "precomputed"):
        enc = _build("encoder", name, tiny).to(device).eval()
        # a 224 px ViT-B/16 frame costs ~17 GFLOPs: a few frames are enough to measure it on a CPU
        frames = min(args.frames, 4) if name in HEAVY and not tiny and device.type == "cpu" else args.frames
        if enc.modality == "video":
            h, w = enc.contract.size
            inputs = {"x": torch.rand(2, frames, 3, h, w, device=device)}
            count = 2 * frames
        elif enc.modality == "transcript":
            inputs = {"x": torch.randint(1, enc.vocab_size, (2, 40), device=device), "num_frames": frames,
                      "span": torch.tensor([[0.0, frames / enc.fps]] * 2, device=device)}
            count = 2 * frames
        elif enc.modality == "speaker":
            inputs = {"x": 0.1 * torch.randn(2, enc.sample_rate * 3, device=device)}
            count = 2 * 300  # mel frames at 100 Hz
        else:
            inputs = {"x": torch.randn(2, frames, enc.dim, device=device)}
            count = 2 * frames
        with torch.inference_mode():
            seconds = _best_seconds(lambda enc=enc, inputs=inputs: enc(**inputs), args.repeat, device)
        yield f"encoder {name}", "tiny" if tiny else "default", f"{count / seconds:,.0f} frames/s"


def bench_audio(args, device: torch.device, tiny: bool) -> Iterator[tuple[str, str, str]]:
    """(component, variant, real-time factor) rows for codecs and vocoders."""
    wav = 0.1 * torch.randn(1, int(args.seconds * 16000), device=device)
    for name in ("log-mel", "vae"):
        codec = _build("codec", name, tiny).to(device).eval()
        with torch.inference_mode():
            latent = codec.encode(wav)
            enc_s = _best_seconds(lambda codec=codec: codec.encode(wav), args.repeat, device)
            dec_s = _best_seconds(lambda codec=codec, latent=latent: codec.decode(latent), args.repeat, device)
        variant = "tiny" if tiny else "default"
        yield f"codec {name} encode", variant, f"RTF {enc_s / args.seconds:.4f}"
        yield f"codec {name} decode", variant, f"RTF {dec_s / args.seconds:.4f}"
    log_mel = create("codec", "log-mel")
    with torch.inference_mode():
        mel = log_mel.decode(log_mel.encode(wav.cpu())).to(device)  # (1, 64, F)
    for name in ("griffin-lim", "hifigan", "vocos"):
        vocoder = _build("vocoder", name, tiny).to(device).eval()
        with torch.inference_mode():
            seconds = _best_seconds(lambda vocoder=vocoder: vocoder(mel), args.repeat, device)
        yield f"vocoder {name}", "tiny" if tiny else "default", f"RTF {seconds / args.seconds:.4f}"


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also benchmark the default (paper-sized) variants")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--frames", type=int, default=50, help="frames per clip for encoders")
    parser.add_argument("--seconds", type=float, default=4.0, help="audio seconds for codecs and vocoders")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, {torch.get_num_threads()} threads, encoders: 2 x {args.frames} frames, "
          f"audio: {args.seconds:g} s")
    print(f"{'component':<24}  {'variant':<8}  result", flush=True)
    for tiny in (True, False) if args.full else (True,):
        for bench in (bench_encoders, bench_audio):
            for component, variant, result in bench(args, device, tiny):
                print(f"{component:<24}  {variant:<8}  {result}", flush=True)


if __name__ == "__main__":
    main()
