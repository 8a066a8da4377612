"""ClipDataset samples, collate, audio padding, the dataset components, and the feature cache."""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap

import numpy as np
import pytest
import torch

from tests.conftest import run_cli
from tests.data.conftest import TINY_ENCODER_SOURCE
from vssflow.core.data import ClipDataset, collate, load_features
from vssflow.core.errors import MediaError
from vssflow.core.interfaces import InputContract
from vssflow.core.manifest import read_manifest
from vssflow.core.phonemes import PhonemeTokenizer
from vssflow.core.sequence import SequenceSpec

CONDITIONS = {
    "video": ("video", InputContract("video", fps=10.0, size=(32, 32))),
    "lips": InputContract("video", fps=25.0, size=(24, 24)),
    "transcript": ("transcript", InputContract("transcript", fps=25.0)),
    "speaker": ("speaker", InputContract("speaker", sample_rate=8000)),
}


@pytest.fixture(scope="module")
def records(synth_root):
    return read_manifest(synth_root / "manifest.jsonl")


@pytest.fixture(scope="module")
def dataset(records):
    return ClipDataset(records, CONDITIONS, SequenceSpec(16000, 160, 4.0), tokenizer=PhonemeTokenizer(),
                       phoneme_times=True)


def test_sample_format(dataset, records):
    v2s = dataset[0]
    tts = dataset[1]
    assert (v2s["id"], v2s["task"], tts["task"]) == (records[0].id, "v2s", "visualtts")
    assert v2s["wav"].shape == (64000,) and v2s["wav"].dtype == torch.float32
    assert v2s["wav_length"] == 48000 and v2s["wav"][48000:].abs().max() == 0  # 3 s clip padded to 4 s
    assert set(v2s["conditions"]) == {"video", "lips"}  # a v2s clip has no transcript and no voice
    assert v2s["conditions"]["video"]["x"].shape == (30, 3, 32, 32)  # 3 s at 10 fps
    assert tts["conditions"]["lips"]["x"].shape == (75, 3, 24, 24)
    assert set(tts["conditions"]) == {"video", "lips", "transcript", "speaker"}
    text = tts["conditions"]["transcript"]
    assert text["x"].dtype == torch.long and text["x"].tolist() == dataset.tokenizer.encode(records[1].transcript)
    assert torch.allclose(text["span"], torch.tensor(records[1].speech, dtype=torch.float32))
    assert text["times"].shape == (len(text["x"]), 2) and text["times"][0, 0] == pytest.approx(records[1].speech[0], abs=1e-3)
    assert tts["conditions"]["speaker"]["x"].dim() == 1  # the reference utterance at 8 kHz
    assert tts["labels"]["phonemes"] and tts["labels"]["window"] == [0.0, 3.0]


def test_window_crops_and_times_follow_it(records):
    spec = SequenceSpec(16000, 160, 1.0)
    ds = ClipDataset(records, {"transcript": CONDITIONS["transcript"][1]}, spec, phoneme_times=True, crop="random",
                     seed=3)
    v2s = ds[0]
    assert v2s["wav"].shape == (16000,) and v2s["wav_length"] == 16000
    starts = {ds[(0, epoch)]["labels"]["window"][0] for epoch in range(4)}
    assert len(starts) == 4 and all(0.0 <= s <= 2.0 for s in starts)  # v2s clips crop anywhere, per epoch
    assert ds[(0, 2)]["labels"]["window"] == ds[(0, 2)]["labels"]["window"]  # ...deterministically
    tts = ds[(1, 5)]
    assert tts["labels"]["window"][0] == 0.0  # a transcript covers the utterance: speech clips start at 0
    span = tts["conditions"]["transcript"]["span"]
    assert 0.0 <= span[0] <= span[1] <= 1.0
    center = ds.configure(crop="center")[0]
    assert center["labels"]["window"][0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="crop"):
        ClipDataset(records, crop="middle")


def test_uniform_times_when_labels_have_none(records):
    rec = records[1]
    no_labels = ClipDataset([rec], {"transcript": CONDITIONS["transcript"][1]}, SequenceSpec(16000, 160, 4.0),
                            phoneme_times=True, load_labels=False)
    times = no_labels[0]["conditions"]["transcript"]["times"]
    s0, s1 = rec.speech
    assert times[0, 0] == pytest.approx(s0, abs=1e-4) and times[-1, 1] == pytest.approx(s1, abs=1e-4)
    widths = times[:, 1] - times[:, 0]
    assert torch.allclose(widths, widths.mean().expand_as(widths), atol=1e-5)


