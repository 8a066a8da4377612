"""Vocoders: log-mel -> Griffin-Lim round trip on speech, HiFi-GAN and Vocos folders load back identically."""

from __future__ import annotations

import json

import pytest
import torch

from tests.components.conftest import mel_l1
from vssflow.core.errors import ContractError, PluginError
from vssflow.registry import create

TINY_HIFIGAN = {
    "upsample_initial_channel": 16, "upsample_rates": [10, 16], "upsample_kernel_sizes": [20, 32],
    "resblock_kernel_sizes": [3, 5], "resblock_dilation_sizes": [[1, 3], [1, 3]],
}
TINY_VOCOS = {"dim": 16, "intermediate_dim": 32, "layers": 2}


def test_log_mel_then_griffin_lim_reconstructs_speech(speech):
    codec, vocoder = create("codec", "log-mel"), create("vocoder", "griffin-lim")
    torch.manual_seed(0)
    wav = vocoder(codec.decode(codec.encode(speech[None])))[0]
    assert wav.shape == speech.shape  # F * hop samples: the same length as the input
    noise = torch.randn(speech.shape, generator=torch.Generator().manual_seed(0)) * speech.std()
    distance, noise_distance = mel_l1(wav, speech), mel_l1(noise, speech)
    assert distance < 0.4, distance  # measured: 0.17 on espeak speech, 0.27 on the formant chirp
    assert distance < 0.2 * noise_distance, (distance, noise_distance)  # noise scores about 2.5


def test_griffin_lim_output_lines_up_with_the_analysed_audio(speech):
    """The half-hop delay is right: shifting the reconstruction either way only makes it worse."""
    codec, vocoder = create("codec", "log-mel"), create("vocoder", "griffin-lim", n_iter=16)
    torch.manual_seed(0)
    wav = vocoder(codec.decode(codec.encode(speech[None])))[0]
    aligned = mel_l1(wav, speech)
    assert aligned < mel_l1(torch.roll(wav, 60), speech)
    assert aligned < mel_l1(torch.roll(wav, -60), speech)


def test_vocoder_mel_contracts_match_the_codec():
    codec = create("codec", "log-mel")
    for name in ("griffin-lim", "hifigan", "vocos"):
        create("vocoder", name).check_mel(codec.mel)  # AudioLDM2's HiFi-GAN: hop 5*4*2*2*2 = 160, 64 bins
    with pytest.raises(ContractError, match="expected hop_length=256 from the codec, got 160"):
        create("vocoder", "griffin-lim", hop_length=256, n_fft=1024).check_mel(codec.mel)
    with pytest.raises(ContractError, match=r"vocoder 'griffin-lim': expected a mel \(B, 64, F\)"):
        create("vocoder", "griffin-lim")(torch.zeros(1, 80, 10))


def test_hifigan_folder_has_speecht5_keys_and_loads_back_identically(tmp_path):
    torch.manual_seed(0)
    vocoder = create("vocoder", "hifigan", **TINY_HIFIGAN)
    vocoder.save_pretrained(tmp_path / "vocoder")
    config = json.loads((tmp_path / "vocoder" / "config.json").read_text())
    assert config["upsample_rates"] == [10, 16] and config["model_in_dim"] == 64 and config["sampling_rate"] == 16000
    keys = set(vocoder.state_dict())
    assert {"conv_pre.weight", "upsampler.1.weight", "resblocks.3.convs1.1.weight", "resblocks.0.convs2.0.bias",
            "conv_post.weight", "mean", "scale"} <= keys
    loaded = create("vocoder", "hifigan", path=str(tmp_path / "vocoder"))
    mel = torch.randn(2, 64, 12) - 4
    out = loaded(mel)
    assert out.shape == (2, 12 * 160)
    assert torch.equal(out, vocoder(mel))


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
@pytest.mark.parametrize("style", ["weight_g/weight_v", "parametrizations"])
def test_hifigan_loader_folds_weight_norm(tmp_path, style):
    from safetensors.torch import save_file
    from torch.nn.utils import parametrizations, weight_norm

    torch.manual_seed(0)
    vocoder = create("vocoder", "hifigan", **TINY_HIFIGAN)
    vocoder.save_pretrained(tmp_path / "plain")
    normed = create("vocoder", "hifigan", path=str(tmp_path / "plain"))
    convs = [m for m in normed.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))]
    for conv in convs:
        weight_norm(conv) if style == "weight_g/weight_v" else parametrizations.weight_norm(conv)
    state = normed.state_dict()
    assert any("weight_g" in k or "original0" in k for k in state)
    (tmp_path / "normed").mkdir()
    (tmp_path / "normed" / "config.json").write_text((tmp_path / "plain" / "config.json").read_text())
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "normed" / "model.safetensors"))
    loaded = create("vocoder", "hifigan", path=str(tmp_path / "normed"))
    mel = torch.randn(1, 64, 8) - 4
    assert torch.allclose(loaded(mel), vocoder(mel), atol=1e-5)


