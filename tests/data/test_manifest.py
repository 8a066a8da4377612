"""Manifests: parsing, validation naming line and field, checking all problems, layout builders, CLI."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import run_cli
from tests.data.conftest import write_test_video
from vssflow.core.manifest import ManifestError, check_manifest, read_manifest, write_manifest
from vssflow.plugins.datasets.layouts import build_chem, build_grid, build_lrs, build_manifest, build_vggsound


@pytest.fixture
def media_dir(tmp_path):
    """clips/a.mp4 (with audio), clips/a.wav, spk.wav next to a manifest folder."""
    clips = tmp_path / "clips"
    clips.mkdir()
    write_test_video(clips / "a.mp4", [i / 25 for i in range(25)], rate=Fraction(25), audio_seconds=1.0)
    sf.write(str(clips / "a.wav"), np.zeros(16000, np.float32), 16000)
    sf.write(str(tmp_path / "spk.wav"), np.zeros(8000, np.float32), 16000)
    return tmp_path


def _good_lines(n=8):
    lines = [{"id": f"c{i}", "task": "v2s", "video": "clips/a.mp4", "audio": "clips/a.wav", "split": "train"}
             for i in range(n)]
    lines[1] = {"id": "t1", "task": "visualtts", "video": "clips/a.mp4", "transcript": "bin blue at f two now",
                "speaker": "spk.wav", "start": 0.1, "end": 0.9, "speech": [0.2, 0.8], "meta": {"x": 1}}
    return lines


def _write(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_valid_manifest_resolves_paths_relative_to_itself(media_dir):
    path = _write(media_dir / "m.jsonl", _good_lines())
    records = read_manifest(path)
    assert len(records) == 8 and records[0].video == media_dir / "clips" / "a.mp4"
    tts = records[1]
    assert (tts.task, tts.transcript, tts.speech, tts.start, tts.end) == ("visualtts", "bin blue at f two now",
                                                                            (0.2, 0.8), 0.1, 0.9)
    assert tts.audio_path == tts.video and tts.seconds == pytest.approx(0.8) and tts.where.endswith("line 2")
    assert [r.id for r in read_manifest(path, split="train")] == [f"c{i}" for i in range(8) if i != 1]
    out = write_manifest(media_dir / "sub" / "copy.jsonl", records)  # rewritten relative to the new folder
    assert json.loads(out.read_text().splitlines()[0])["video"] == "../clips/a.mp4"
    assert [r.video for r in read_manifest(out)] == [r.video.resolve() for r in records]


@pytest.mark.parametrize(
    "line7,message",
    [
        ({"id": "x", "task": "v2s", "video": "clips/missing.mp4"}, "field 'video': file not found: clips/missing.mp4"),
        ({"id": "x", "task": "v2s", "video": "clips"}, "field 'video': is a directory"),
        ({"id": "x", "task": "speech", "video": "clips/a.mp4"}, "field 'task': must be one of v2s, visualtts"),
        ({"id": "x", "task": "v2s", "video": "clips/a.mp4", "trasncript": "hi"},
         "field 'trasncript': unknown field (did you mean 'transcript'?)"),
        ({"id": "x", "task": "visualtts", "video": "clips/a.mp4"}, "field 'transcript': missing"),
        ({"id": "x", "task": "v2s", "video": "clips/a.mp4", "start": 2, "end": 1}, "field 'end': must be after"),
        ({"id": "x", "task": "v2s", "video": "clips/a.mp4", "start": "0:10"}, "field 'start': expected a number"),
        ({"task": "v2s", "video": "clips/a.mp4"}, "field 'id': missing"),
        ({"id": "c0", "task": "v2s", "video": "clips/a.mp4"}, "field 'id': duplicate id 'c0' (first on line 1)"),
        ({"id": "x", "task": "v2s", "video": 3}, "field 'video': expected a path string"),
        ({"id": "x", "task": "v2s", "video": "clips/a.mp4", "speech": [1.0]}, "field 'speech'"),
        ({"id": "x", "task": "v2s", "video": "clips/a.mp4", "features": {"clip": "f.pt"}}, "field 'features'"),
        ('{"id": "x", "task": "v2s",', "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_problems_name_the_file_line_and_field(media_dir, line7, message):
    lines = _good_lines()
    lines[6] = line7
    path = _write(media_dir / "m.jsonl", lines)
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    text = str(info.value)
    assert text.startswith(f"{path} line 7: ") and message in text and "\n" not in text


def test_check_manifest_reports_every_problem_and_probes_media(media_dir):
    lines = _good_lines()
    lines[2] = {"id": "bad1", "task": "v2s", "video": "clips/none.mp4"}
    (media_dir / "clips" / "broken.mp4").write_bytes(b"not a video at all" * 20)
    lines[4] = {"id": "bad2", "task": "v2s", "video": "clips/broken.mp4"}
    lines.append("")  # blank lines are fine
    path = _write(media_dir / "m.jsonl", lines)
    records, problems = check_manifest(path)
    assert [p.line for p in problems] == [3] and len(records) == 7
    records, problems = check_manifest(path, probe_media=True, workers=2)
    assert [p.line for p in problems] == [3, 5, 5]  # line 5: unreadable video, and so no audio either
    assert "broken.mp4: cannot read media" in problems[1].message


def test_empty_or_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ManifestError, match="no clips"):
        read_manifest(tmp_path / "empty.jsonl")


def _touch_video(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0")  # builders only look at names: the media is checked by `data check --probe`
    return path


def test_build_vggsound(tmp_path):
    (tmp_path / "vggsound.csv").write_text("yt_A,30,dog barking,train\nyt_B,0,rain,test\nyt_C,5,wind,train\n")
    _touch_video(tmp_path / "video" / "yt_A_000030.mp4")
    _touch_video(tmp_path / "video" / "yt_B_000000.mp4")
    report = build_vggsound(tmp_path)
    assert [(r.id, r.task, r.split, r.meta["label"]) for r in report.records] == [
        ("vggsound-yt_A-000030", "v2s", "train", "dog barking"), ("vggsound-yt_B-000000", "v2s", "test", "rain")]
    assert report.skipped["missing videos"] == 1 and "skipped 1 missing videos" in report.summary()


def test_build_lrs(tmp_path):
    _touch_video(tmp_path / "main" / "5535415699068794046" / "00001.mp4")
    (tmp_path / "main" / "5535415699068794046" / "00001.txt").write_text("Text:  THE BIRDS ARE BACK\nConf:  4\n")
    _touch_video(tmp_path / "pretrain" / "6330311066473698535" / "00011.mp4")
    (tmp_path / "pretrain" / "6330311066473698535" / "00011.txt").write_text(
        "Text:  HELLO THERE\nConf:  3\n\nWORD START END ASDSCORE\nHELLO 0.30 0.62 5.1\nTHERE 0.62 1.05 6.0\n")
    _touch_video(tmp_path / "main" / "5535415699068794046" / "00002.mp4")  # no transcript: skipped
    (tmp_path / "test.txt").write_text("5535415699068794046/00001 NF\n")
    report = build_lrs(tmp_path)
    main, pre = report.records
    assert (main.transcript, main.split, main.task) == ("the birds are back", "test", "visualtts")
    assert pre.transcript == "hello there" and pre.speech == (0.3, 1.05) and pre.split == "pretrain"
    assert pre.meta["words"][1] == ["there", 0.62, 1.05]
    assert report.skipped["videos without .txt"] == 1


def test_build_grid(tmp_path):
    _touch_video(tmp_path / "s1" / "bbaf2n.mpg")
    _touch_video(tmp_path / "s12" / "video" / "lwae8n.mpg")
    (tmp_path / "alignments" / "s1").mkdir(parents=True)
    (tmp_path / "alignments" / "s1" / "bbaf2n.align").write_text(
        "0 23750 sil\n23750 29500 bin\n29500 34000 blue\n34000 35500 at\n35500 41000 f\n41000 47250 two\n"
        "47250 53000 now\n53000 74500 sil\n")
    (tmp_path / "s12" / "align").mkdir()
    (tmp_path / "s12" / "align" / "lwae8n.align").write_text("0 1000 sil\n1000 9000 lay\n9000 12000 sp\n")
    (tmp_path / "audio" / "s1").mkdir(parents=True)
    sf.write(str(tmp_path / "audio" / "s1" / "bbaf2n.wav"), np.zeros(100, np.float32), 16000)
    report = build_grid(tmp_path)
    first, second = report.records
    assert first.transcript == "bin blue at f two now" and first.speech == (0.95, 2.12)
    assert first.audio == tmp_path / "audio" / "s1" / "bbaf2n.wav" and first.meta["speaker_id"] == "s1"
    assert second.id == "grid-s12-lwae8n" and second.audio is None and second.transcript == "lay"


def test_build_chem(tmp_path):
    _touch_video(tmp_path / "intervals" / "vid1" / "0.mp4")
    (tmp_path / "intervals" / "vid1" / "0.txt").write_text("Today we look at  benzene rings.\n")
    _touch_video(tmp_path / "intervals" / "vid1" / "1.mp4")
    (tmp_path / "val.txt").write_text("vid1/0\n")
    report = build_chem(tmp_path)
    assert [(r.id, r.transcript, r.split) for r in report.records] == [
        ("chem-vid1-0", "today we look at benzene rings.", "val")]
    assert report.skipped["clips without .txt transcript"] == 1


def test_builders_explain_a_wrong_layout(tmp_path):
    for builder, hint in [(build_vggsound, "vggsound.csv"), (build_lrs, "LRS2/LRS3"), (build_grid, "GRID"),
                          (build_chem, "Lip2Wav")]:
        with pytest.raises(ManifestError, match=hint):
            builder(tmp_path)
    with pytest.raises(ManifestError, match="unknown layout 'timit'"):
        build_manifest("timit", tmp_path, tmp_path / "m.jsonl")


def test_cli_manifest_and_check(tmp_path):
    root = tmp_path / "grid"
    (root / "s1").mkdir(parents=True)
    write_test_video(root / "s1" / "x.mp4", [i / 25 for i in range(25)], rate=Fraction(25), audio_seconds=1.0)
    (root / "s1" / "x.align").write_text("0 5000 sil\n5000 20000 bin\n20000 25000 sil\n")
    out = tmp_path / "m.jsonl"
    result = run_cli("data", "manifest", str(root), "--layout", "grid", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "1 clips (visualtts: 1)" in result.stdout and json.loads(out.read_text())["transcript"] == "bin"
    result = run_cli("data", "check", str(out), "--probe")
    assert result.returncode == 0 and "1 valid clips" in result.stdout
    lines = out.read_text().splitlines() * 6 + ['{"id": "z", "task": "v2s", "video": "nope.mp4"}']
    out.write_text("\n".join(json.dumps({**json.loads(line), "id": f"c{i}"}) if i < 6 else line
                             for i, line in enumerate(lines)) + "\n")
    result = run_cli("data", "check", str(out))
    assert result.returncode == 2
    assert "line 7: field 'video': file not found: nope.mp4" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("vssflow data: error:")
    result = run_cli("data", "manifest", str(tmp_path / "nothing"), "--layout", "lrs", "--out", str(out))
    assert result.returncode == 2 and "not a directory" in result.stderr and "Traceback" not in result.stderr
