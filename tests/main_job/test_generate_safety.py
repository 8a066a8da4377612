"""`vssflow generate`: resumable manifests, outputs published together, one-line write errors, the sampler's
recipe settings kept, checkpoints that name the plugins they need."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.main_job.conftest import vssflow
from tests.main_job.test_generate import moving_square
from tests.main_job.test_run_safety import one_line_failure


def manifest_of(tmp_path: Path, ids: list[str], seconds: float = 1.0) -> Path:
    video = moving_square(tmp_path / "clip.mp4", seconds, 25.0)
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"id": i, "task": "v2s", "video": video.name}) + "\n" for i in ids))
    return path


def test_an_interrupted_manifest_resumes_with_only_the_unfinished_clips(tmp_path, micro_checkpoint):
    ids = [f"clip{i}" for i in range(6)]
    manifest = manifest_of(tmp_path, ids, seconds=4.0)
    gen = ["generate", "--checkpoint", str(micro_checkpoint), "--manifest", str(manifest), "--batch-size", "1"]
    full = vssflow(*gen, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-2000:]

    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "VSSFLOW_LOAD_PLUGINS"}
    proc = subprocess.Popen([sys.executable, "-m", "vssflow", *gen, "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    record = out / "generated.jsonl"
    deadline = time.monotonic() + 300
    while not (record.exists() and record.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # Ctrl-C half-way
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in stderr, stderr[-2000:]
    finished = [json.loads(line)["id"] for line in record.read_text().splitlines()]
    assert 2 <= len(finished) < len(ids), "the run was not interrupted half-way"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["generated.jsonl"] + [f"{i}.{ext}" for i in finished for ext in ("wav", "mp4")]
    )  # every finished clip kept, wav and mp4 together; nothing half-written

    again = vssflow(*gen, "--out", str(out))
    assert again.returncode == 0, again.stderr[-2000:]
    redone = {Path(line).stem for line in again.stdout.split()}
    assert redone == set(ids) - set(finished)  # only the unfinished clips were generated
    for i in ids:
        a, _ = sf.read(str(out / f"{i}.wav"))
        b, _ = sf.read(str(tmp_path / "full" / f"{i}.wav"))
        assert np.array_equal(a, b), f"{i} differs from the uninterrupted run"
    assert vssflow(*gen, "--out", str(out)).stdout.split() == []  # nothing left to do
    overwrite = vssflow(*gen, "--out", str(out), "--overwrite")
    assert {Path(line).stem for line in overwrite.stdout.split()} == set(ids)


def test_a_rerun_with_other_sampling_settings_generates_again(tmp_path, micro_checkpoint):
    """generated.jsonl records the sampling options given (steps, guidance, sampler, overlap, precision, long,
    join): a rerun skips a clip only if it was made with the same ones, never returning stale audio."""
    manifest = manifest_of(tmp_path, ["a", "b"])
    gen = ["generate", "--checkpoint", str(micro_checkpoint), "--manifest", str(manifest), "--out", str(tmp_path / "o")]
    first = vssflow(*gen, "--steps", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    assert len(first.stdout.split()) == 4  # wav and mp4 of both clips
    record = json.loads((tmp_path / "o" / "generated.jsonl").read_text().splitlines()[0])
    assert record["steps"] == 2 and record["overlap"] == 1.0 and "guidance" not in record
    assert vssflow(*gen, "--steps", "2").stdout.split() == []  # the same settings: nothing to do
    for extra in (["--steps", "3"], ["--steps", "3", "--guidance", "1.5"], ["--steps", "3", "--guidance", "1.5",
                                                                              "--long", "crossfade"]):
        again = vssflow(*gen, *extra)
        assert again.returncode == 0, again.stderr[-2000:]
        assert {Path(line).stem for line in again.stdout.split()} == {"a", "b"}, extra


@pytest.mark.parametrize(
    "clip_id, problem",
    [("a/b", "without '/', got 'a/b'"), ("..", "starts with '.'"), ("x" * 201, "longer than 200 bytes"),
     ("a\x1b[31mb", "control character")],
)
def test_ids_that_cannot_name_a_file_are_refused_on_their_line(tmp_path, micro_checkpoint, clip_id, problem):
    manifest = manifest_of(tmp_path, ["fine", clip_id])
    out = tmp_path / "out"
    done = vssflow("generate", "--checkpoint", str(micro_checkpoint), "--manifest", str(manifest), "--out", str(out))
    one_line_failure(done, problem)
    assert "m.jsonl line 2" in done.stderr and not out.exists()


def _file_size_limit(limit: int):
    def limit_writes() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_writes


def test_a_full_disk_names_the_output_and_leaves_nothing(tmp_path, micro_checkpoint):
    manifest = manifest_of(tmp_path, ["big"], seconds=6.0)  # a 6 s wav is 192 kB
    out = tmp_path / "out"
    done = vssflow("generate", "--checkpoint", str(micro_checkpoint), "--manifest", str(manifest), "--out", str(out),
                   preexec_fn=_file_size_limit(100_000))
    one_line_failure(done, f"{out / 'big.wav'}: cannot write")
    assert "cannot read" not in done.stderr  # the input video is not blamed
    assert [p.name for p in out.iterdir()] == []


def test_a_full_disk_while_muxing_names_the_mp4_not_the_input_video(tmp_path, micro_checkpoint):
    """The wav (32 kB) fits, the mp4 (the copied noise video, far larger) does not: the error names the
    output mp4, never "cannot read video", and the wav is not left without its mp4."""
    from vssflow.core.media import write_video

    frames = np.random.default_rng(0).integers(0, 256, (25, 128, 128, 3), dtype=np.uint8)
    video = write_video(tmp_path / "noise.mp4", frames, 25.0)
    assert video.stat().st_size > 150_000
    out = tmp_path / "out"
    done = vssflow("generate", "--checkpoint", str(micro_checkpoint), "--video", str(video), "--out", str(out),
                   preexec_fn=_file_size_limit(100_000))
    one_line_failure(done, f"{out / 'noise.mp4'}: cannot write")
    assert "cannot read" not in done.stderr
    assert [p.name for p in out.iterdir()] == []


def test_a_wav_is_never_published_without_its_mp4(tmp_path, monkeypatch):
    import errno

    import torch

    from vssflow.core import media
    from vssflow.core.files import OutputError
    from vssflow.generation import ClipRequest, write_outputs

    video = moving_square(tmp_path / "v.mp4", 1.0, 25.0)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(media, "mux_audio", full_disk)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OutputError, match=r"v\.mp4: cannot write \(No space left on device\); free some space"):
        write_outputs(out, ClipRequest(video), torch.zeros(16000), 16000)
    assert list(out.iterdir()) == []


def test_out_naming_a_file_is_one_line(tmp_path, micro_checkpoint):
    video = moving_square(tmp_path / "v.mp4", 1.0, 25.0)
    target = tmp_path / "taken"
    target.write_text("x")
    done = vssflow("generate", "--checkpoint", str(micro_checkpoint), "--video", str(video), "--out", str(target))
    one_line_failure(done, "--out names an existing file")
    assert target.read_text() == "x"


def test_another_sampler_keeps_the_recipe_settings_it_accepts(tmp_path, micro_checkpoint, caplog):
    import vssflow
    from vssflow.generation import sampler_from_recipe

    pipe = vssflow.load_pipeline(micro_checkpoint, device="cpu")
    request = vssflow.ClipRequest(moving_square(tmp_path / "v.mp4", 1.0, 25.0))
    recipe_default = pipe.generate([request])[0]
    named = pipe.generate([request], sampler="euler")[0]  # the recipe's sampler by name: steps 2, guidance 2
    assert np.array_equal(recipe_default.numpy(), named.numpy())
    heun = sampler_from_recipe(pipe.recipe, "heun")
    assert heun.config["steps"] == 2 and heun.guidance == 2.0
    with caplog.at_level("WARNING", logger="vssflow.generate"):
        adaptive = sampler_from_recipe(pipe.recipe, "dopri5")  # takes guidance, not steps
    assert adaptive.guidance == 2.0
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1 and "steps=2" in dropped[0]


def test_a_checkpoint_names_the_plugin_distribution_it_needs(tmp_path, micro_checkpoint):
    meta = json.loads((micro_checkpoint / "meta.json").read_text())
    dists = {e["distribution"]: e for e in meta["plugins"]}
    assert "vssflow" in dists and "encoder tiny-cnn" in dists["vssflow"]["components"]
    copy = tmp_path / "ckpt"
    shutil.copytree(micro_checkpoint, copy)
    meta["plugins"].append({"distribution": "vssflow-lipreader", "version": "2.1.0",
                            "components": ["encoder lipreader"]})
    (copy / "meta.json").write_text(json.dumps(meta))
    video = moving_square(tmp_path / "v.mp4", 1.0, 25.0)
    done = vssflow("generate", "--checkpoint", str(copy), "--video", str(video), "--out", str(tmp_path / "out"))
    one_line_failure(done, "pip install vssflow-lipreader==2.1.0")
