"""`vssflow generate`: audio as long as each video (any fps, 1 s to 60 s), and bad input handled cleanly."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.main_job.conftest import vssflow
from vssflow.core.media import probe, write_video


def moving_square(path: Path, seconds: float, fps: float, size: tuple[int, int] = (48, 64)) -> Path:
    n = max(1, round(seconds * fps))
    frames = np.zeros((n, size[0], size[1], 3), dtype=np.uint8)
    for i in range(n):
        x = int((i * 3) % (size[1] - 8))
        frames[i, 10:18, x : x + 8] = (255, 200, 40)
    return write_video(path, frames, fps)


@pytest.mark.parametrize("fps, seconds", [(24.0, 1.0), (30000 / 1001, 2.5), (25.0, 7.3), (24.0, 60.0)])
def test_audio_lasts_as_long_as_the_video(tmp_path, micro_checkpoint, fps, seconds):
    video = moving_square(tmp_path / "in.mp4", seconds, fps)
    out = tmp_path / "out"
    done = vssflow("generate", "--checkpoint", str(micro_checkpoint), "--video", str(video), "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    info = sf.info(str(out / "in.wav"))
    video_s = probe(video).duration_s
    assert abs(info.frames / info.samplerate - video_s) <= 160 / 16000  # within one audio frame (hop)
    muxed = probe(out / "in.mp4")
    assert muxed.has_audio and muxed.has_video


def test_manifest_batches_and_names_outputs_by_clip_id(tmp_path, micro_checkpoint):
    for name, secs in (("a", 1.0), ("b", 1.6)):
        moving_square(tmp_path / f"{name}.mp4", secs, 25.0)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "first", "task": "v2s", "video": "a.mp4"}\n{"id": "second", "task": "v2s", "video": "b.mp4"}\n')
    done = vssflow("generate", "--checkpoint", str(micro_checkpoint), "--manifest", str(manifest), "--out",
                   str(tmp_path / "out"), "--batch-size", "3")
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "first.mp4", "first.wav", "generated.jsonl", "second.mp4", "second.wav"]
    # the second clip alone, batch size 1, same seed: the same audio (noise and vocoder phases are per clip)
    single = tmp_path / "one.jsonl"
    single.write_text('{"id": "second", "task": "v2s", "video": "b.mp4"}\n')
    alone = vssflow("generate", "--checkpoint", str(micro_checkpoint), "--manifest", str(single), "--out",
                    str(tmp_path / "alone"), "--batch-size", "1")
    assert alone.returncode == 0, alone.stderr[-2000:]
    a, _ = sf.read(str(tmp_path / "alone" / "second.wav"))
    b, _ = sf.read(str(tmp_path / "out" / "second.wav"))
    assert a.shape == b.shape and np.abs(a - b).max() < 1e-2  # batched float maths differs only in rounding
    other, _ = sf.read(str(tmp_path / "out" / "first.wav"))
    assert np.abs(a[: len(other)] - other[: len(a)]).max() > 1e-2  # different clips get different noise


def _fails_cleanly(result, out: Path, needle: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert needle in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists() or not any(out.iterdir()), "partial output left behind"


class _Trap:
    def __reduce__(self):
        return (open, ("UNPICKLED", "w"))


def test_bad_inputs_fail_with_one_line_and_no_output(tmp_path, micro_checkpoint):
    out = tmp_path / "out"
    video = moving_square(tmp_path / "ok.mp4", 1.0, 25.0)
    gen = ("generate", "--out", str(out))

    _fails_cleanly(vssflow(*gen, "--checkpoint", str(micro_checkpoint), "--video", str(tmp_path / "missing.mp4")),
                   out, "missing.mp4")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(video.read_bytes()[:300])
    _fails_cleanly(vssflow(*gen, "--checkpoint", str(micro_checkpoint), "--video", str(corrupt)), out, "corrupt.mp4")
    _fails_cleanly(vssflow(*gen, "--checkpoint", str(micro_checkpoint), "--video", str(video), "--transcript", "hi"),
                   out, "no transcript condition")

    other = tmp_path / "other-ckpt"
    shutil.copytree(micro_checkpoint, other)
    recipe = (other / "recipe.yaml").read_text().replace("depth: 2", "depth: 3")
    (other / "recipe.yaml").write_text(recipe)
    _fails_cleanly(vssflow(*gen, "--checkpoint", str(other), "--video", str(video)), out, "another recipe")

    posing = tmp_path / "model.ckpt"
    posing.write_bytes(pickle.dumps(_Trap()))
    result = vssflow(*gen, "--checkpoint", str(posing), "--video", str(video), cwd=tmp_path)
    _fails_cleanly(result, out, "never unpickles")
    fake = tmp_path / "fake-ckpt"
    shutil.copytree(micro_checkpoint, fake)
    for name in ("model.safetensors", "ema.safetensors"):
        (fake / name).write_bytes(pickle.dumps(_Trap()))
    _fails_cleanly(vssflow(*gen, "--checkpoint", str(fake), "--video", str(video), cwd=tmp_path), out, ".safetensors")
    assert not (tmp_path / "UNPICKLED").exists()


def test_an_untrained_pipeline_generates_from_a_recipe(tmp_path):
    """Pipeline.untrained: random weights around a recipe (benchmarks, smoke tests), same generate API."""
    from tests.main_job.conftest import MICRO
    from vssflow.generation import ClipRequest, Pipeline
    from vssflow.registry.recipe import load_recipe

    pipe = Pipeline.untrained(load_recipe(str(MICRO)), device="cpu")
    video = moving_square(tmp_path / "in.mp4", 1.5, 25.0)
    (wav,) = pipe.generate([ClipRequest(video)], steps=2, precision="bf16")  # bf16 applies on CUDA only
    assert wav.shape == (round(probe(video).duration_s * pipe.sample_rate),) and wav.dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        pipe.generate([ClipRequest(video)], precision="fp8")
    with pytest.raises(Exception, match="untrained 'micro-v2s'.*no transcript"):
        pipe.generate([ClipRequest(video, transcript="hello")])
