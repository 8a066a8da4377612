"""Manifest builders for the public data set layouts: VGGSound, LRS2/LRS3, GRID and Chem (Lip2Wav).

Each builder scans a folder of one layout and returns the ClipRecords it found plus what it skipped;
`build_manifest(layout, root, out)` writes them as a manifest (`vssflow data manifest --layout`).
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vssflow.core.manifest import VIDEO_SUFFIXES, ClipRecord, ManifestError, write_manifest


@dataclass
class BuildReport:
    """What a builder found: records, and how many candidates it skipped and why."""

    records: list[ClipRecord]
    skipped: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        """One line: clips by task and skips by reason."""
        tasks = Counter(r.task for r in self.records)
        text = f"{len(self.records)} clips (" + ", ".join(f"{k}: {v}" for k, v in sorted(tasks.items())) + ")"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{v} {k}" for k, v in sorted(self.skipped.items()))
        return text


def _find_video(folder: Path, stem: str) -> Path | None:
    for suffix in VIDEO_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def build_vggsound(root: str | os.PathLike) -> BuildReport:
    """VGGSound: ROOT/vggsound.csv (youtube_id, start_seconds, label, split) + ROOT/video/<id>_<start:06d>.mp4."""
    root = Path(root)
    csv_path = next((p for p in (root / "vggsound.csv", *sorted(root.glob("*.csv"))) if p.is_file()), None)
    if csv_path is None:
        raise ManifestError(f"{root}: no vggsound.csv (expected ROOT/vggsound.csv and ROOT/video/)")
    video_dir = next((d for d in (root / "video", root / "videos", root) if d.is_dir()), root)
    report = BuildReport([])
    with open(csv_path, newline="", encoding="utf-8") as f:
        for number, row in enumerate(csv.reader(f), 1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) < 4:
                raise ManifestError(f"{csv_path} line {number}: expected youtube_id,start_seconds,label,split")
            ytid, start, label, split = (c.strip() for c in row[:4])
            try:
                start_s = int(float(start))
            except ValueError:
                if number == 1:
                    continue  # a header row
                raise ManifestError(f"{csv_path} line {number}: start_seconds {start!r} is not a number") from None
            video = None
            for stem in (f"{ytid}_{start_s:06d}", f"{ytid}_{start_s}", f"{ytid}_{start_s * 1000}_{(start_s + 10) * 1000}",
                         ytid):
                video = _find_video(video_dir, stem)
                if video is not None:
                    break
            if video is None:
                report.skipped["missing videos"] += 1
                continue
            report.records.append(ClipRecord(
                id=f"vggsound-{ytid}-{start_s:06d}", task="v2s", video=video, split=_split_name(split),
                meta={"label": label, "dataset": "vggsound"},
            ))
    return report


def _split_name(split: str) -> str:
    split = split.lower()
    return {"trainval": "train", "validation": "val", "dev": "val"}.get(split, split)


_LRS_TEXT = re.compile(r"^Text:\s*(.*)$", re.MULTILINE)


def _read_lrs_txt(path: Path) -> tuple[str, list[list[Any]]]:
    """Transcript and word timings [[word, start, end], ...] of an LRS2/LRS3 .txt file."""
    text = path.read_text(encoding="utf-8", errors="replace")
    match = _LRS_TEXT.search(text)
    if match is None:
        raise ManifestError(f"{path}: no 'Text:' line (LRS transcript files start with 'Text:  ...')")
    words: list[list[Any]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().upper().startswith("WORD START END"):
            for row in lines[i + 1 :]:
                parts = row.split()
                if len(parts) >= 3:
                    try:
                        words.append([parts[0].lower(), float(parts[1]), float(parts[2])])
                    except ValueError:
                        break
            break
    return " ".join(match.group(1).split()).lower(), words


def build_lrs(root: str | os.PathLike) -> BuildReport:
    """LRS2/LRS3: ROOT/{main,pretrain,trainval,test}/<speaker or video id>/<utt>.mp4 + <utt>.txt ("Text:  ...")."""
    root = Path(root)
    subsets = [d for d in ("main", "pretrain", "trainval", "test", "short-pretrain") if (root / d).is_dir()]
    if not subsets:
        raise ManifestError(f"{root}: none of main/, pretrain/, trainval/, test/ found (LRS2/LRS3 layout)")
    lists = _lrs2_split_lists(root)
    report = BuildReport([])
    for subset in subsets:
        for video in sorted((root / subset).glob("*/*.mp4")):
            txt = video.with_suffix(".txt")
            if not txt.is_file():
                report.skipped["videos without .txt"] += 1
                continue
            transcript, words = _read_lrs_txt(txt)
            if not transcript:
                report.skipped["empty transcripts"] += 1
                continue
            key = f"{video.parent.name}/{video.stem}"
            split = lists.get(key) or {"main": "train", "trainval": "train", "short-pretrain": "pretrain"}.get(
                subset, subset)
            speech = (words[0][1], words[-1][2]) if words else None
            report.records.append(ClipRecord(
                id=f"lrs-{subset}-{video.parent.name}-{video.stem}", task="visualtts", video=video,
                transcript=transcript, split=split, speech=speech,
                meta={"dataset": "lrs", "subset": subset, "speaker_group": video.parent.name,
                      **({"words": words} if words else {})},
            ))
    return report


def _lrs2_split_lists(root: Path) -> dict[str, str]:
    """LRS2's train.txt / val.txt / test.txt (lines "<folder>/<utt>[ NF|MV]") -> {key: split}."""
    out: dict[str, str] = {}
    for split in ("train", "val", "test"):
        path = root / f"{split}.txt"
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    out[line.split()[0]] = split
    return out


