"""train.strategy: fsdp: two processes (gloo, CPU) reach DDP's weights; sharded checkpoints resume and
consolidate into the plain checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.main_job.conftest import MICRO, data_args, vssflow

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VSSFLOW_LOAD_PLUGINS"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "vssflow", *args], capture_output=True, text=True, env=env, timeout=600)


def test_fsdp_matches_ddp_and_its_sharded_checkpoint_resumes_and_consolidates(tmp_path, synth_root):
    """FSDP with activation checkpointing and two accumulated micro-batches, interrupted after step 2 and
    resumed, against an uninterrupted DDP run: the same weights to reduction-order tolerance."""
    from vssflow.core.checkpoint import Checkpoint

    args = ["train", str(MICRO), "--no-progress", "--device", "cpu", *data_args(synth_root), "--set", "train.steps=3",
            "--set", "train.grad_accum=2"]
    ddp = torchrun(*args, "--out", str(tmp_path / "ddp"))
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    fsdp_args = [*args, "--out", str(tmp_path / "fsdp"), "--set", "train.strategy=fsdp",
                 "--set", "train.activation_checkpointing=true"]
    first = torchrun(*fsdp_args, "--steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    step2 = tmp_path / "fsdp" / "checkpoints" / "step-000002"
    names = sorted(p.name for p in step2.iterdir())
    assert "model.safetensors" not in names and "model.rank00001-of-00002.safetensors" in names, names
    assert "optimizer.rank00000-of-00002.safetensors" in names and "shards.json" in names
    assert not any(n.endswith((".pt", ".pth", ".distcp", ".metadata")) for n in names)  # nothing pickled
    resumed = torchrun(*fsdp_args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    last = tmp_path / "fsdp" / "checkpoints" / "last"
    assert os.readlink(last) == "step-000003"

    plain = tmp_path / "plain"
    done = vssflow("checkpoint", "consolidate", str(last), "--out", str(plain))
    assert done.returncode == 0, done.stderr[-3000:]
    assert str(plain) in done.stdout
    reference = tmp_path / "ddp" / "checkpoints" / "last"
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a, b = load_file(str(reference / name)), load_file(str(plain / name))
        assert a.keys() == b.keys(), name
        for key in a:
            # a different data split or noise draw would differ by ~lr (1e-3); reduction order by ~1e-6
            assert torch.allclose(a[key].float(), b[key].float(), atol=5e-5, rtol=1e-4), f"{name}:{key}"
    before = load_file(str(tmp_path / "ddp" / "checkpoints" / "step-000002" / "model.safetensors"))
    after = load_file(str(reference / "model.safetensors"))
    assert max(float((after[k] - before[k]).abs().max()) for k in after) > 1e-4  # the tolerance tells steps apart
    assert json.loads((plain / "optimizer.json").read_text()) == json.loads((reference / "optimizer.json").read_text())
    # the sharded folder reads as the plain one (generation, fine-tuning, evaluation load it directly)
    joined, consolidated = Checkpoint(last).model_state(ema=True), Checkpoint(plain).model_state(ema=True)
    assert all(torch.equal(joined[k], consolidated[k]) for k in consolidated)
    assert Checkpoint(plain).trainer_state()["step"] == 3 and "sharded" not in Checkpoint(plain).meta

    again = vssflow("checkpoint", "consolidate", str(plain), "--out", str(tmp_path / "x"))
    lines = [ln for ln in again.stderr.strip().splitlines() if ln.strip()]
    assert again.returncode != 0 and len(lines) == 1 and "already a plain checkpoint" in lines[0]
