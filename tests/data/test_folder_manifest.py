"""`vssflow data manifest ROOT` on a plain folder of the user's videos (the `folder` layout)."""

from __future__ import annotations

import json
from fractions import Fraction

from tests.conftest import run_cli
from tests.data.conftest import write_test_video
from vssflow.plugins.datasets.layouts import build_folder


def _frames(seconds: float) -> list[float]:
    return [i / 25 for i in range(int(seconds * 25))]


def test_folder_of_videos_becomes_v2s_clips(tmp_path):
    root = tmp_path / "mine"
    (root / "kitchen").mkdir(parents=True)
    (root / ".cache").mkdir()
    for i in range(3):
        write_test_video(root / f"clip{i}.mp4", _frames(1.0), rate=Fraction(25), audio_seconds=1.0)
    write_test_video(root / "kitchen" / "knock.mp4", _frames(2.0), rate=Fraction(25), audio_seconds=2.0)
    (root / "kitchen" / "knock.json").write_text('{"class": "knock"}')
    write_test_video(root / "silent.mp4", _frames(1.0), rate=Fraction(25))  # no audio track: skipped
    write_test_video(root / ".cache" / "hidden.mp4", _frames(1.0), rate=Fraction(25), audio_seconds=1.0)
    (root / "notes.txt").write_text("not a video")

    report = build_folder(root, val_every=2)
    ids = [r.id for r in report.records]
    assert ids == ["clip0", "clip1", "clip2", "kitchen-knock"]
    assert report.skipped == {"videos without an audio track": 1}
    assert all(r.task == "v2s" and r.audio is None and r.audio_path == r.video for r in report.records)
    assert [r.split for r in report.records] == ["train", "val", "train", "val"]
    knock = report.records[-1]
    assert knock.labels == root / "kitchen" / "knock.json" and abs(knock.duration - 2.0) < 0.1

    cut = build_folder(root, segment=0.7, val_every=0)
    knock = [r for r in cut.records if r.id.startswith("kitchen-knock")]
    assert [(r.start, r.end) for r in knock] == [(0.0, 0.7), (0.7, 1.4), (1.4, knock[-1].end)]
    assert abs(knock[-1].end - 2.0) < 0.1 and {r.split for r in cut.records} == {"train"}


def test_cli_builds_a_manifest_from_a_folder_by_default(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    write_test_video(root / "a.mp4", _frames(1.0), rate=Fraction(25), audio_seconds=1.0)
    out = tmp_path / "m.jsonl"
    result = run_cli("data", "manifest", str(root), "--out", str(out))
    assert result.returncode == 0, result.stderr
    line = json.loads(out.read_text())
    assert line["id"] == "a" and line["task"] == "v2s" and line["video"] == "mine/a.mp4"
    assert run_cli("data", "check", str(out), "--probe").returncode == 0
    bad = run_cli("data", "manifest", str(root), "--layout", "grid", "--segment", "4", "--out", str(out))
    assert bad.returncode == 2 and "--segment goes with --layout folder" in bad.stderr
