"""44.1 kHz stereo components: the Oobleck VAE codec, the BigVGAN vocoder, the stereo log-mel codec, and the
model's decoding of multi-channel audio. Weights are tiny random configurations saved and reloaded with the
components' own save routines (no download)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vssflow.core.errors import ContractError, PluginError, RecipeError
from vssflow.registry import create, get_spec

OOBLECK = get_spec("codec", "oobleck").tiny
BIGVGAN = get_spec("vocoder", "bigvgan").tiny


def stereo_tone(seconds: float = 0.5, rate: int = 44100) -> torch.Tensor:
    """(1, 2, S): 440 Hz on the left, 1 kHz on the right."""
    t = torch.arange(int(seconds * rate)) / rate
    return torch.stack([0.3 * torch.sin(2 * math.pi * 440 * t), 0.3 * torch.sin(2 * math.pi * 1000 * t)])[None]


def test_oobleck_round_trips_stereo_at_44k_with_finite_output():
    codec = create("codec", "oobleck", **OOBLECK)
    assert (codec.sample_rate, codec.audio_channels, codec.hop_length, codec.output) == (44100, 2, 256, "wav")
    assert codec.mel is None and codec.channels == 8
    wav = stereo_tone(0.5)
    latent = codec.encode(wav, sample_rate=44100)
    assert latent.shape == (1, math.ceil(wav.shape[-1] / 256), 8)
    out = codec.decode(latent)
    assert out.shape == (1, 2, latent.shape[1] * 256) and torch.isfinite(out).all()


def test_oobleck_loads_the_folder_its_save_routine_writes(tmp_path):
    codec = create("codec", "oobleck", **OOBLECK)
    codec.save_pretrained(tmp_path / "vae")
    assert (tmp_path / "vae" / "config.json").is_file()
    loaded = create("codec", "oobleck", path=str(tmp_path), subfolder="vae")  # architecture from the folder
    wav = stereo_tone(0.2)
    assert torch.equal(codec.encode(wav), loaded.encode(wav))
    latent = codec.encode(wav)
    assert torch.allclose(codec.decode(latent), loaded.decode(latent))
    assert not any(p.requires_grad for p in loaded.parameters())  # frozen by default


def test_oobleck_refuses_a_missing_folder_and_a_conflicting_architecture(tmp_path):
    with pytest.raises(PluginError, match=r"codec 'oobleck'.*nowhere/config.json not found; `path` must be a local folder"):
        create("codec", "oobleck", path=str(tmp_path / "nowhere"))
    create("codec", "oobleck", **OOBLECK).save_pretrained(tmp_path / "vae")
    with pytest.raises((ContractError, PluginError),
                       match=r"params ask for decoder_channels=6, the VAE folder has decoder_channels=4"):
        create("codec", "oobleck", path=str(tmp_path / "vae"), decoder_channels=6)


def test_oobleck_checks_its_input_channels_and_rate():
    codec = create("codec", "oobleck", **OOBLECK)
    with pytest.raises(ContractError, match=r"expected a 2-channel waveform batch \(B, 2, S\)"):
        codec.encode(torch.zeros(1, 4410))
    with pytest.raises(ContractError, match=r"expected audio at 44100 Hz, got 16000 Hz"):
        codec.encode(torch.zeros(1, 2, 4410), sample_rate=16000)
    mono = create("codec", "oobleck", **{**OOBLECK, "audio_channels": 1})
    assert mono.decode(mono.encode(torch.zeros(2, 1000))).shape == (2, 1024)


def test_bigvgan_vocoder_gives_one_hop_per_frame_and_reloads_from_its_folder(tmp_path):
    vocoder = create("vocoder", "bigvgan", **BIGVGAN)
    assert (vocoder.mel.sample_rate, vocoder.mel.hop_length, vocoder.mel.n_mels) == (44100, 64, 16)
    mel = torch.randn(2, 16, 12) - 4
    wav = vocoder(mel)
    assert wav.shape == (2, 12 * 64) and torch.isfinite(wav).all() and wav.abs().max() <= 1.0
    vocoder.save_pretrained(tmp_path / "bigvgan")
    config = json.loads((tmp_path / "bigvgan" / "config.json").read_text())
    assert config["hop_size"] == 64 and config["activation"] == "snakebeta"
    loaded = create("vocoder", "bigvgan", path=str(tmp_path / "bigvgan"))
    assert torch.equal(loaded(mel), wav)


def test_bigvgan_loads_reference_weight_norm_checkpoints(tmp_path):
    """The reference trains with weight norm: weight_g / weight_v pairs are folded at load time."""
    from torch.nn.utils import weight_norm

    from vssflow.plugins.vocoders.base import write_folder
    from vssflow.plugins.vocoders.bigvgan import BigVGANVocoder, convert_reference_checkpoint

    ref = BigVGANVocoder(**BIGVGAN)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith((".alpha", ".beta")):
                p.normal_(0, 0.3)  # trained snakes are not at their init
    plain = ref(torch.randn(1, 16, 8, generator=torch.Generator().manual_seed(0)) - 4)
    for module in ref.modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            weight_norm(module)
    state = ref.state_dict()
    assert any(k.endswith("weight_g") for k in state) and "ups.0.0.weight_v" in state
    torch.save({"generator": state}, tmp_path / "bigvgan_generator.pt")
    (tmp_path / "config.json").write_text(json.dumps({**ref.config, "segment_size": 65536, "lr": 1e-4}))
    convert_reference_checkpoint(tmp_path, tmp_path / "converted")
    loaded = create("vocoder", "bigvgan", path=str(tmp_path / "converted"))
    again = loaded(torch.randn(1, 16, 8, generator=torch.Generator().manual_seed(0)) - 4)
    assert torch.allclose(again, plain, atol=1e-5)
    write_folder(tmp_path / "direct", ref.config, state)  # weight-norm keys straight from a folder work too
    assert torch.allclose(create("vocoder", "bigvgan", path=str(tmp_path / "direct"))(
        torch.randn(1, 16, 8, generator=torch.Generator().manual_seed(0)) - 4), plain, atol=1e-5)


def test_stereo_log_mel_keeps_each_channel_in_its_own_bins():
    codec = create("codec", "log-mel", sample_rate=44100, n_mels=32, n_fft=2048, win_length=2048, hop_length=512,
                   audio_channels=2)
    wav = stereo_tone(0.5)
    wav[:, 1] = 0.0  # silence on the right
    latent = codec.encode(wav, sample_rate=44100)
    assert latent.shape == (1, wav.shape[-1] // 512, 64) and codec.channels == 64
    mel = codec.decode(latent)
    assert mel.shape == (1, 2, 32, latent.shape[1])
    mono = create("codec", "log-mel", sample_rate=44100, n_mels=32, n_fft=2048, win_length=2048, hop_length=512)
    assert torch.allclose(mel[:, 0], mono.decode(mono.encode(wav[:, 0])), atol=1e-5)
    assert torch.all(mel[:, 1] == math.log(1e-5))
    with pytest.raises(ContractError, match=r"expected a 2-channel waveform batch"):
        codec.encode(torch.zeros(1, 44100))


def test_the_model_vocodes_each_channel_and_a_waveform_codec_needs_no_vocoder():
    from vssflow.core.model import decode_latent

    codec = create("codec", "log-mel", sample_rate=44100, n_mels=32, n_fft=2048, win_length=2048, hop_length=512,
                   audio_channels=2)
    vocoder = create("vocoder", "griffin-lim", sample_rate=44100, n_mels=32, n_fft=2048, win_length=2048,
                     hop_length=512, n_iter=2)
    latent = codec.encode(stereo_tone(0.25))
    mel, wav = decode_latent(codec, vocoder, latent)
    assert mel.shape[:2] == (1, 2) and wav.shape == (1, 2, latent.shape[1] * 512)
    assert torch.allclose(wav[:, 0], vocoder(mel[:, 0]))
    oobleck = create("codec", "oobleck", **OOBLECK)
    mel, wav = decode_latent(oobleck, None, oobleck.encode(stereo_tone(0.1)))
    assert mel is None and wav.shape[:2] == (1, 2)


def test_recipes_check_channels_and_refuse_a_vocoder_for_a_waveform_codec():
    from vssflow.registry.assemble import build

    with pytest.raises(RecipeError, match=r"codec 'log-mel' makes 1-channel audio but audio.channels is 2"):
        build("v2s-tiny", overrides=["audio.channels=2"])
    from vssflow.registry.recipe import AudioConfig, ComponentRef, load_recipe

    def recipe(vocoder):
        codec = ComponentRef(name="oobleck", params=OOBLECK)
        audio = AudioConfig(sample_rate=44100, channels=2, duration_s=1.0, codec=codec, vocoder=vocoder)
        return load_recipe("v2s-tiny").model_copy(update={"audio": audio})

    with pytest.raises(RecipeError, match=r"audio.vocoder: codec 'oobleck' decodes straight to a waveform"):
        build(recipe(ComponentRef(name="hifigan")))
    parts = build(recipe(None))
    assert parts.vocoder is None and parts.spec.channels == 2 and parts.spec.hop_length == 256
    out = parts.model.generate(batch_size=1, duration=0.05, steps=1)
    assert out.mel is None and out.wav.shape == (1, 2, parts.spec.frames_for(0.05) * 256)


def test_vssflow_44k_pairs_the_papers_dit_with_the_oobleck_vae():
    from vssflow.registry.assemble import count_parameters

    counts = count_parameters("vssflow-44k")
    paper = count_parameters("vssflow-paper")
    assert counts["audio"] == {"sample_rate": 44100, "channels": 2, "hop_length": 2048, "latent_fps": 44100 / 2048,
                               "latent_channels": 64, "frames": 216, "codec": counts["audio"]["codec"]}
    assert 150e6 < counts["audio"]["codec"] < 160e6  # Stable Audio Open's VAE, frozen
    assert counts["by_part"]["backbone"] < paper["by_part"]["backbone"]  # the same DiT, a narrower latent in/out
    assert counts["by_part"]["backbone"] > 0.99 * paper["by_part"]["backbone"]