def test_collate_pads_masks_and_flags(dataset):
    samples = [dataset[i] for i in range(4)]
    batch = dataset.collate(samples)
    assert batch["ids"] == [s["id"] for s in samples] and batch["tasks"][:2] == ["v2s", "visualtts"]
    assert batch["wav"].shape == (4, 64000) and batch["wav_lengths"].tolist() == [48000] * 4
    text = batch["conditions"]["transcript"]
    assert text["present"].tolist() == [s["task"] == "visualtts" for s in samples]
    lengths = [len(s["conditions"]["transcript"]["x"]) if "transcript" in s["conditions"] else 0 for s in samples]
    assert text["x"].shape == (4, max(lengths)) and text["mask"].sum(1).tolist() == lengths
    assert (text["x"][~text["mask"]] == 0).all()  # padding id 0
    assert text["times"].shape == (4, max(lengths), 2) and text["span"].shape == (4, 2)
    video = batch["conditions"]["video"]
    assert video["x"].shape == (4, 30, 3, 32, 32) and video["mask"].all() and video["present"].all()
    only_v2s = dataset.collate([samples[0], samples[3]])
    assert only_v2s["conditions"]["speaker"]["present"].tolist() == [False, False]  # filled from the contract
    assert "speaker" not in collate([samples[0], samples[3]])["conditions"]
    with pytest.raises(ValueError):
        collate([])


def test_features_modality_and_errors(records, tmp_path):
    import dataclasses

    np.save(tmp_path / "f.npy", np.arange(40, dtype=np.float32).reshape(20, 2))
    rec = dataclasses.replace(records[0], features={"pre": tmp_path / "f.npy"}, start=0.5)
    ds = ClipDataset([rec], {"pre": InputContract("features", fps=5.0, dim=2)}, SequenceSpec(16000, 160, 1.0))
    x = ds[0]["conditions"]["pre"]["x"]
    assert x.shape == (5, 2) and x[0].tolist() == [0.0, 1.0]  # features start at the clip start
    (tmp_path / "bad.npy").write_bytes(b"nonsense")
    with pytest.raises(MediaError, match="bad.npy: cannot read features"):
        load_features(tmp_path / "bad.npy")
    broken = dataclasses.replace(records[0], audio=tmp_path / "missing.wav")
    with pytest.raises(MediaError, match=rf"clip '{records[0].id}' .*missing.wav: cannot read audio: file not found"):
        ClipDataset([broken], spec=SequenceSpec(16000, 160, 1.0))[0]


def test_pad_audio_longest_cuts_the_batch_to_its_longest_clip(records):
    spec = SequenceSpec(16000, 160, 4.0)
    short = [dataclasses.replace(r, end=r.start + sec, duration=sec)
             for r, sec in zip(records[:3], (1.0, 2.345, 1.5), strict=True)]
    window = ClipDataset(short, {}, spec)
    longest = window.configure(pad_audio="longest")
    full, cut = window.collate([window[i] for i in range(3)]), longest.collate([longest[i] for i in range(3)])
    assert full["wav"].shape == (3, 64000)
    assert cut["wav"].shape == (3, 37600)  # 2.345 s = 37520 samples, rounded up to whole 160-sample frames
    assert torch.equal(cut["wav"], full["wav"][:, :37600]) and torch.equal(cut["wav_lengths"], full["wav_lengths"])
    with pytest.raises(ValueError, match="pad_audio"):
        window.configure(pad_audio="batch")


def test_dataloader_with_workers_matches_in_process(dataset):
    from torch.utils.data import DataLoader

    ds = dataset.configure(conditions={"transcript": CONDITIONS["transcript"]})
    keys = [[(5, 1), (0, 0), (3, 2)], [(1, 0), (4, 1)]]  # (index, epoch), as the trainer's plan gives them
    loaded = [b["ids"] for b in DataLoader(ds, batch_sampler=keys, num_workers=2, collate_fn=ds.collate)]
    assert loaded == [[ds.records[i].id for i, _ in batch] for batch in keys]
    in_process = ds.collate([ds[k] for k in keys[0]])
    workers = next(iter(DataLoader(ds, batch_sampler=keys[:1], num_workers=2, collate_fn=ds.collate)))
    assert torch.equal(workers["wav"], in_process["wav"])


def test_dataset_components_pass_conformance_and_serve_clips(tmp_path):
    from vssflow.registry import create
    from vssflow.testing import check_component

    for name in ("synthetic-av", "manifest"):
        assert check_component("dataset", name).checks[-2:] == ["length", "sample"]
    ds = create("dataset", "synthetic-av", root=str(tmp_path / "s"), clips=10, seconds=1.0, split="train",
                families=["v2s", "visualtts"])
    assert len(ds) == 8 and not (tmp_path / "s").exists()  # known before generating
    assert ds.tasks() == ["v2s", "visualtts"] * 4
    bound = ds.configure(conditions={"transcript": CONDITIONS["transcript"]}, spec=SequenceSpec(16000, 160, 1.0))
    sample = bound[1]
    assert sample["wav"].shape == (16000,) and "transcript" in sample["conditions"]
    assert [r.id for r in bound.records] == [r.id for r in ds.records]
    val = create("dataset", "manifest", path=str(tmp_path / "s" / "manifest.jsonl"), split="val")
    assert [r.id for r in val.records] == ["v2s-000008"] and val[0]["wav"].shape == (160000,)


