"""A run's checkpoints/ folder (step folders, the `last` symlink, retention, stale clean-up), the run lock,
and the output-file helpers."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
import torch

from vssflow.core.checkpoint import Checkpoint, CheckpointFolder, save_checkpoint, step_folder_name
from vssflow.core.files import OutputError, ensure_dir, file_name_problem, write_text_atomic
from vssflow.core.runlock import RunInUseError, RunLock


def write_step(folder: CheckpointFolder, step: int) -> None:
    path = save_checkpoint(folder.path / step_folder_name(step), {"w": torch.full((2,), float(step))}, {},
                           trainer_state={"step": step})
    folder.publish(path)


def test_last_is_a_relative_symlink_to_the_newest_step_and_retention_keeps_what_it_says(tmp_path):
    folder = CheckpointFolder(tmp_path / "checkpoints")
    for step in range(1, 8):
        write_step(folder, step * 100)
        folder.retain(keep_last=2, keep_every=300)
    assert os.readlink(folder.last) == "step-000700"
    assert sorted(p.name for p in folder.path.iterdir()) == ["last", "step-000300", "step-000600", "step-000700"]
    assert Checkpoint(folder.last).trainer_state()["step"] == 700
    assert folder.newest() == folder.path / "step-000700"
    assert folder.retain(keep_last=None) == []  # None: keep everything


def test_retention_never_deletes_the_checkpoint_last_points_to(tmp_path):
    folder = CheckpointFolder(tmp_path / "checkpoints")
    write_step(folder, 1)
    save_checkpoint(folder.path / step_folder_name(2), {"w": torch.zeros(2)}, {}, trainer_state={"step": 2})
    folder.retain(keep_last=1)  # step 2 is newest, but last still points to step 1 (publish did not happen)
    assert sorted(p.name for p in folder.path.iterdir()) == ["last", "step-000001", "step-000002"]


def test_resume_ignores_incomplete_and_temporary_folders_and_clean_up_removes_them(tmp_path):
    folder = CheckpointFolder(tmp_path / "checkpoints")
    write_step(folder, 5)
    broken = folder.path / "step-000009"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"partial")  # no meta.json: not complete
    (folder.path / ".step-000010.tmp-abc").mkdir()
    os.symlink("step-000005", folder.path / ".last.tmp-123")
    assert folder.newest() == folder.path / "step-000005"
    folder.clean_stale()
    assert sorted(p.name for p in folder.path.iterdir()) == ["last", "step-000005"]


def test_a_last_folder_from_before_step_folders_is_resumed_and_adopted(tmp_path):
    folder = CheckpointFolder(tmp_path / "checkpoints")
    save_checkpoint(folder.last, {"w": torch.zeros(2)}, {}, trainer_state={"step": 40})
    assert folder.newest() == folder.last
    write_step(folder, 60)
    assert sorted(p.name for p in folder.path.iterdir()) == ["last", "step-000040", "step-000060"]
    assert os.readlink(folder.last) == "step-000060"


def test_a_second_lock_names_the_holder_and_a_dead_holder_never_blocks(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunInUseError, match=rf"another trainer is using this run folder \(host .* pid {os.getpid()}\)"):
            RunLock(tmp_path).acquire()
        other = subprocess.run([sys.executable, "-c", (
            "import sys; from vssflow.core.runlock import RunLock, RunInUseError\n"
            f"try: RunLock({str(tmp_path)!r}).acquire()\n"
            "except RunInUseError as e: print(e); sys.exit(3)")], capture_output=True, text=True)
        assert other.returncode == 3 and f"pid {os.getpid()}" in other.stdout
    killed = subprocess.run([sys.executable, "-c", (
        "import os; from vssflow.core.runlock import RunLock\n"
        f"RunLock({str(tmp_path)!r}).acquire(); os._exit(9)")])  # dies holding the lock
    assert killed.returncode == 9
    RunLock(tmp_path).acquire().release()  # the lock file is left behind, but nobody holds it


@pytest.mark.parametrize("name, ok", [("clip_01.a", True), ("a/b", False), ("..", False), (".hidden", False),
                                      ("x" * 201, False), ("é" * 100, True), ("é" * 101, False), ("a\x1bb", False)])
def test_file_names(name, ok):
    assert (file_name_problem(name) is None) == ok


def test_outputs_follow_the_umask_and_a_file_in_the_way_is_one_error(tmp_path):
    old = os.umask(0o027)
    try:
        path = write_text_atomic(tmp_path / "a.json", json.dumps({}))
        folder = ensure_dir(tmp_path / "sub")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and stat.S_IMODE(folder.stat().st_mode) == 0o750
    with pytest.raises(OutputError, match="names an existing file"):
        ensure_dir(path)
