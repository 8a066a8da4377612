"""44.1 kHz stereo end to end: recipes/v2s-tiny-44k-stereo.yaml trains on a stereo synthetic set, and
`vssflow generate` writes a 2-channel 44.1 kHz wav and an mp4 with stereo AAC as long as the video."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from tests.main_job.conftest import vssflow
from tests.main_job.test_generate import moving_square

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "v2s-tiny-44k-stereo.yaml"
HOP = 512  # the recipe's latent hop at 44.1 kHz: one audio frame


@pytest.fixture(scope="session")
def stereo_root(tmp_path_factory) -> Path:
    """Four 1-second 44.1 kHz stereo synthetic V2S clips."""
    from vssflow.plugins.datasets.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth-44k")
    generate(root, SynthConfig(clips=4, seconds=1.0, families=("v2s",), size=48, sample_rate=44100, channels=2))
    return root


@pytest.fixture(scope="session")
def stereo_checkpoint(tmp_path_factory, stereo_root) -> Path:
    out = tmp_path_factory.mktemp("stereo-run")
    sets = {"train.steps": 2, "train.batch_size": 2, "train.warmup_steps": 1, "audio.duration_s": 1.0,
            "data.params.root": stereo_root, "data.params.clips": 4, "data.params.seconds": 1.0,
            "data.params.size": 48, "data.params.split": "all"}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    done = vssflow("train", str(RECIPE), "--out", str(out), "--no-progress", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "checkpoints" / "last"


def test_stereo_synthetic_clips_are_written_at_44k(stereo_root):
    info = sf.info(str(stereo_root / "clips" / "v2s-000000.wav"))
    assert (info.samplerate, info.channels, info.frames) == (44100, 2, 44100)


def test_a_44k_stereo_model_writes_stereo_wav_and_stereo_aac(tmp_path, stereo_checkpoint):
    from vssflow.core.media import probe, read_audio

    video = moving_square(tmp_path / "in.mp4", 1.7, 25.0)  # longer than the 1 s window: two cross-faded windows
    out = tmp_path / "out"
    done = vssflow("generate", "--checkpoint", str(stereo_checkpoint), "--video", str(video), "--out", str(out),
                   "--steps", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    video_s = probe(video).duration_s
    info = sf.info(str(out / "in.wav"))
    assert (info.samplerate, info.channels) == (44100, 2)
    assert abs(info.frames / info.samplerate - video_s) <= HOP / 44100
    muxed = probe(out / "in.mp4")
    assert (muxed.audio_codec, muxed.channels, muxed.sample_rate) == ("aac", 2, 44100)
    audio, rate = read_audio(out / "in.mp4", mono=False)
    assert audio.shape[0] == 2 and rate == 44100
    assert abs(audio.shape[1] / rate - video_s) <= HOP / 44100
    wav, _ = read_audio(out / "in.wav", mono=False)
    assert not bool((wav[0] == wav[1]).all())  # two channels generated, not one copied