def _recipe(path, cache=None):
    data = f"data: {{name: manifest, params: {{path: x.jsonl}}, features_cache: {cache}}}\n" if cache else ""
    path.write_text(textwrap.dedent("""\
        name: cache-test
        task: unified
        conditions:
          colour: {encoder: {name: test-mean-colour, params: {fps: 5.0}}, aggregator: {name: cross-attn}}
        backbone: {name: dit}
        """) + data)
    return path


def test_feature_cache_extract_resume_and_use(synth_root, tmp_path, plugin_dist):
    site = plugin_dist("vssflow-test-encoders", "vssflow_test_encoders", TINY_ENCODER_SOURCE)
    recipe = _recipe(tmp_path / "r.yaml")
    manifest = synth_root / "manifest.jsonl"
    out = tmp_path / "cache"
    args = ("features", "extract", str(recipe), "--manifest", str(manifest), "--out", str(out), "--workers", "2",
            "--no-progress")
    result = run_cli(*args, pythonpath=site)
    assert result.returncode == 0, result.stderr
    assert "9 written, 0 cached" in result.stdout
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    config = json.loads((folder / "config.json").read_text())
    assert folder.name.startswith("test-mean-colour-") and config["params"] == {"fps": 5.0, "size": 16}
    assert config["distribution"] == "vssflow-test-encoders" and config["version"] == "0.3.1"
    again = run_cli(*args, pythonpath=site)
    assert "0 written, 9 cached" in again.stdout  # resumable: finished clips are skipped
    from vssflow.core.feature_cache import read_feature_file

    x, meta = read_feature_file(folder / "v2s-000000.safetensors")
    assert x.shape == (15, 3) and meta["fps"] == 5.0  # 3 s at 5 fps, mean colour per frame
    records = read_manifest(manifest)
    ds = ClipDataset(records, {"colour": InputContract("video", fps=5.0, size=(16, 16))}, SequenceSpec(16000, 160, 2.0),
                     features={"colour": folder})
    sample = ds[0]["conditions"]["colour"]
    assert sample["encoded"] is True and sample["x"].shape == (10, 3)  # cropped to the 2 s window
    assert torch.allclose(sample["x"], x[:10])
    batch = ds.collate([ds[0], ds[1]])
    assert batch["conditions"]["colour"]["encoded"] is True and batch["conditions"]["colour"]["x"].shape == (2, 10, 3)
    other = _recipe(tmp_path / "r2.yaml")
    other.write_text(other.read_text().replace("fps: 5.0", "fps: 2.0"))
    run_cli("features", "extract", str(other), "--manifest", str(manifest), "--out", str(out), "--no-progress",
            pythonpath=site)
    assert len([p for p in out.iterdir() if p.is_dir()]) == 2  # another config, another folder
    with pytest.raises(MediaError, match="no cached features for condition 'colour'"):
        ClipDataset(records, {"colour": InputContract("video", fps=5.0)}, SequenceSpec(16000, 160, 2.0),
                    features={"colour": tmp_path / "empty"})[0]


def test_feature_cache_keys(tmp_path):
    from vssflow.core.feature_cache import cache_dir, encoder_key, feature_path, write_feature_file

    a = cache_dir(tmp_path, "clip", {"fps": 10, "size": 224}, "vssflow", "0.1.0")
    assert a == cache_dir(tmp_path, "clip", {"size": 224, "fps": 10}, "vssflow", "0.1.0")  # order-free
    assert a != cache_dir(tmp_path, "clip", {"fps": 10, "size": 224}, "vssflow", "0.2.0")  # version matters
    assert len(encoder_key({"a": 1})) == 16
    path = write_feature_file(feature_path(a, "c1"), torch.ones(4, 2), 25.0)
    assert path.parent == a and [p.name for p in a.iterdir()] == ["c1.safetensors"]
    with pytest.raises(ValueError):
        write_feature_file(feature_path(a, "c2"), torch.ones(4), 25.0)
    assert not feature_path(a, "c2").exists()


def test_cli_help_is_light():
    result = run_cli("features", "extract", "--help")
    assert result.returncode == 0 and "--manifest" in result.stdout
    code = "import sys, vssflow.cli.data, vssflow.cli.features; print('torch' in sys.modules, 'av' in sys.modules)"
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False False"


def test_window_math_uses_sequence_spec(records):
    spec = SequenceSpec(16000, 256, 1.01)  # a window that is not a whole number of hops
    sample = ClipDataset(records[:1], spec=spec)[0]
    assert sample["wav"].shape == (spec.num_samples,) and spec.num_samples == math.ceil(1.01 * 16000 / 256) * 256
