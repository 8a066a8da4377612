"""Judges: packaged weights load offline, PANNs Cnn14 loads local checkpoints only, and FD ranks classes."""

from __future__ import annotations

import pickle

import pytest
import torch

from vssflow.core.errors import PluginError
from vssflow.registry import create

from .conftest import knocks, synthetic_clip, tone

pytest.importorskip("aisfx", reason="needs aisfx: pip install --no-deps aisfx==0.1.2")


@pytest.fixture(scope="module")
def aisfx():
    return create("judge", "aisfx")


def _up(wav: torch.Tensor) -> torch.Tensor:
    from vssflow.core.media import resample

    return resample(wav, 16000, 44100)


def test_aisfx_embeds_512_d_deterministically(aisfx):
    wav = _up(tone(1.0, 220)).unsqueeze(0).repeat(2, 1)
    a, b = aisfx.embed(wav), aisfx.embed(wav)
    assert a.shape == (2, 512) and torch.equal(a, b)
    assert aisfx.sample_rate == 44100 and len(aisfx.weights_hash()) == 16


def test_fd_of_a_set_against_its_own_other_half_is_below_fd_against_another_sound_class():
    fd = create("metric", "fd")  # aisfx by default
    assert fd.sample_rate == 44100
    impacts = [_up(synthetic_clip("v2s", i, 1.0)[1]) for i in range(4)]
    tones = [_up(tone(1.0, 150 + 40 * i, seed=i)) for i in range(2)]
    knock = [_up(knocks(1.0, [0.1 + 0.1 * i, 0.6], 900 + 300 * i, seed=i)) for i in range(4)]
    a, b = fd.features(impacts[:2] + tones[:1] + knock[:1]), fd.features(impacts[2:] + tones[1:] + knock[1:2])
    other = fd.features([_up(tone(1.0, 1800 + 300 * i, seed=9, harmonics=1)) for i in range(3)])
    assert fd.score(a, b) < fd.score(a, other)
    assert fd.feature_key().startswith("aisfx:0.1.2:44100:")


def test_panns_cnn14_full_size_shapes_with_random_weights():
    from vssflow.plugins.judges.panns import Cnn14

    net = Cnn14(16000).eval()
    with torch.no_grad():
        emb, logits = net(tone(1.0, 300).unsqueeze(0))
    assert emb.shape == (1, 2048) and logits.shape == (1, 527)
    assert sum(p.numel() for p in net.parameters()) > 79_000_000  # Cnn14's ~80.8 M


@pytest.fixture(scope="module")
def cnn14_pth(tmp_path_factory):
    """A narrow Cnn14 saved in the PANNs release format: {"model": state_dict} with the front-end buffers."""
    from vssflow.plugins.judges.panns import Cnn14

    torch.manual_seed(0)
    net = Cnn14(16000, 527, base_channels=8)
    state = dict(net.state_dict())
    state["spectrogram_extractor.stft.conv_real.weight"] = torch.zeros(257, 1, 512)
    state["logmel_extractor.melW"] = torch.zeros(257, 64)
    path = tmp_path_factory.mktemp("panns") / "Cnn14_16k.pth"
    torch.save({"model": state, "iteration": 0}, path)
    return path, net.eval()


def test_panns_judge_loads_a_local_pth_with_weights_only(cnn14_pth):
    path, net = cnn14_pth
    judge = create("judge", "panns-cnn14", path=str(path))
    wav = torch.stack([tone(1.5, 300), tone(1.5, 900)])
    with torch.no_grad():
        emb, logits = net(wav)
    assert torch.allclose(judge.embed(wav), emb, atol=1e-5) and torch.allclose(judge.classify(wav), logits, atol=1e-5)
    assert len(judge.labels) == 527


def test_panns_metrics_run_on_random_weights(cnn14_pth):
    path, _ = cnn14_pth
    wavs = [tone(1.0, 200 + 50 * i, seed=i) for i in range(4)]
    fd = create("metric", "fd-panns", checkpoint=str(path))
    feats = fd.features(wavs)
    assert feats.shape == (4, 256) and abs(fd.score(feats, feats)) < 1e-6
    kl = create("metric", "kl-panns", checkpoint=str(path))
    batch = torch.stack(wavs)
    assert kl(batch, batch).abs().max() < 527 * 1e-6 + 1e-6  # av-benchmark's +1e-6: about -K * 1e-6 at best
    is_metric = create("metric", "is-panns", checkpoint=str(path))
    assert is_metric.score(is_metric.features(wavs), None) >= 1.0


class _Payload:
    pass


def test_panns_judge_refuses_pickled_objects_and_wrong_shapes(tmp_path, cnn14_pth):
    bad = tmp_path / "evil.pth"
    with open(bad, "wb") as f:
        pickle.dump({"model": _Payload()}, f)
    with pytest.raises(PluginError, match="not a plain tensor checkpoint"):
        create("judge", "panns-cnn14", path=str(bad)).embed(tone(1.0, 200)[None])
    path, net = cnn14_pth
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("fc1.")}
    partial = tmp_path / "partial.pth"
    torch.save(state, partial)
    with pytest.raises(PluginError, match="missing"):
        create("judge", "panns-cnn14", path=str(partial)).embed(tone(1.0, 200)[None])
    with pytest.raises(PluginError, match="no checkpoint file"):
        create("judge", "panns-cnn14", path=str(tmp_path / "absent.pth")).embed(tone(1.0, 200)[None])


def test_available_names_the_extra(monkeypatch):
    from vssflow.plugins import metrics

    assert metrics.available("mel-distance") == (True, "")
    monkeypatch.setitem(metrics.REQUIRES, "wer", ("no_such_module_xyz",))
    ok, why = metrics.available("wer")
    assert not ok and "no_such_module_xyz" in why and "vssflow[eval]" in why
    monkeypatch.setitem(metrics.REQUIRES, "stoi", ("aisfx", "no_such_module_xyz"))
    from vssflow.plugins.judges import REQUIRES

    monkeypatch.setitem(REQUIRES, "aisfx", ("no_such_module_xyz",))
    ok, why = metrics.available("fd")
    assert not ok and "fd" in why
    assert metrics.available("fd", {"judge": "logmel-cnn", "judge_path": "judges/x"}) == (True, "")
    ok, why = metrics.available("fd", {"judge": "logmel-cnn"})  # a judge that needs local weights, none given
    assert not ok and "judge_path" in why and "--fit-judges" in why
