"""End-to-end generation time, video file in, waveform out: decode + encoders + ODE with CFG + codec + vocoder.

    python benchmarks/bench_sampling.py                           # the paper model (random weights), GPU
    python benchmarks/bench_sampling.py --recipe unified-tiny --seconds 4 --steps 16 --batch 1 8   # CPU check

The recipe is built with random weights (`Pipeline.untrained`): timing does not depend on the values.
Default: `vssflow-paper-e2e` (the paper's 10-layer 1536-wide DiT, VAE and HiFi-GAN, with CLIP ViT-B/16 and
the motion encoder reading the frames in-process), 10 s clips, 25 Euler steps, guidance 3 (two backbone
passes per step), batch 1 and 32, bf16 autocast on CUDA. A batch of N is N different videos generated in
one call; each row is the median of `--repeat` timed calls after one warm-up call. Columns: seconds per
call, seconds per clip, and the real-time factor (compute seconds per second of audio).
Results are also written to benchmarks/results/sampling_<device>_<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def make_videos(folder: Path, count: int, seconds: float, fps: float = 25.0, size: int = 224) -> list[Path]:
    """`count` different clips of bouncing squares (H.264, no audio)."""
    from vssflow.core.media import write_video

    paths = []
    for k in range(count):
        rng = np.random.default_rng(k)
        n = round(seconds * fps)
        frames = np.full((n, size, size, 3), rng.integers(20, 120, 3), dtype=np.uint8)
        x, y, vx, vy = rng.uniform(20, size - 40, 2).tolist() + rng.uniform(-6, 6, 2).tolist()
        for i in range(n):
            vy += 0.8
            x, y = x + vx, y + vy
            if y > size - 30:
                y, vy = size - 30, -abs(vy) * 0.8
            vx = -vx if not 0 < x < size - 30 else vx
            x = min(max(x, 0), size - 30)
            frames[i, int(y) : int(y) + 24, int(x) : int(x) + 24] = (230, 200, 40)
        paths.append(write_video(folder / f"clip{k:03d}.mp4", frames, fps))
    return paths


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def call(pipe, requests, args, device: torch.device) -> float:
    """Seconds for one generate call over all `requests` in one batch."""
    sync(device)
    start = time.perf_counter()
    pipe.generate(requests, steps=args.steps, guidance=args.guidance, sampler=args.sampler,
                  batch_size=len(requests), precision=args.precision)
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="vssflow-paper-e2e")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--sampler", default="euler")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    from vssflow.generation import ClipRequest, Pipeline
    from vssflow.registry.recipe import load_recipe

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    recipe = load_recipe(args.recipe, args.overrides)
    pipe = Pipeline.untrained(recipe, device=device)
    params = sum(p.numel() for p in pipe.model.parameters())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        videos = make_videos(Path(tmp), max(args.batch), args.seconds)
        for batch in args.batch:
            requests = [ClipRequest(v) for v in videos[:batch]]

            call(pipe, requests, args, device)  # warm-up: kernels compile and autotune, caches fill
            times = [call(pipe, requests, args, device) for _ in range(args.repeat)]
            median = statistics.median(times)
            rows.append({"batch": batch, "seconds_per_call": median, "seconds_per_clip": median / batch,
                         "rtf": median / (batch * args.seconds), "all": times})
    precision = args.precision if device.type == "cuda" else "fp32"  # autocast applies on CUDA only
    print(f"{recipe.name}: {params / 1e6:.1f} M parameters, {args.seconds:g} s clips, {args.sampler} "
          f"{args.steps} steps, guidance {args.guidance:g}, {precision} on {name}")
    print(f"{'batch':>6} {'s / call':>10} {'s / clip':>10} {'RTF':>8}")
    for r in rows:
        print(f"{r['batch']:>6} {r['seconds_per_call']:>10.3f} {r['seconds_per_clip']:>10.3f} {r['rtf']:>8.4f}")
    RESULTS.mkdir(exist_ok=True)
    tag = name.split(" (")[0].replace(" ", "-")
    path = RESULTS / f"sampling_{tag}_{platform.node() or 'host'}_{_dt.date.today().isoformat()}.json"
    path.write_text(json.dumps({"recipe": recipe.name, "device": name, "params": params, "args": vars(args),
                                "rows": rows}, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()
