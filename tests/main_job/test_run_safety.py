"""Run safety of `vssflow train`: faults at every file-system step of a checkpoint write, one trainer per run
folder, nothing changed before the checks, one-line errors for write failures and divergence."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.main_job.conftest import MICRO, data_args, vssflow

HERE = Path(__file__).resolve().parent


def one_line_failure(done: subprocess.CompletedProcess, needle: str) -> None:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], done.stderr[-3000:]


@pytest.mark.parametrize("mode", ["kill", "interrupt"])
def test_a_fault_at_every_checkpoint_write_step_resumes_to_the_uninterrupted_weights(tmp_path, synth_root, mode):
    """os._exit(137) (as SIGKILL) or KeyboardInterrupt (as Ctrl-C) before each of the ~28 file-system steps of
    a 2-step run with a checkpoint per step and keep_last 1; --resume auto then ends byte-identical (model,
    EMA, optimizer), and the newest complete checkpoint before the fault was never lost."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1])}
    env.pop("VSSFLOW_LOAD_PLUGINS", None)
    done = subprocess.run([sys.executable, str(HERE / "fault_driver.py"), mode, str(tmp_path), str(synth_root)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["ops"] >= 20  # every write, rename, symlink and deletion of two checkpoint saves
    assert report["failures"] == [], report["failures"]


def test_a_second_trainer_on_the_same_folder_is_refused_naming_the_holder(tmp_path, synth_root):
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "VSSFLOW_LOAD_PLUGINS"}
    first = subprocess.Popen(
        [sys.executable, "-m", "vssflow", "train", str(MICRO), "--out", str(run), "--no-progress",
         "--set", "train.steps=100000", "--set", "train.ckpt_every=0", *data_args(synth_root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        deadline = time.monotonic() + 300
        while not (run / "train_log.jsonl").exists():  # the first trainer is past its checks and training
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        recipe_before = (run / "recipe.yaml").read_bytes()
        second = vssflow("train", str(MICRO), "--out", str(run), "--resume", "auto", "--no-progress",
                         "--set", "train.steps=3", *data_args(synth_root))
        one_line_failure(second, f"pid {first.pid}")
        assert "another trainer is using this run folder" in second.stderr
        assert first.poll() is None  # the first trainer is untouched and still running
        assert (run / "recipe.yaml").read_bytes() == recipe_before
        assert not (run / "checkpoints").exists()
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err[-2000:]
    # the holder is gone: its lock file stays but blocks nobody
    again = vssflow("train", str(MICRO), "--out", str(run), "--resume", "auto", "--no-progress",
                    "--set", "train.steps=1", *data_args(synth_root))
    assert again.returncode == 0, again.stderr[-3000:]


def test_resume_and_new_run_refusals_change_nothing(tmp_path, synth_root, micro_checkpoint):
    empty = tmp_path / "empty"
    nothing = vssflow("train", str(MICRO), "--out", str(empty), "--resume", "--no-progress", *data_args(synth_root))
    one_line_failure(nothing, "nothing to resume")
    assert "--resume auto" in nothing.stderr and not empty.exists()

    run = micro_checkpoint.parent.parent
    def files() -> dict:  # the lock note (holder host and pid) is the only thing a refused trainer may touch
        return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file() and p.name != ".lock"}

    snapshot = files()
    fresh = vssflow("train", str(MICRO), "--out", str(run), "--no-progress", *data_args(synth_root))
    one_line_failure(fresh, "already holds a run")
    assert "--resume" in fresh.stderr and "--out" in fresh.stderr
    other = vssflow("train", "v2s-tiny", "--out", str(run), "--resume", "--no-progress", *data_args(synth_root))
    one_line_failure(other, "holds a run of recipe 'micro-v2s', not 'v2s-tiny'")
    wider = vssflow("train", str(MICRO), "--out", str(run), "--resume", "--no-progress",
                    "--set", "backbone.params.width=64", *data_args(synth_root))
    one_line_failure(wider, "weights do not fit this model")
    assert files() == snapshot

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    one_line_failure(vssflow("train", str(MICRO), "--out", str(a_file), *data_args(synth_root)),
                     "--out names an existing file")


def test_divergence_keeps_the_last_good_checkpoint_and_never_writes_the_bad_step(tmp_path, synth_root):
    run = tmp_path / "run"
    done = vssflow("train", str(MICRO), "--out", str(run), "--no-progress", "--set", "train.lr=1e30",
                   "--set", "train.warmup_steps=0", "--set", "train.ckpt_every=1", *data_args(synth_root))
    one_line_failure(done, "non-finite loss at step 2")
    assert "step-000001 is kept" in done.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last", "step-000001"]
    assert os.readlink(run / "checkpoints" / "last") == "step-000001"
    infinite = vssflow("train", str(MICRO), "--out", str(tmp_path / "inf"), "--no-progress", "--set", "train.lr=.inf",
                       *data_args(synth_root))
    one_line_failure(infinite, "train.lr is inf, not a finite number")
    assert not (tmp_path / "inf").exists()


def _file_size_limit(limit: int):
    def limit_writes() -> None:  # a full disk as a writer meets it: writes past `limit` bytes fail (EFBIG)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_writes


def test_a_full_disk_during_a_checkpoint_write_is_one_line_and_leaves_no_partial_checkpoint(tmp_path, synth_root):
    run = tmp_path / "run"
    done = vssflow("train", str(MICRO), "--out", str(run), "--no-progress", "--set", "train.steps=2",
                   *data_args(synth_root), preexec_fn=_file_size_limit(200_000))
    one_line_failure(done, "cannot write the checkpoint (File too large)")
    assert "step-000002" in done.stderr
    assert [p.name for p in (run / "checkpoints").iterdir()] == []  # no temporary, no half checkpoint
    resumed = vssflow("train", str(MICRO), "--out", str(run), "--resume", "auto", "--no-progress",
                      "--set", "train.steps=2", *data_args(synth_root))
    assert resumed.returncode == 0, resumed.stderr[-3000:]


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not bind root")
def test_a_read_only_output_folder_is_one_line(tmp_path, synth_root):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        one_line_failure(vssflow("train", str(MICRO), "--out", str(parent / "run"), "--no-progress",
                                 *data_args(synth_root)), "cannot")
        one_line_failure(vssflow("data", "synth", "--out", str(parent / "synth"), "--clips", "2", "--no-progress"),
                         "cannot")
    finally:
        parent.chmod(0o755)


def test_data_synth_on_a_full_disk_or_a_file_is_one_line(tmp_path):
    full = vssflow("data", "synth", "--out", str(tmp_path / "synth"), "--clips", "2", "--seconds", "1", "--size", "32",
                   "--families", "v2s", "--no-progress", preexec_fn=_file_size_limit(2000))
    one_line_failure(full, "v2s-000000.mp4: cannot write (File too large)")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    one_line_failure(vssflow("data", "synth", "--out", str(a_file), "--clips", "2", "--no-progress"),
                     "--out names an existing file")
