"""Long VisualTTS: a transcript longer than one window is split at word boundaries by visible mouth activity."""

from __future__ import annotations

import json

import pytest
import torch

from vssflow.continuation import owned_regions, speaking, split_transcript, word_times
from vssflow.generation import ClipRequest


def test_words_take_time_in_proportion_to_their_phonemes_over_the_speaking_frames():
    activity = torch.zeros(100)  # 4 s at 25 fps: speech in [0.4, 1.2) and [2.8, 3.6)
    activity[10:30], activity[70:90] = 1.0, 1.0
    times = word_times(["a", "b", "c", "d"], [1, 1, 1, 1], activity, 25.0)
    centres = [(s + e) / 2 for s, e in times]
    assert centres == pytest.approx([0.6, 1.0, 3.0, 3.4], abs=0.02)
    times = word_times(["long", "x"], [3, 1], activity, 25.0, span=(2.0, 4.0))  # speech only in the span
    assert times[0][0] == pytest.approx(2.8, abs=0.02) and times[1][1] == pytest.approx(3.6, abs=0.02)


def test_speaking_frames_ignore_small_motion_and_bridge_short_stills():
    activity = torch.full((100,), 0.01)  # a head that sways a little
    activity[20:60:2] = 0.2  # a mouth that opens and closes every other frame
    mask = speaking(activity, 25.0)
    assert mask[22:58].all() and not mask[:15].any() and not mask[65:].any()


@pytest.fixture(scope="module")
def talk(tmp_path_factory):
    """A synthetic talking face 12 s long with three sentences, one in each third."""
    from vssflow.plugins.datasets.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("talk")
    generate(root, SynthConfig(clips=1, seconds=12.0, families=("visualtts",), size=48, sentences=3))
    rec = json.loads((root / "manifest.jsonl").read_text().splitlines()[0])
    return root / rec["video"], rec["transcript"], json.loads((root / rec["labels"]).read_text())


def test_a_long_transcript_is_split_where_the_mouth_moves(talk):
    from vssflow.generation import Pipeline
    from vssflow.registry.recipe import load_recipe

    video, transcript, labels = talk
    assert len(transcript.split()) == len(labels["words"]) >= 9
    pipe = Pipeline.untrained(load_recipe("visualtts-tiny"), device="cpu")
    request = ClipRequest(video, transcript)
    assert pipe.check(request) == pytest.approx(12.0)  # longer than a window: accepted, split per window
    windows = [(0.0, 4.0), (4.0, 8.0), (8.0, 12.0)]
    parts = split_transcript(pipe, request, windows)
    assert " ".join(p.transcript for p in parts if p.transcript) == transcript  # every word once, in order
    true = [sum(1 for w in labels["words"] if a <= (w["start"] + w["end"]) / 2 < b) for a, b in windows]
    got = [len(p.transcript.split()) if p.transcript else 0 for p in parts]
    assert sum(abs(x - y) for x, y in zip(got, true, strict=True)) <= 2, (got, true)
    for part, (a, b) in zip(parts, windows, strict=True):
        if part.transcript:
            assert a <= part.span[0] < part.span[1] <= b
    timed = ClipRequest(video, transcript, meta={"word_times": [[w, s, s + 0.1] for w, s in
                                                                zip(transcript.split(), [1.0] * 3 + [5.0] * 100, strict=False)]})
    parts = split_transcript(pipe, timed, windows)  # given word timings win over the video
    assert len(parts[0].transcript.split()) == 3 and parts[2].transcript is None


def test_crossfade_windows_own_the_halves_of_their_overlaps():
    assert owned_regions([(0.0, 4.0), (3.0, 7.0), (6.0, 10.0)], 10.0) == [(0.0, 3.5), (3.5, 6.5), (6.5, 11.0)]