_GRID_UNIT = 25000.0  # GRID .align times are in 1/25000 s


def _read_align(path: Path) -> tuple[str, tuple[float, float] | None, list[list[Any]]]:
    words: list[list[Any]] = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        start, end, word = int(parts[0]) / _GRID_UNIT, int(parts[1]) / _GRID_UNIT, parts[2].lower()
        if word not in ("sil", "sp"):
            words.append([word, round(start, 4), round(end, 4)])
    if not words:
        raise ManifestError(f"{path}: no words (GRID .align lines are 'START END WORD')")
    return " ".join(w[0] for w in words), (words[0][1], words[-1][2]), words


def build_grid(root: str | os.PathLike) -> BuildReport:
    """GRID: ROOT/s<N>/**/<utt>.mpg|.mp4 + alignments ROOT/alignments/s<N>/<utt>.align (or s<N>/align/).

    Optional separate audio: ROOT/audio/s<N>/<utt>.wav (else the video's own track).
    """
    root = Path(root)
    speakers = sorted((d for d in root.iterdir() if d.is_dir() and re.fullmatch(r"s\d+", d.name)),
                      key=lambda d: int(d.name[1:]))
    if not speakers:
        raise ManifestError(f"{root}: no speaker folders s1/, s2/, ... (GRID layout)")
    report = BuildReport([])
    for spk in speakers:
        videos = sorted(p for p in spk.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        for video in videos:
            align = None
            for candidate in (root / "alignments" / spk.name / f"{video.stem}.align",
                              root / "align" / spk.name / f"{video.stem}.align",
                              spk / "align" / f"{video.stem}.align", video.with_suffix(".align")):
                if candidate.is_file():
                    align = candidate
                    break
            if align is None:
                report.skipped["videos without .align"] += 1
                continue
            transcript, speech, words = _read_align(align)
            audio = root / "audio" / spk.name / f"{video.stem}.wav"
            report.records.append(ClipRecord(
                id=f"grid-{spk.name}-{video.stem}", task="visualtts", video=video,
                audio=audio if audio.is_file() else None, transcript=transcript, speech=speech,
                meta={"dataset": "grid", "speaker_id": spk.name, "words": words},
            ))
    return report


def build_chem(root: str | os.PathLike) -> BuildReport:
    """Chem (Lip2Wav chemistry lectures): ROOT/intervals/<video_id>/<clip>.mp4 + <clip>.txt transcript.

    Lip2Wav ships no transcripts; put one plain-text <clip>.txt (e.g. from an ASR model) next to each clip.
    Splits from ROOT/{train,val,test}.txt (lines "<video_id>/<clip>") when present.
    """
    root = Path(root)
    clips_dir = root / "intervals" if (root / "intervals").is_dir() else root
    splits: dict[str, str] = {}
    for split in ("train", "val", "test"):
        path = root / f"{split}.txt"
        if path.is_file():
            splits.update({line.strip(): split for line in path.read_text().splitlines() if line.strip()})
    report = BuildReport([])
    videos = sorted(clips_dir.glob("*/*.mp4"))
    if not videos:
        raise ManifestError(f"{root}: no intervals/<video_id>/<clip>.mp4 files (Chem / Lip2Wav layout)")
    for video in videos:
        txt = video.with_suffix(".txt")
        if not txt.is_file():
            report.skipped["clips without .txt transcript"] += 1
            continue
        transcript = " ".join(txt.read_text(encoding="utf-8", errors="replace").split()).lower()
        if not transcript:
            report.skipped["empty transcripts"] += 1
            continue
        key = f"{video.parent.name}/{video.stem}"
        report.records.append(ClipRecord(
            id=f"chem-{video.parent.name}-{video.stem}", task="visualtts", video=video, transcript=transcript,
            split=splits.get(key), meta={"dataset": "chem", "speaker_id": "chem"},
        ))
    return report


def build_folder(root: str | os.PathLike, segment: float | None = None, val_every: int = 10) -> BuildReport:
    """Any folder of videos with their own sound (a user's footage): every video file under ROOT, at any
    depth, becomes a V2S clip whose audio is the video's own track.

    id: the path under ROOT without its suffix, folders joined by `-`. A `<name>.json` beside a video is its
    labels file (e.g. {"class": "door knock"}, read by `vssflow evaluate`). Split: a video under a
    top-level `train/`, `val/` or `test/` folder takes that split; otherwise every `val_every`-th video (in
    path order) is `val` and the rest `train` (val_every 0: all `train`). `segment` cuts each video into
    consecutive windows of that many seconds (the last one kept when at least half a window), so a long
    recording gives many training clips. Videos without an audio track, or that cannot be read, are skipped.
    """
    from vssflow.core.errors import MediaError
    from vssflow.core.media import probe

    if segment is not None and segment <= 0:
        raise ManifestError(f"--segment must be a positive number of seconds, got {segment}")
    if val_every < 0:
        raise ManifestError(f"--val-every must be >= 0, got {val_every}")
    root = Path(root)
    report = BuildReport([])
    videos = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(root).parts))
    seen: set[str] = set()
    for number, video in enumerate(videos):
        rel = video.relative_to(root)
        clip_id = "-".join((*rel.parts[:-1], video.stem))
        if clip_id in seen:
            report.skipped["videos whose name another video already has"] += 1
            continue
        try:
            info = probe(video)
        except MediaError:
            report.skipped["unreadable videos"] += 1
            continue
        if not info.has_audio:
            report.skipped["videos without an audio track"] += 1
            continue
        if not info.has_video or info.duration_s <= 0:
            report.skipped["files without a video stream"] += 1
            continue
        seen.add(clip_id)
        top = rel.parts[0] if len(rel.parts) > 1 else ""
        split = top if top in ("train", "val", "test") else (
            "val" if val_every and number % val_every == val_every - 1 else "train")
        labels = video.with_suffix(".json")
        common = dict(task="v2s", video=video, labels=labels if labels.is_file() else None, split=split,
                      meta={"dataset": "folder", "source": rel.as_posix()})
        if not segment:
            report.records.append(ClipRecord(id=clip_id, duration=round(info.duration_s, 4), **common))
            continue
        start, k = 0.0, 0
        while info.duration_s - start >= segment / 2:
            end = min(start + segment, info.duration_s)
            report.records.append(ClipRecord(id=f"{clip_id}-{k:03d}", start=round(start, 4), end=round(end, 4),
                                             **common))
            start, k = start + segment, k + 1
    return report


LAYOUTS: dict[str, Callable[..., BuildReport]] = {
    "vggsound": build_vggsound,
    "lrs": build_lrs,
    "grid": build_grid,
    "chem": build_chem,
    "folder": build_folder,
}


def build_manifest(layout: str, root: str | os.PathLike, out: str | os.PathLike, **options: Any) -> BuildReport:
    """Scan a dataset folder of a known layout and write its manifest; the report says what was skipped.
    `options` go to the layout's builder (the `folder` layout's segment and val_every)."""
    if layout not in LAYOUTS:
        raise ManifestError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: not a directory")
    report = LAYOUTS[layout](root, **options)
    if not report.records:
        raise ManifestError(f"{root}: no clips found for layout {layout!r} ({report.summary()})")
    write_manifest(out, report.records)
    return report
