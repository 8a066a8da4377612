"""Training throughput with and without duration bucketing, on clips of varied length (CPU or GPU).

    python benchmarks/bench_bucketing.py                    # unified-tiny, 48 clips cut to 1-4 s, 30 steps each
    python benchmarks/bench_bucketing.py --steps 60 --recipe v2s-tiny --threads 2

Both runs train the same recipe on the same manifest in this process, one after the other:
  window    every batch's audio padded to the recipe window (4 s), the default;
  bucketed  data.bucketing: true: clips of similar length share a micro-batch, audio padded to the longest.
It prints steps/s (from the trainer's own log, after the first `--warmup` steps), the mean audio length a
batch carries, and the ratio. Results are also written to benchmarks/results/bucketing_<host>_<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def varied_manifest(root: Path, out: Path, low: float, high: float, seed: int = 0) -> tuple[Path, list[float]]:
    """The synthetic set's clips cut to durations drawn uniformly from [low, high] seconds."""
    rng = np.random.default_rng(seed)
    lines, durations = [], []
    for line in (root / "manifest.jsonl").read_text().splitlines():
        rec = json.loads(line)
        for key in ("video", "audio", "labels", "speaker"):
            if rec.get(key):
                rec[key] = str(root / rec[key])
        seconds = round(float(rng.uniform(low, high)), 3)
        rec["end"] = rec["duration"] = seconds
        if rec.get("speech"):  # keep the speech span inside the cut
            start, end = rec["speech"]
            rec["speech"] = [min(start, seconds * 0.5), min(end, seconds)]
        lines.append(json.dumps(rec))
        durations.append(seconds)
    out.write_text("\n".join(lines) + "\n")
    return out, durations


def run(recipe: str, manifest: Path, out: Path, steps: int, bucketing: bool, warmup: int) -> dict:
    from vssflow.training import train

    overrides = [
        "data.name=manifest", f"data.params={{path: {manifest}, split: null}}", f"data.bucketing={str(bucketing).lower()}",
        f"train.steps={steps}", "train.batch_size=8", "train.ckpt_every=0", "train.log_every=1", "train.val_every=0",
        "train.num_workers=0",
    ]
    start = time.perf_counter()
    train(recipe, out_dir=out, overrides=overrides, progress=False)
    wall = time.perf_counter() - start
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    rows = [r for r in log if "loss" in r]
    # steps_per_s in the log is cumulative since the first step: take the rate between warmup and the end
    t_end = rows[-1]["step"] / rows[-1]["steps_per_s"]
    t_warm = rows[warmup - 1]["step"] / rows[warmup - 1]["steps_per_s"]
    return {"bucketing": bucketing, "steps": steps, "steps_per_s": (steps - warmup) / (t_end - t_warm),
            "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="unified-tiny")
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--max-seconds", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from vssflow.plugins.datasets.synth import SynthConfig, generate

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(tmp / "synth", SynthConfig(clips=args.clips, seconds=args.max_seconds, families=("v2s", "visualtts"),
                                            size=96))
        manifest, durations = varied_manifest(tmp / "synth", tmp / "varied.jsonl", args.min_seconds, args.max_seconds)
        results = [run(args.recipe, manifest, tmp / name, args.steps, bucketing, args.warmup)
                   for name, bucketing in (("window", False), ("bucketed", True))]
    base = results[0]["steps_per_s"]
    print(f"{args.recipe}: {args.clips} clips of {args.min_seconds:g}-{args.max_seconds:g} s "
          f"(mean {np.mean(durations):.2f} s), batch 8, {args.steps} steps (rates after step {args.warmup}), "
          f"{torch.get_num_threads()} threads")
    print(f"{'mode':<10} {'steps/s':>8} {'vs window':>10} {'wall s':>8}")
    for r in results:
        name = "bucketed" if r["bucketing"] else "window"
        print(f"{name:<10} {r['steps_per_s']:>8.2f} {r['steps_per_s'] / base:>9.2f}x {r['wall_s']:>8.1f}")
    RESULTS.mkdir(exist_ok=True)
    stamp = _dt.date.today().isoformat()
    path = RESULTS / f"bucketing_{platform.node() or 'host'}_{stamp}.json"
    path.write_text(json.dumps({"recipe": args.recipe, "clips": args.clips, "durations": durations,
                                "threads": torch.get_num_threads(), "results": results}, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()
