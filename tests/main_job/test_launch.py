"""`vssflow train --processes N` (vssflow.launch): data parallel in local CPU processes, the same weights as one
process, and one clear line for every way it can stop (a bad count, a user error in a process, a killed
process, Ctrl-C) with no process left behind."""

from __future__ import annotations

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
from tests.main_job.test_run_safety import one_line_failure

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")


def _train(out: Path, root: Path, *extra: str) -> subprocess.CompletedProcess:
    return vssflow("train", str(MICRO), "--out", str(out), "--no-progress", "--device", "cpu", *data_args(root),
                   *extra)


def test_plan_processes_splits_cores_and_batches():
    from vssflow.core.errors import RecipeError
    from vssflow.launch import plan_processes

    assert plan_processes("auto", 8, cores=2) == (2, 1)
    assert plan_processes("auto", 8, cores=16) == (4, 4)  # at most four processes; the rest are threads
    assert plan_processes("auto", 8, cores=3) == (2, 1)  # three does not split a batch of 8
    assert plan_processes("auto", 3, cores=2) == (1, 2)
    assert plan_processes("auto", 8, cores=1) == (1, 1)
    assert plan_processes(2, 4, cores=8) == (2, 4)
    with pytest.raises(RecipeError, match="does not split evenly"):
        plan_processes(3, 8, cores=4)
    with pytest.raises(RecipeError, match="at least 1"):
        plan_processes(0, 8, cores=4)


def _where() -> tuple:
    import torch

    return (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), torch.get_num_threads(),
            os.environ.get("TORCH_CPP_LOG_LEVEL"), torch.distributed.get_world_size())


def test_run_processes_returns_each_rank_result_in_rank_order(monkeypatch):
    """Each process sees its rank, the world, its thread count and a joined gloo group; the results come back
    in rank order; DDP's C++ warnings (a false positive for models with task-specific conditions) are quieted
    in the processes only, and the launcher's own environment is left as it was."""
    from vssflow.launch import run_processes

    monkeypatch.delenv("TORCH_CPP_LOG_LEVEL", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    found = run_processes(_where, processes=2, threads=1)
    assert found == [(0, 2, 1, "ERROR", 2), (1, 2, 1, "ERROR", 2)]
    assert "TORCH_CPP_LOG_LEVEL" not in os.environ and os.environ["OMP_NUM_THREADS"] == "7"


def test_two_processes_reach_the_weights_of_one(tmp_path, synth_root):
    """Each process trains on its half of every batch of 4 and their gradients are averaged: after 3 steps the
    model, EMA and optimizer state equal a one-process run's up to reduction order (a different split of
    the data or another noise draw would move weights by about the learning rate, 1e-3)."""
    one = _train(tmp_path / "one", synth_root, "--set", "train.steps=3")
    assert one.returncode == 0, one.stderr[-3000:]
    two = _train(tmp_path / "two", synth_root, "--set", "train.steps=3", "--processes", "2")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "training in 2 processes of" in two.stderr
    assert two.stdout.strip().endswith(str(tmp_path / "two" / "checkpoints" / "last"))
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a = load_file(str(tmp_path / "one" / "checkpoints" / "last" / name))
        b = load_file(str(tmp_path / "two" / "checkpoints" / "last" / name))
        assert a.keys() == b.keys(), name
        moved = 0.0
        for key in a:
            assert torch.allclose(a[key].float(), b[key].float(), atol=5e-5, rtol=1e-4), f"{name}:{key}"
            moved = max(moved, float((a[key].float() - b[key].float()).abs().max()))
        assert moved < 5e-5


@pytest.mark.parametrize("args, needle", [
    (["--processes", "3"], "does not split evenly"),
    (["--processes", "many"], "give a number of processes or 'auto'"),
    (["--processes", "2", "--device", "cuda"], "with torchrun"),
])
def test_a_bad_process_count_is_one_line_and_touches_nothing(tmp_path, synth_root, args, needle):
    out = tmp_path / "run"
    done = vssflow("train", str(MICRO), "--out", str(out), "--no-progress", *data_args(synth_root), *args)
    one_line_failure(done, needle)
    assert not out.exists()


def test_a_user_error_in_a_process_is_its_own_line(tmp_path, synth_root, micro_checkpoint):
    """rank 0 refuses a folder that holds a run without --resume: that message, once, and no traceback."""
    out = micro_checkpoint.parent.parent
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    done = _train(out, synth_root, "--processes", "2")
    one_line_failure(done, "already holds a run")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before


def _children(pid: int) -> list[int]:
    """The spawned worker processes of `pid` (not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_long_run(out: Path, root: Path) -> tuple[subprocess.Popen, list[int]]:
    env = {k: v for k, v in os.environ.items() if k != "VSSFLOW_LOAD_PLUGINS"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vssflow", "train", str(MICRO), "--out", str(out), "--no-progress", "--device", "cpu",
         "--processes", "2", "--set", "train.steps=100000", "--set", "train.ckpt_every=2", *data_args(root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "last").exists():  # both processes are past their checks and training
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    workers = _children(proc.pid)
    assert len(workers) == 2, workers
    return proc, workers


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("fault", ["kill -9 of a process", "Ctrl-C"])
def test_a_killed_or_interrupted_run_stops_every_process_and_resumes(tmp_path, synth_root, fault):
    out = tmp_path / "run"
    proc, workers = _start_long_run(out, synth_root)
    if fault == "Ctrl-C":  # the terminal sends SIGINT to the whole foreground group
        os.killpg(proc.pid, signal.SIGINT)
    else:
        os.kill(workers[1], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    lines = [line for line in err.strip().splitlines() if line.strip() and not line.startswith("INFO ")]
    assert "Traceback" not in err, err[-3000:]
    if fault == "Ctrl-C":
        assert proc.returncode == 130 and lines == ["vssflow train: interrupted"], err[-3000:]
    else:
        assert proc.returncode != 0 and len(lines) == 1, err[-3000:]
        assert "process 1 of 2 was killed by SIGKILL" in lines[0] and "--resume auto" in lines[0], lines
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers):  # no process is left training on its own
        assert time.monotonic() < deadline, [pid for pid in workers if _alive(pid)]
        time.sleep(0.2)
    step = int(os.readlink(out / "checkpoints" / "last").split("-")[1])
    resumed = _train(out, synth_root, "--processes", "2", "--resume", "auto", "--set", f"train.steps={step + 2}",
                     "--set", "train.ckpt_every=2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert os.readlink(out / "checkpoints" / "last") == f"step-{step + 2:06d}"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_the_processes_stop_when_the_launcher_is_killed(tmp_path, synth_root):
    out = tmp_path / "run"
    proc, workers = _start_long_run(out, synth_root)
    proc.kill()  # kill -9 of `vssflow train` itself: nothing can forward a signal
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, [pid for pid in workers if _alive(pid)]
        time.sleep(0.2)
