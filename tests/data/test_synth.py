"""Synthetic benchmark: determinism, labels that match the media (onsets, speech, mouth, motion), CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import run_cli
from vssflow.core import media
from vssflow.core.errors import VssflowError
from vssflow.plugins.datasets.synth import SynthConfig, clip_family, clip_split, generate, render_clip


def detect_onsets(wav: np.ndarray, sr: int, threshold: float = 3.0) -> np.ndarray:
    """Onset times (s): peaks of a SuperFlux-style spectral flux (rise in dB over the max of neighbouring bins)."""
    n_fft, hop, lag = 256, 40, 2
    spec = torch.stft(torch.from_numpy(wav).float(), n_fft, hop, window=torch.hann_window(n_fft),
                      return_complex=True).abs()
    level = 20 * torch.log10(spec + 1e-3)  # (F, T) dB
    ref = torch.nn.functional.max_pool1d(level.T[None], 3, 1, 1)[0].T  # vibrato- and beat-tolerant reference
    flux = torch.relu(level[:, lag:] - ref[:, :-lag]).mean(0).numpy()
    times = (np.arange(len(flux)) + lag) * hop / sr
    w = int(0.015 * sr / hop)
    inside = (times > 0.01) & (times < len(wav) / sr - 0.01)  # the padded edges are not onsets
    return np.array([times[i] for i in range(len(flux))
                     if inside[i] and flux[i] >= threshold and flux[i] == flux[max(0, i - w) : i + w + 1].max()])


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    generate(root, SynthConfig(clips=6, seconds=4.0, seed=3, families=("v2s",)))
    return root


def _clips(root, family):
    for path in sorted((root / "clips").glob(f"{family}-*.json")):
        labels = json.loads(path.read_text())
        wav, sr = sf.read(str(path.with_suffix(".wav")), dtype="float32")
        yield path, labels, wav, sr


def test_event_labels_match_onsets_in_the_audio(scenes):
    hits = total = true_onsets = detected = 0
    errors = []
    for _, labels, wav, sr in _clips(scenes, "v2s"):
        onsets = detect_onsets(wav, sr)
        event_times = np.array([e["time"] for e in labels["events"]])
        for event in labels["events"]:
            if event["amplitude"] < 0.15:
                continue  # quiet hits under a ringing one are not reliably detectable
            total += 1
            gaps = onsets - event["time"]
            if len(gaps) and np.abs(gaps).min() <= 0.02:
                hits += 1
                errors.append(gaps[np.abs(gaps).argmin()])
        for onset in onsets:  # everything the detector hears is a labelled event
            detected += 1
            true_onsets += bool(len(event_times) and np.abs(event_times - onset).min() <= 0.025)
    assert total >= 20
    assert hits / total >= 0.9, f"only {hits}/{total} labelled events have an onset within 20 ms"
    assert true_onsets / detected >= 0.95, f"{detected - true_onsets}/{detected} onsets match no label"
    assert abs(np.median(errors)) <= 0.008


def test_impacts_happen_where_the_video_shows_the_object_on_the_floor(scenes):
    checked = near = 0
    for path, labels, _, _ in _clips(scenes, "v2s"):
        frames = (media.read_video(path.with_suffix(".mp4")).frames * 255).permute(0, 2, 3, 1).numpy()  # (L,H,W,3)
        floor = labels["size"] * 0.9
        objects = {o["id"]: o for o in labels["objects"]}
        for event in labels["events"]:
            if event["kind"] != "floor" or event["amplitude"] < 0.15:
                continue
            obj = objects[event["object"]]
            if sum(o["class"] == obj["class"] for o in objects.values()) > 1:
                continue  # same colour twice: cannot tell them apart
            k = min(int(round(event["time"] * labels["fps"])), len(frames) - 1)
            mask = np.abs(frames[k] - np.array(obj["color"])).max(axis=-1) < 30
            rows = np.nonzero(mask.any(axis=1))[0]
            checked += 1
            near += bool(len(rows) and abs(rows.max() + 1 - floor) <= 8)
    assert checked >= 5 and near / checked >= 0.8, f"{near}/{checked} impact frames show the object on the floor"


def _energy(wav, sr, a, b):
    seg = wav[int(a * sr) : int(b * sr)]
    return float(np.mean(seg**2)) if len(seg) else 0.0


def test_phoneme_times_match_the_speech(synth_root):
    found = 0
    for _, labels, wav, sr in _clips(synth_root, "visualtts"):
        found += 1
        s0, s1 = labels["speech"]
        inside = _energy(wav, sr, s0, s1)
        outside = (_energy(wav, sr, 0, s0 - 0.02) * s0 + _energy(wav, sr, s1 + 0.04, 99) * (3.0 - s1)) / 3.0
        assert inside > 1000 * max(outside, 1e-12)  # silence outside the labelled speech span
        phonemes = labels["phonemes"]
        assert phonemes[0]["start"] == pytest.approx(s0) and phonemes[-1]["end"] == pytest.approx(s1)
        assert all(p["end"] > p["start"] for p in phonemes)
        vowels = [p for p in phonemes if any(v in p["symbol"] for v in "aeiouɑɛɪʊʌəæɔɜ")]
        voiced = [_energy(wav, sr, p["start"], p["end"]) for p in vowels]
        assert np.median(voiced) > 100 * max(outside, 1e-12)  # every vowel span is loud
        words = [w["word"] for w in labels["words"]]
        assert " ".join(words) == labels["transcript"]
    assert found >= 2


def test_mouth_opening_follows_the_phonemes(synth_root):
    for path, labels, _, _ in _clips(synth_root, "visualtts"):
        opening = np.array(labels["face"]["mouth"]["open"])
        t = np.arange(len(opening)) / labels["fps"]
        s0, s1 = labels["speech"]
        speaking = (t > s0 + 0.05) & (t < s1 - 0.05)
        assert opening[speaking].mean() > 3 * opening[(t < s0 - 0.2) | (t > s1 + 0.2)].mean()
        # the rendered frames show it: dark mouth-interior pixels grow with the labelled opening
        frames = (media.read_video(path.with_suffix(".mp4")).frames * 255).permute(0, 2, 3, 1).numpy()
        interior = (np.abs(frames - np.array([45, 15, 20])).max(axis=-1) < 30).sum(axis=(1, 2))
        assert np.corrcoef(interior, opening)[0, 1] > 0.8


def test_mixtures_label_both_sources(synth_root):
    for _, labels, wav, sr in _clips(synth_root, "mix"):
        mix = labels["mix"]
        s0, s1 = labels["speech"]
        assert 0 <= s0 < s1 <= labels["seconds"] and labels["transcript"] and labels["phonemes"]
        assert "events" in labels and "objects" in labels
        if mix["mode"] == "add":
            assert 0.3 <= mix["scene_gain"] <= 0.7 and len(labels["face"]["inset"]) == 4
        else:
            assert not [e for e in labels["events"] if s0 <= e["time"] <= s1]  # the speech replaced them
        assert _energy(wav, sr, s0, s1) > 0
    record = json.loads((synth_root / "manifest.jsonl").read_text().splitlines()[2])
    assert record["task"] == "visualtts" and record["meta"]["family"] == "mix" and record["speech"] == labels_speech(
        synth_root, record)


def labels_speech(root, record):
    return json.loads((root / record["labels"]).read_text())["speech"]


def test_generation_is_deterministic_across_workers_and_resumes(tmp_path):
    config = SynthConfig(clips=8, seconds=1.5, seed=11)
    one = tmp_path / "one"
    two = tmp_path / "two"
    generate(one, config, workers=1)
    generate(two, config, workers=2)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file() and p.name != ".synth.lock")
    assert len(files) > 30
    for rel in files:
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel
    # a killed run resumes: remove a clip and the completion marker, generate again -> identical files
    clip = next((two / "clips").glob("mix-*.mp4"))
    clip.unlink()
    (two / "synth.json").unlink()
    generate(two, config, workers=1)
    assert clip.read_bytes() == (one / clip.relative_to(two)).read_bytes()
    # a complete root is reused as is; another config is refused
    assert generate(one, config) == one / "manifest.jsonl"
    with pytest.raises(VssflowError, match="already holds a synthetic set"):
        generate(one, SynthConfig(clips=8, seconds=1.5, seed=12))


def test_families_splits_and_seeds():
    config = SynthConfig(clips=30, seconds=1.0, families=("v2s", "mix"))
    assert [clip_family(config, i) for i in range(4)] == ["v2s", "mix", "v2s", "mix"]
    splits = [clip_split(i) for i in range(100)]
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (80, 10, 10)
    a = render_clip(SynthConfig(clips=3, seconds=1.0, seed=1), 2)
    b = render_clip(SynthConfig(clips=50, seconds=1.0, seed=1), 2)  # the set's size does not matter
    c = render_clip(SynthConfig(clips=3, seconds=1.0, seed=2), 2)
    assert np.array_equal(a[1], b[1]) and not np.array_equal(a[1], c[1])
    frames, wav, _ = a
    assert frames.shape == (25, 96, 96, 3) and frames.dtype == np.uint8 and wav.shape == (16000,)
    with pytest.raises(VssflowError, match="unknown families"):
        SynthConfig(clips=3, families=("v2s", "music"))


def test_cli_synth(tmp_path):
    out = tmp_path / "set"
    result = run_cli("data", "synth", "--out", str(out), "--clips", "4", "--seconds", "1", "--seed", "5",
                     "--families", "v2s,visualtts", "--size", "64", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "4 clips of 1 s; v2s: 2, visualtts: 2" in result.stdout
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["task"] for r in records] == ["v2s", "visualtts", "v2s", "visualtts"]
    assert (out / "train.jsonl").read_text().count("\n") == 4 and (out / "val.jsonl").read_text() == ""
    info = media.probe(out / records[1]["video"])
    assert (info.width, info.fps, info.num_frames) == (64, 25.0, 25)
    assert media.probe(out / records[1]["audio"]).sample_rate == 16000
    assert (out / records[1]["speaker"]).is_file()
    shutil.rmtree(out / "speakers")
    bad = run_cli("data", "synth", "--out", str(out), "--clips", "5", "--seconds", "1", "--no-progress")
    assert bad.returncode == 2 and "already holds a synthetic set" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_cli("data", "synth", "--out", str(tmp_path / "x"), "--families", "v2s,noise")
    assert bad.returncode == 2 and "unknown families" in bad.stderr


def test_talking_clips_can_hold_several_sentences_one_per_part(tmp_path):
    from vssflow.plugins.datasets.synth import SynthConfig, render_clip

    config = SynthConfig(clips=1, seconds=9.0, families=("visualtts",), size=48, sentences=3)
    frames, wav, labels = render_clip(config, 0)
    assert frames.shape[0] == 225 and wav.shape == (9 * 16000,)
    parts = [[w for w in labels["words"] if k * 3.0 <= w["start"] < (k + 1) * 3.0] for k in range(3)]
    assert all(parts) and sum(len(p) for p in parts) == len(labels["words"]) == len(labels["transcript"].split())
    assert labels["speech"][0] == labels["phonemes"][0]["start"] and labels["speech"][1] == labels["phonemes"][-1]["end"]
    words = {p["word"] for p in labels["phonemes"]}
    assert max(words) == len(labels["transcript"].split()) - 1  # phonemes index the words of the whole talk
    assert "sentences" not in SynthConfig(clips=1).as_dict()  # older sets keep their config
