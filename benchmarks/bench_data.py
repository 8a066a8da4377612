"""Data pipeline throughput on CPU: synthetic-set generation, video decoding, feature extraction.

    python benchmarks/bench_data.py                       # 200 clips of 4 s, 2 workers (the acceptance run)
    python benchmarks/bench_data.py --clips 40 --workers 1 --quick

Sections:
  (a) `generate` (= `vssflow data synth`): clips/s, per family mix, fresh folder, W worker processes;
  (b) `read_video` on the generated 96x96 25 fps H.264 clips: frames/s decoded at native fps, at 10 fps
      resized to 224x224 (a CLIP-style encoder input) and at 25 fps 48x48; also `read_audio` seconds/s;
  (c) `extract_features` with a tiny frozen encoder (frame mean colour, so decoding dominates): clips/s
      with 0 and W DataLoader workers.
Wall-clock times include process start-up of the workers; the machine's load is printed with the table.
Results are also written to benchmarks/results/data_<host>_<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (robust to a busy machine)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def bench_synth(root: Path, clips: int, seconds: float, workers: int) -> dict:
    """Generate a fresh synthetic set; clips per second of wall time, and CPU seconds per clip."""
    from vssflow.plugins.datasets.synth import SynthConfig, generate

    config = SynthConfig(clips=clips, seconds=seconds, seed=0)
    cpu0, start = cpu_seconds(), time.perf_counter()
    generate(root, config, workers=workers)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    return {"clips": clips, "seconds_per_clip": seconds, "workers": workers, "wall_s": elapsed,
            "clips_per_s": clips / elapsed, "audio_hours_per_hour": clips * seconds / elapsed,
            "cpu_s": cpu, "cpu_s_per_clip": cpu / clips}


def bench_decode(root: Path, limit: int) -> list[dict]:
    """read_video / read_audio over the generated clips at a few target grids."""
    from vssflow.core import media
    from vssflow.core.manifest import read_manifest

    records = read_manifest(root / "manifest.jsonl")[:limit]
    rows = []
    for label, kwargs in [("native (25 fps, 96x96)", {}), ("10 fps -> 224x224", {"fps": 10.0, "size": (224, 224)}),
                          ("25 fps -> 48x48", {"fps": 25.0, "size": (48, 48)})]:
        media.read_video(records[0].video, **kwargs)  # warm-up (codec init)
        frames = 0
        cpu0, start = cpu_seconds(), time.perf_counter()
        for r in records:
            frames += len(media.read_video(r.video, **kwargs))
        elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
        rows.append({"what": f"read_video {label}", "clips": len(records), "frames": frames,
                     "frames_per_s": frames / elapsed, "clips_per_s": len(records) / elapsed,
                     "frames_per_cpu_s": frames / cpu})
    start = time.perf_counter()
    audio_s = sum(media.read_audio(r.audio, 16000)[0].shape[0] / 16000 for r in records)
    elapsed = time.perf_counter() - start
    rows.append({"what": "read_audio wav 16 kHz", "clips": len(records), "audio_s_per_s": audio_s / elapsed,
                 "clips_per_s": len(records) / elapsed})
    return rows


def _tiny_encoder_plugin():
    """An in-process plugin with one frozen encoder: each frame's mean colour at 10 fps, 32x32."""
    from pydantic import BaseModel, ConfigDict

    from vssflow.core.interfaces import Condition, Encoder, InputContract
    from vssflow.registry import hookimpl

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        fps: float = 10.0
        size: int = 32

    class MeanColour(Encoder):
        """Frozen mean colour per frame (3-d)."""

        modality = "video"
        frozen = True

        def __init__(self, fps: float = 10.0, size: int = 32) -> None:
            super().__init__()
            self.fps, self.size, self.dim = fps, size, 3

        @property
        def contract(self) -> InputContract:
            return InputContract("video", fps=self.fps, size=(self.size, self.size))

        def forward(self, x, mask=None, **extras):  # x (B, L, 3, H, W)
            return Condition(x.mean(dim=(3, 4)), mask, self.fps)

    class Plugin:
        @hookimpl
        def register_encoders(self, register):
            register("bench-mean-colour", MeanColour, params=Params)

    return Plugin()


def bench_extract(root: Path, cache: Path, limit: int, workers: int) -> list[dict]:
    """extract_features throughput with 0 and `workers` DataLoader workers (fresh cache each time)."""
    from vssflow.core.feature_extraction import extract_features
    from vssflow.core.manifest import read_manifest
    from vssflow.registry import create, get_registry

    registry = get_registry()
    if "bench" not in registry.provenance:
        registry.register_plugin(_tiny_encoder_plugin(), name="bench")
    records = read_manifest(root / "manifest.jsonl")[:limit]
    rows = []
    for w in sorted({0, workers}):
        shutil.rmtree(cache, ignore_errors=True)
        encoder = create("encoder", "bench-mean-colour")
        start = time.perf_counter()
        (report,) = extract_features({"colour": encoder}, records, cache, workers=w, batch_size=8, progress=False)
        elapsed = time.perf_counter() - start
        rows.append({"what": f"features extract, {w} workers", "clips": report.written, "clips_per_s":
                     report.written / elapsed, "wall_s": elapsed})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the sections and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="decode/extract over at most 40 clips")
    parser.add_argument("--keep", default=None, help="keep the generated set in this folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    tmp = Path(tempfile.mkdtemp(prefix="vssflow-bench-data-"))
    root = Path(args.keep) if args.keep else tmp / "synth"
    if root.exists():
        shutil.rmtree(root)
    limit = 40 if args.quick else args.clips
    try:
        synth = bench_synth(root, args.clips, args.seconds, args.workers)
        decode = bench_decode(root, limit)
        extract = bench_extract(root, tmp / "cache", limit, args.workers)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nvssflow data benchmark  ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {load:.1f}, torch {torch.__version__})")
    print(f"(a) synth: {synth['clips']} clips x {synth['seconds_per_clip']:g} s, {synth['workers']} workers: "
          f"{synth['wall_s']:.1f} s wall = {synth['clips_per_s']:.1f} clips/s "
          f"({synth['audio_hours_per_hour']:.0f}x real time); {synth['cpu_s_per_clip'] * 1000:.0f} CPU-ms per clip "
          f"(= {synth['workers'] / synth['cpu_s_per_clip']:.1f} clips/s on {synth['workers']} idle cores)")
    print("(b) decode")
    for row in decode:
        rate = f"{row['frames_per_s']:.0f} frames/s" if "frames_per_s" in row else f"{row['audio_s_per_s']:.0f} s/s"
        per_cpu = f"   ({row['frames_per_cpu_s']:.0f} frames per CPU-s)" if "frames_per_cpu_s" in row else ""
        print(f"    {row['what']:<34} {rate:>16}   {row['clips_per_s']:.1f} clips/s{per_cpu}")
    print("(c) feature extraction (tiny frozen encoder)")
    for row in extract:
        print(f"    {row['what']:<34} {row['clips_per_s']:>10.1f} clips/s   ({row['clips']} clips, {row['wall_s']:.1f} s)")
    RESULTS.mkdir(exist_ok=True)
    stamp = _dt.date.today().isoformat()
    out = RESULTS / f"data_{platform.node() or 'host'}_{stamp}.json"
    out.write_text(json.dumps({"synth": synth, "decode": decode, "extract": extract, "load": load,
                               "argv": sys.argv[1:]}, indent=1))
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
