"""`vssflow train-vocoder`: trains a loadable `vocos` folder, resumes, refuses mismatched resumes, learns."""

from __future__ import annotations

import json

import pytest
import torch

from tests.components.conftest import SAMPLE_RATE
from vssflow.cli.main import main
from vssflow.core.errors import CheckpointError
from vssflow.core.interfaces import MelSpec
from vssflow.registry import create

TINY = ["--dim", "16", "--intermediate-dim", "32", "--layers", "1", "--disc-scale", "0.125", "--batch-size", "2",
        "--segment-s", "0.25", "--log-every", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def wav_dir(tmp_path_factory, speech):
    from vssflow.core.media import write_audio

    root = tmp_path_factory.mktemp("wavs")
    write_audio(root / "a.wav", speech, SAMPLE_RATE)
    write_audio(root / "sub" / "b.flac", speech.flip(0), SAMPLE_RATE)
    return root


def test_train_vocoder_writes_a_loadable_folder_and_resumes(wav_dir, tmp_path, capsys):
    out = tmp_path / "voc"
    assert main(["train-vocoder", str(wav_dir), "--out", str(out), "--steps", "2", *TINY]) == 0
    assert "training vocoder on 2 clips" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert (config["dim"], config["hop_length"], config["n_mels"]) == (16, 160, 64)
    vocoder = create("vocoder", "vocos", path=str(out))
    assert vocoder(torch.randn(1, 64, 10) - 4).shape == (1, 1600)
    assert main(["train-vocoder", str(wav_dir), "--out", str(out), "--steps", "3", *TINY]) == 0
    assert json.loads((out / "training" / "trainer_state.json").read_text())["step"] == 3
    assert not torch.equal(create("vocoder", "vocos", path=str(out)).head.weight, vocoder.head.weight)


def test_train_vocoder_reads_a_recipes_dataset_audio(tmp_path, capsys):
    out = tmp_path / "voc"
    data = [f"data.params.root={tmp_path / 'synth'}", "data.params.clips=2", "data.params.seconds=1.0"]
    sets = [arg for item in data for arg in ("--set", item)]
    assert main(["train-vocoder", "v2s-tiny", *sets, "--out", str(out), "--steps", "1", *TINY]) == 0
    assert "training vocoder on 2 clips (2.0 s)" in capsys.readouterr().out  # valid audio only, not the 4 s window
    vocoder = create("vocoder", "vocos", path=str(out))
    assert vocoder.mel == create("codec", "log-mel", n_mels=64, hop_length=160).mel  # the recipe codec's analysis


def test_resuming_with_other_settings_is_refused(wav_dir, tmp_path):
    out = tmp_path / "voc"
    assert main(["train-vocoder", str(wav_dir), "--out", str(out), "--steps", "1", *TINY]) == 0
    other = [a if a != "16" else "24" for a in TINY]  # another backbone width
    with pytest.raises(CheckpointError, match="started with other vocoder or training settings"):
        main(["-v", "train-vocoder", str(wav_dir), "--out", str(out), "--steps", "2", *other])
    assert main(["train-vocoder", str(wav_dir), "--out", str(out), "--steps", "2", *other]) == 2  # one-line error


def test_an_empty_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["train-vocoder", str(tmp_path), "--steps", "1"]) != 0
    assert "no .wav, .flac or .ogg files" in capsys.readouterr().err


def test_training_lowers_the_mel_loss(speech, tmp_path):
    from vssflow.plugins.vocoders.training import VocoderTrainConfig, train_vocoder

    config = VocoderTrainConfig(steps=30, batch_size=4, segment_s=0.25, lr=3e-3, gan_start=30, log_every=5, ckpt_every=0)
    logs: list[dict[str, float]] = []
    train_vocoder([speech], MelSpec(), tmp_path / "voc", config, {"dim": 32, "intermediate_dim": 64, "layers": 2},
                  on_log=logs.append)
    first, last = logs[0]["mel"], (logs[-1]["mel"] + logs[-2]["mel"]) / 2
    assert last < 0.85 * first, [round(r["mel"], 3) for r in logs]
