"""Codecs: the log-mel analysis, its normalisation, the mel-VAE layout and save/load, sample-rate contracts."""

from __future__ import annotations

import math

import pytest
import torch

from tests.components.conftest import SAMPLE_RATE, formant_chirp
from vssflow.core.errors import ContractError, PluginError
from vssflow.core.sequence import SequenceSpec
from vssflow.registry import create

TINY_VAE = {"block_out_channels": [4, 8, 8], "latent_channels": 2, "layers_per_block": 1, "norm_num_groups": 2}


def reference_log_mel(wav: torch.Tensor) -> torch.Tensor:
    """The paper's mel written out by hand: reflect pad (n_fft - hop)/2, uncentred |STFT|, Slaney mel, ln clamp."""
    import torchaudio

    n_fft, hop = 1024, 160
    padded = torch.nn.functional.pad(wav[None], ((n_fft - hop) // 2,) * 2, mode="reflect")[0]
    spec = torch.stft(padded, n_fft, hop, window=torch.hann_window(n_fft), center=False, return_complex=True).abs()
    fb = torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, 0.0, 8000.0, 64, 16000, norm="slaney", mel_scale="slaney")
    return torch.log((fb.T @ spec).clamp_min(1e-5))  # (64, F)


def test_log_mel_codec_is_the_papers_mel_at_100_hz(speech):
    codec = create("codec", "log-mel")
    latent = codec.encode(speech[None])
    assert latent.shape == (1, speech.numel() // 160, 64)
    assert (codec.hop_length, codec.channels, codec.sample_rate) == (160, 64, 16000)
    assert codec.contract.sample_rate == 16000 and codec.contract.extra["latent_fps"] == 100.0
    mel = codec.decode(latent)[0]
    assert torch.allclose(mel, reference_log_mel(speech)[:, : mel.shape[-1]], atol=1e-4)
    assert torch.allclose(latent[0].T, (mel - codec.mean) / codec.std, atol=1e-5)


def test_log_mel_decode_clamps_below_the_floor():
    codec = create("codec", "log-mel")
    mel = codec.decode(torch.full((1, 3, 64), -100.0))
    assert torch.all(mel == math.log(1e-5))


def test_default_normalisation_gives_a_unit_scale_target(speech):
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(SAMPLE_RATE) / SAMPLE_RATE
    impact = torch.randn(SAMPLE_RATE, generator=gen) * torch.exp(-6 * t) * 0.3
    beeps = 0.2 * torch.sin(2 * math.pi * 440 * t) * (t % 0.5 < 0.3)
    wavs = [speech, formant_chirp(1.0), impact, beeps, torch.zeros(SAMPLE_RATE // 5)]
    codec = create("codec", "log-mel")
    latent = torch.cat([codec.encode(w[None])[0] for w in wavs])  # (T, 64)
    assert abs(float(latent.mean())) < 0.5
    assert 0.7 < float(latent.std()) < 1.4


def test_mel_statistics_matches_the_codec_analysis(speech):
    from vssflow.plugins.codecs.log_mel import mel_statistics

    mean, std = mel_statistics([speech])
    mel = reference_log_mel(speech)
    assert mean == pytest.approx(float(mel.mean()), abs=1e-3)
    assert std == pytest.approx(float(mel.std()), rel=1e-2)


@pytest.mark.parametrize("name, params", [("log-mel", {}), ("vae", TINY_VAE)])
def test_audio_at_another_rate_is_a_contract_error(name, params):
    codec = create("codec", name, **params)
    wav = torch.zeros(1, 44100)
    with pytest.raises(ContractError, match=rf"codec '{name}': expected audio at 16000 Hz, got 44100 Hz"):
        codec.encode(wav, sample_rate=44100)
    with pytest.raises(ContractError, match=rf"codec '{name}': expected audio at 16000 Hz, got 44100 Hz"):
        codec.check_sample_rate(44100)
    with pytest.raises(ContractError, match=rf"codec '{name}': expected a waveform batch \(B, S\)"):
        codec.encode(torch.zeros(16000))


def test_vae_latent_has_the_audioldm2_layout():
    codec = create("codec", "vae", **TINY_VAE)  # 3 blocks: downsampling 4, like AudioLDM2's
    assert codec.factor == 4 and codec.hop_length == 640
    assert codec.channels == 2 * 64 // 4
    assert SequenceSpec(16000, codec.hop_length, 10.0).num_frames == 250  # 25 Hz over the paper's 10 s window
    wav = 0.1 * torch.randn(2, 16000 + 300)  # 101 mel frames: padded up to 104 = 26 latent frames
    latent = codec.encode(wav)
    assert latent.shape == (2, 26, codec.channels)
    assert codec.decode(latent).shape == (2, 64, 104)


def test_a_vae_saved_with_save_pretrained_loads_back_identically(tmp_path):
    torch.manual_seed(0)
    codec = create("codec", "vae", **TINY_VAE, scaling_factor=0.5)
    codec.save_pretrained(tmp_path / "vae")
    assert (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list((tmp_path / "vae").glob("*.bin"))  # safetensors only: nothing to unpickle
    torch.manual_seed(1)
    loaded = create("codec", "vae", path=str(tmp_path / "vae"), scaling_factor=0.5)
    wav = 0.1 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.encode(wav), codec.encode(wav))
        latent = codec.encode(wav)
        assert torch.equal(loaded.decode(latent), codec.decode(latent))
    assert loaded.frozen and not any(p.requires_grad for p in loaded.parameters())


def test_vae_loads_from_a_pipeline_subfolder_with_its_scaling_factor(tmp_path):
    codec = create("codec", "vae", **TINY_VAE)
    codec.vae.register_to_config(scaling_factor=0.25)
    codec.save_pretrained(tmp_path / "audioldm2" / "vae")  # a whole pipeline snapshot keeps the VAE in vae/
    pipeline = str(tmp_path / "audioldm2")
    assert create("codec", "vae", path=pipeline, subfolder="vae").scaling_factor == 0.25
    assert create("codec", "vae", path=pipeline, subfolder="vae", scaling_factor=2.0).scaling_factor == 2.0


def test_vae_folder_errors_are_clear(tmp_path):
    with pytest.raises(PluginError, match="config.json not found"):
        create("codec", "vae", path=str(tmp_path))
    create("codec", "vae", **TINY_VAE).save_pretrained(tmp_path / "vae")
    with pytest.raises(ContractError, match=r"^codec 'vae' from vssflow \S+ failed to build: params ask for "
                                          r"latent_channels=4, the VAE folder has latent_channels=2"):
        create("codec", "vae", path=str(tmp_path / "vae"), latent_channels=4)
