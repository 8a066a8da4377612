"""Stereo data: channel fitting, stereo wav/mp4 round trips, the synthetic set's panning, stereo batches, and
metrics that score 44.1 kHz stereo output at their own rate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vssflow.core.errors import MediaError
from vssflow.core.media import fit_channels, probe, read_audio, write_audio


def test_fit_channels_copies_averages_and_keeps_front_channels():
    mono = torch.arange(4.0)
    assert torch.equal(fit_channels(mono, 2), torch.stack([mono, mono]))
    stereo = torch.stack([torch.ones(4), -torch.ones(4)])
    assert torch.equal(fit_channels(stereo, 1), torch.zeros(1, 4))
    surround = torch.arange(24.0).reshape(6, 4)
    assert torch.equal(fit_channels(surround, 2), surround[:2])
    with pytest.raises(MediaError, match="cannot make 6-channel audio from 2 channels"):
        fit_channels(stereo, 6)


def test_stereo_wav_and_aac_keep_both_channels(tmp_path):
    from vssflow.core.media import mux_audio, write_video

    t = torch.arange(44100) / 44100
    wav = torch.stack([0.5 * torch.sin(2 * np.pi * 440 * t), torch.zeros_like(t)])
    write_audio(tmp_path / "a.wav", wav, 44100)
    back, rate = read_audio(tmp_path / "a.wav", mono=False)
    assert rate == 44100 and back.shape == (2, 44100) and back[1].abs().max() == 0
    video = write_video(tmp_path / "v.mp4", np.zeros((25, 32, 32, 3), np.uint8), 25.0)
    mux_audio(video, wav, 44100, tmp_path / "m.mp4")
    info = probe(tmp_path / "m.mp4")
    assert (info.audio_codec, info.channels, info.sample_rate) == ("aac", 2, 44100)
    aac, _ = read_audio(tmp_path / "m.mp4", mono=False)
    assert aac[0].abs().max() > 0.3 and aac[1].abs().max() < 0.05  # the left tone stays on the left


def test_the_synthetic_set_pans_each_source_by_its_position():
    from vssflow.plugins.datasets.synth import SynthConfig, render_clip

    checked = 0
    for i in range(0, 30, 3):  # v2s clips
        config = SynthConfig(clips=30, seconds=2.0, families=("v2s",), size=48, sample_rate=44100, channels=2)
        _, wav, labels = render_clip(config, i)
        _, mono, mono_labels = render_clip(SynthConfig(clips=30, seconds=2.0, families=("v2s",), size=48,
                                                       sample_rate=44100), i)
        assert wav.shape == (2, mono.shape[0])
        assert [e["time"] for e in labels["events"]] == [e["time"] for e in mono_labels["events"]]  # same scene
        times = [e["time"] for e in labels["events"]]
        for ev in labels["events"]:
            lonely = all(abs(t - ev["time"]) > 0.3 for t in times if t != ev["time"])
            if not lonely or labels["continuous"] or abs(ev["pan"] - 0.5) < 0.25:
                continue
            a = int(ev["time"] * 44100)
            left, right = (float((wav[c, a : a + 2205] ** 2).sum()) for c in (0, 1))
            assert (right > left) == (ev["pan"] > 0.5), ev
            checked += 1
    assert checked >= 3


def test_a_stereo_dataset_gives_stereo_batches(tmp_path):
    from vssflow.core.sequence import SequenceSpec
    from vssflow.plugins.datasets.synth.dataset import SyntheticAVDataset

    ds = SyntheticAVDataset(tmp_path, clips=2, seconds=1.0, families=("v2s",), size=32, split="all",
                            sample_rate=44100, channels=2, spec=SequenceSpec(44100, 512, 1.0, 2))
    batch = ds.collate([ds[0], ds[1]])
    assert batch["wav"].shape == (2, 2, 87 * 512)
    ds.pad_audio = "longest"
    assert ds.collate([ds[0]])["wav"].shape[:2] == (1, 2)


def test_metrics_score_44k_stereo_output_at_their_own_rate():
    from vssflow.evaluation import Reference, evaluate

    def clicks(rate: int) -> torch.Tensor:
        wav = torch.zeros(rate)
        for at in (0.2, 0.5, 0.8):
            i = int(at * rate)
            wav[i : i + rate // 40] = torch.linspace(1, 0, rate // 40) * torch.sin(torch.arange(rate // 40) * 0.3)
        return wav

    refs = {"a": Reference("a", labels={"events": [{"time": at, "onscreen": True} for at in (0.2, 0.5, 0.8)]})}
    hi = clicks(44100)
    stereo = evaluate({"a": (torch.stack([hi, hi]), 44100)}, refs, ["onset-f1"], progress=False)
    mono = evaluate({"a": (clicks(16000), 16000)}, refs, ["onset-f1"], progress=False)
    assert stereo.metrics["onset-f1"].per_clip["a"] == pytest.approx(1.0)
    assert mono.metrics["onset-f1"].per_clip["a"] == pytest.approx(1.0)
