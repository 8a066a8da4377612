"""`vssflow train`: exact resume after kill -9, and two processes equal one (gloo, CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.main_job.conftest import MICRO, data_args, vssflow


def weights(run: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last" / name))


def test_kill_9_then_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, synth_root):
    full, killed = tmp_path / "full", tmp_path / "killed"
    done = vssflow("train", str(MICRO), "--out", str(full), "--no-progress", *data_args(synth_root))
    assert done.returncode == 0, done.stderr[-3000:]

    env = {k: v for k, v in os.environ.items() if k != "VSSFLOW_LOAD_PLUGINS"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vssflow", "train", str(MICRO), "--out", str(killed), "--no-progress",
         *data_args(synth_root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    meta = killed / "checkpoints" / "last" / "meta.json"
    deadline = time.time() + 300
    while not meta.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert meta.exists(), "the run never wrote a checkpoint"
    step_at_kill = json.loads(meta.read_text())["step"]
    assert step_at_kill < 6

    again = vssflow("train", str(MICRO), "--out", str(killed), "--no-progress", *data_args(synth_root))
    assert again.returncode == 2 and "--resume" in again.stderr  # never overwrites a run silently
    resumed = vssflow("train", str(MICRO), "--out", str(killed), "--resume", "--no-progress", *data_args(synth_root))
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    for name in ("model.safetensors", "ema.safetensors"):
        a, b = weights(full, name), weights(killed, name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}:{key} differs after resume from step {step_at_kill}"
    assert not [p for p in (killed / "checkpoints").iterdir() if p.name.startswith(".")]


def uneven_manifest(synth_root: Path, out: Path) -> Path:
    """The synthetic clips cut to 0.55-1.0 s: ranks then hold different numbers of valid latent frames."""
    lines = []
    for i, line in enumerate((synth_root / "manifest.jsonl").read_text().splitlines()):
        rec = json.loads(line)
        for key in ("video", "audio", "labels"):
            rec[key] = str(synth_root / rec[key])
        rec["end"] = rec["duration"] = (0.55, 1.0, 0.7, 0.85)[i % 4]
        lines.append(json.dumps(rec))
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
@pytest.mark.parametrize("bucketing, accum", [(False, 1), (True, 1), (False, 2)],
                         ids=["window", "bucketed", "accumulated"])
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, synth_root, bucketing, accum):
    """Exact even when the two ranks' clips have different valid lengths (the loss is re-weighted), with
    duration bucketing, where each rank pads its audio only to its own longest clip, and with two
    accumulated micro-batches per rank (no_sync) against one process taking the batch at once: micro-batches
    of different valid lengths weigh as one batch."""
    one, two = tmp_path / "one", tmp_path / "two"
    manifest = uneven_manifest(synth_root, tmp_path / "uneven.jsonl")
    args = ["--no-progress", "--device", "cpu", "--set", "train.steps=3", "--set", "data.name=manifest",
            "--set", f"data.params={{path: {manifest}}}", "--set", f"data.bucketing={str(bucketing).lower()}"]
    done = vssflow("train", str(MICRO), "--out", str(one), *args)
    args += ["--set", f"train.grad_accum={accum}"]
    assert done.returncode == 0, done.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k != "VSSFLOW_LOAD_PLUGINS"}
    env["OMP_NUM_THREADS"] = "1"
    dist = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vssflow",
         "train", str(MICRO), "--out", str(two), *args],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert dist.returncode == 0, dist.stderr[-3000:]
    a, b = weights(one), weights(two)
    # Adam normalises each update to ~lr (1e-3 here), so a different data split or noise draw would differ
    # by ~1e-3; floating-point reduction order gives ~1e-6.
    for key in a:
        assert torch.allclose(a[key], b[key], atol=5e-5, rtol=0), f"{key} differs between 1 and 2 processes"


def test_fine_tuning_starts_from_the_given_checkpoint(tmp_path, synth_root, micro_checkpoint):
    """train.init_from loads the other run's EMA weights; a missing one is one line before any work."""
    out = tmp_path / "tuned"
    # lr 1e-12: one Adam step moves each weight by ~1e-12, so the result shows where training started
    args = ["--no-progress", "--set", "train.steps=1", "--set", "train.lr=1e-12", "--set", "train.warmup_steps=0",
            *data_args(synth_root)]
    done = vssflow("train", str(MICRO), "--out", str(out), "--set", f"train.init_from={micro_checkpoint}", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    source, tuned = load_file(str(micro_checkpoint / "ema.safetensors")), weights(out)
    fresh = vssflow("train", str(MICRO), "--out", str(tmp_path / "fresh"), *args)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    untouched = weights(tmp_path / "fresh")
    moved = [k for k in source if not torch.allclose(source[k], untouched[k], atol=1e-6)]
    assert moved, "the source checkpoint equals a fresh initialisation; the test would prove nothing"
    for key in source:
        assert torch.allclose(tuned[key], source[key], atol=1e-6), f"{key} did not start from the checkpoint"

    missing = vssflow("train", str(MICRO), "--out", str(tmp_path / "x"), "--set",
                      f"train.init_from={tmp_path / 'nowhere'}", *args)
    lines = [ln for ln in missing.stderr.strip().splitlines() if ln.strip()]
    assert missing.returncode == 2 and len(lines) == 1 and "nowhere" in lines[0], missing.stderr
    assert not (tmp_path / "x").exists()