def test_hifigan_normalize_before_uses_the_stored_statistics(tmp_path):
    vocoder = create("vocoder", "hifigan", **TINY_HIFIGAN, normalize_before=True)
    mel = torch.randn(1, 64, 8) - 4
    plain = vocoder(mel)
    vocoder.mean.fill_(-4.0)
    vocoder.scale.fill_(2.0)
    vocoder.save_pretrained(tmp_path / "v")
    loaded = create("vocoder", "hifigan", path=str(tmp_path / "v"))
    assert torch.equal(loaded(mel), vocoder(mel))
    assert not torch.allclose(loaded(mel), plain)


def test_hifigan_matches_transformers_speecht5_when_installed(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.SpeechT5HifiGanConfig(model_in_dim=64, **{k: v for k, v in TINY_HIFIGAN.items()})
    reference = transformers.SpeechT5HifiGan(config).eval()
    reference.save_pretrained(tmp_path / "hf", safe_serialization=True)
    ours = create("vocoder", "hifigan", path=str(tmp_path / "hf"))
    mel = torch.randn(1, 64, 8) - 4
    expected = reference(mel.transpose(1, 2))
    assert torch.allclose(ours(mel)[:, : expected.shape[-1]], expected, atol=1e-5)


def test_hifigan_folder_errors(tmp_path):
    with pytest.raises(PluginError, match="config.json not found"):
        create("vocoder", "hifigan", path=str(tmp_path))
    create("vocoder", "hifigan", **TINY_HIFIGAN).save_pretrained(tmp_path / "v")
    with pytest.raises(ContractError, match=r"from vssflow \S+ failed to build: params ask for upsample_initial_channel=32"):
        create("vocoder", "hifigan", path=str(tmp_path / "v"), upsample_initial_channel=32)
    (tmp_path / "v" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(PluginError, match="cannot read"):
        create("vocoder", "hifigan", path=str(tmp_path / "v"))


def test_vocos_saves_and_loads_back_identically(tmp_path):
    torch.manual_seed(0)
    vocoder = create("vocoder", "vocos", **TINY_VOCOS)
    vocoder.save_pretrained(tmp_path / "vocos")
    loaded = create("vocoder", "vocos", path=str(tmp_path / "vocos"))
    mel = torch.randn(2, 64, 15) - 4
    out = loaded(mel)
    assert out.shape == (2, 15 * 160)
    assert torch.equal(out, vocoder(mel))
    with pytest.raises(ContractError, match=r"from vssflow \S+ failed to build: params ask for layers=5"):
        create("vocoder", "vocos", path=str(tmp_path / "vocos"), layers=5)


def test_istft_same_inverts_the_mel_framing(speech):
    """The iSTFT the vocos head uses is the exact inverse of an STFT on core.audio's framing."""
    from vssflow.core.audio import istft_same, padded_window, side_padding

    n_fft, hop = 640, 160
    pad = side_padding(n_fft, hop)
    wav = speech[None]
    padded = torch.nn.functional.pad(wav[:, None], (pad, pad), mode="reflect")[:, 0]
    spec = torch.stft(padded, n_fft, hop, window=padded_window(n_fft, n_fft), center=False, return_complex=True)
    back = istft_same(spec, n_fft, hop)
    assert back.shape == wav.shape
    assert torch.allclose(back, wav, atol=1e-5)


def test_griffin_lim_is_a_function_of_its_input_alone():
    """Random initial phases come from the vocoder's seed, per clip: not from the global RNG or the batch."""
    vocoder = create("vocoder", "griffin-lim", n_iter=4)
    mel = torch.randn(3, 64, 20, generator=torch.Generator().manual_seed(0)) - 4
    torch.manual_seed(1)
    state = torch.get_rng_state()
    first = vocoder(mel)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    torch.manual_seed(2)
    assert torch.equal(vocoder(mel), first)
    assert torch.equal(vocoder(mel[1:2]), first[1:2])  # same clip alone or in a batch
    assert not torch.equal(create("vocoder", "griffin-lim", n_iter=4, seed=1)(mel), first)
