"""Clip manifests: JSONL, one clip per line, paths relative to the manifest; validation.

A line:
    {"id": "lrs2-5535415699068794046-00001", "task": "visualtts", "video": "main/5535415699068794046/00001.mp4",
     "audio": null, "transcript": "the birds are back", "speaker": null, "start": 0.0, "end": 2.4,
     "speech": [0.31, 2.1], "labels": null, "split": "train", "duration": 2.4, "features": {}, "meta": {}}

Only `id`, `task` and `video` are required. `audio` defaults to the video's own audio track; `speaker` (a
reference wav for the speaker condition) defaults to the clip's audio; `start`/`end` (seconds in the file)
default to the whole file; `speech` is the [start, end] of speech in file seconds; `labels` a JSON file;
`features` maps a condition name to a precomputed .npy/.safetensors file; `caption` is free text describing
what is on screen and heard (for a caption condition); `meta` is free-form. Any problem
is a ManifestError naming the file, the line and the field.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import VssflowError

logger = logging.getLogger(__name__)

TASKS = ("v2s", "visualtts")
FIELDS = ("id", "task", "video", "audio", "transcript", "speaker", "start", "end", "speech", "labels", "split",
          "duration", "features", "meta", "caption")
PATH_FIELDS = ("video", "audio", "speaker", "labels")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".mpg", ".mpeg", ".m4v")


class ManifestError(VssflowError):
    """A manifest line is malformed or points at a missing file."""


@dataclass
class ClipRecord:
    """One clip of a manifest, with absolute paths."""

    id: str
    task: str
    video: Path | None
    audio: Path | None = None
    transcript: str | None = None
    speaker: Path | None = None
    start: float = 0.0
    end: float | None = None
    speech: tuple[float, float] | None = None
    labels: Path | None = None
    split: str | None = None
    duration: float | None = None
    features: dict[str, Path] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    where: str = ""  # "manifest.jsonl line 7", for error messages
    caption: str | None = None  # what is on screen and heard, for a caption condition

    @property
    def audio_path(self) -> Path | None:
        """Where the clip's audio is: `audio`, else the video's own track."""
        return self.audio if self.audio is not None else self.video

    @property
    def seconds(self) -> float | None:
        """Clip length in seconds when known (end - start, else duration)."""
        if self.end is not None:
            return self.end - self.start
        return self.duration

    def to_json(self, base: Path) -> dict[str, Any]:
        """The manifest line, paths relative to `base` (the manifest's folder)."""
        out: dict[str, Any] = {"id": self.id, "task": self.task}
        for name in PATH_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = _relative(value, base)
        for name in ("transcript", "caption", "start", "end", "split", "duration"):
            value = getattr(self, name)
            if value is not None and not (name == "start" and value == 0.0 and self.end is None):
                out[name] = value
        if self.speech is not None:
            out["speech"] = [round(float(x), 4) for x in self.speech]
        if self.features:
            out["features"] = {k: _relative(v, base) for k, v in self.features.items()}
        if self.meta:
            out["meta"] = self.meta
        return out


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:  # another drive (Windows)
        return str(path)


# ----------------------------------------------------------------------------------------------------------
# reading and validation


def _close(word: str) -> str:
    import difflib

    found = difflib.get_close_matches(word, FIELDS, n=1, cutoff=0.6)
    return f" (did you mean '{found[0]}'?)" if found else f" (known fields: {', '.join(FIELDS)})"


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"field '{name}': expected a number of seconds, got {value!r}")
    if value < 0:
        raise ValueError(f"field '{name}': must be >= 0, got {value}")
    return float(value)


def parse_line(data: Any, base: Path, check_files: bool = True) -> ClipRecord:
    """One decoded JSON line -> ClipRecord; ValueError("field 'x': ...") on the first problem."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    for key in data:
        if key not in FIELDS:
            raise ValueError(f"field '{key}': unknown field{_close(key)}")
    for key in ("id", "task", "video"):
        if data.get(key) in (None, ""):
            raise ValueError(f"field '{key}': missing (required)")
    cid = data["id"]
    if not isinstance(cid, str) or not cid.strip() or "/" in cid:
        raise ValueError(f"field 'id': must be a non-empty string without '/', got {cid!r}")
    task = data["task"]
    if task not in TASKS:
        raise ValueError(f"field 'task': must be one of {', '.join(TASKS)}, got {task!r}")
    paths: dict[str, Path | None] = {}
    for name in PATH_FIELDS:
        value = data.get(name)
        if value is None:
            paths[name] = None
            continue
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"field '{name}': expected a path string, got {value!r}")
        path = Path(os.path.normpath(base / value))  # an absolute value replaces base; '..' is folded
        if check_files:
            if not path.exists():
                raise ValueError(f"field '{name}': file not found: {value}")
            if path.is_dir():
                raise ValueError(f"field '{name}': is a directory, not a file: {value}")
        paths[name] = path
    transcript = data.get("transcript")
    if transcript is not None and not isinstance(transcript, str):
        raise ValueError(f"field 'transcript': expected a string, got {type(transcript).__name__}")
    if task == "visualtts" and transcript is None:
        raise ValueError("field 'transcript': missing (required for task 'visualtts')")
    caption = data.get("caption")
    if caption is not None and not isinstance(caption, str):
        raise ValueError(f"field 'caption': expected a string, got {type(caption).__name__}")
    start = _number(data.get("start", 0.0), "start")
    end = data.get("end")
    if end is not None:
        end = _number(end, "end")
        if end <= start:
            raise ValueError(f"field 'end': must be after start ({start}), got {end}")
    speech = data.get("speech")
    if speech is not None:
        if not (isinstance(speech, (list, tuple)) and len(speech) == 2):
            raise ValueError(f"field 'speech': expected [start, end] in seconds, got {speech!r}")
        s0, s1 = (_number(x, "speech") for x in speech)
        if s1 < s0:
            raise ValueError(f"field 'speech': end before start: {speech!r}")
        speech = (s0, s1)
    duration = data.get("duration")
    if duration is not None:
        duration = _number(duration, "duration")
    split = data.get("split")
    if split is not None and not isinstance(split, str):
        raise ValueError(f"field 'split': expected a string, got {split!r}")
    features_raw = data.get("features") or {}
    if not isinstance(features_raw, dict):
        raise ValueError(f"field 'features': expected an object {{condition: path}}, got {features_raw!r}")
    features: dict[str, Path] = {}
    for name, value in features_raw.items():
        if not isinstance(value, str) or not value.endswith((".npy", ".safetensors")):
            raise ValueError(f"field 'features': '{name}' must be a .npy or .safetensors path, got {value!r}")
        path = Path(os.path.normpath(base / value))
        if check_files and not path.exists():
            raise ValueError(f"field 'features': '{name}': file not found: {value}")
        features[name] = path
    meta = data.get("meta") or {}
    if not isinstance(meta, dict):
        raise ValueError(f"field 'meta': expected an object, got {meta!r}")
    return ClipRecord(cid, task, paths["video"], paths["audio"], transcript, paths["speaker"], start, end, speech,
                      paths["labels"], split, duration, features, meta, caption=caption)


@dataclass(frozen=True)
class ManifestProblem:
    """One problem found by `check_manifest`."""

    line: int
    message: str


def _lines(path: Path) -> Iterable[tuple[int, str]]:
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        with open(path, encoding="utf-8") as f:
            yield from enumerate(f, 1)
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _parse_all(path: Path, check_files: bool, stop_on_error: bool) -> tuple[list[ClipRecord], list[ManifestProblem]]:
    path = Path(path)
    base = path.parent
    records: list[ClipRecord] = []
    problems: list[ManifestProblem] = []
    seen: dict[str, int] = {}
    for number, text in _lines(path):
        if not text.strip():
            continue
        try:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
            record = parse_line(data, base, check_files)
            if record.id in seen:
                raise ValueError(f"field 'id': duplicate id {record.id!r} (first on line {seen[record.id]})")
        except ValueError as exc:
            problem = ManifestProblem(number, f"{path} line {number}: {exc}")
            if stop_on_error:
                raise ManifestError(problem.message) from None
            problems.append(problem)
            continue
        record.where = f"{path} line {number}"
        seen[record.id] = number
        records.append(record)
    if not records and not problems:
        raise ManifestError(f"{path}: manifest has no clips")
    return records, problems


def read_manifest(path: str | os.PathLike, check_files: bool = True, split: str | None = None) -> list[ClipRecord]:
    """Parse and validate a manifest (optionally one split); ManifestError naming line and field on a problem."""
    records, _ = _parse_all(Path(path), check_files, stop_on_error=True)
    if split is not None:
        records = [r for r in records if r.split == split]
    return records


def check_manifest(
    path: str | os.PathLike, probe_media: bool = False, workers: int = 0
) -> tuple[list[ClipRecord], list[ManifestProblem]]:
    """Every problem of a manifest (not just the first); `probe_media` also opens each file with PyAV."""
    records, problems = _parse_all(Path(path), check_files=True, stop_on_error=False)
    if probe_media:
        problems += _probe_all(records, workers)
        problems.sort(key=lambda p: p.line)
    return records, problems


def _probe_one(record: ClipRecord) -> list[str]:
    from .media import probe

    out = []
    for name in ("video", "audio", "speaker"):
        path = record.audio_path if name == "audio" else getattr(record, name)
        if path is None:
            continue
        try:
            info = probe(path)
        except VssflowError as exc:
            out.append(f"field '{name}': {exc}")
            continue
        if name == "video" and not info.has_video:
            out.append(f"field 'video': no video stream in {path.name}")
        if name == "audio" and not info.has_audio:
            where = "the video has no audio track" if record.audio is None else f"no audio stream in {path.name}"
            out.append(f"field 'audio': {where}")
        if name == "video" and record.end is not None and info.duration_s and record.end > info.duration_s + 0.5:
            out.append(f"field 'end': {record.end}s is past the end of the video ({info.duration_s:.2f}s)")
    return out


def _probe_all(records: list[ClipRecord], workers: int) -> list[ManifestProblem]:
    line_of = {r.id: int(r.where.rsplit(" ", 1)[-1]) for r in records}
    problems: list[ManifestProblem] = []
    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor  # FFmpeg releases the GIL while probing

        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(_probe_one, records))
    else:
        results = [_probe_one(r) for r in records]
    for record, found in zip(records, results, strict=True):
        problems += [ManifestProblem(line_of[record.id], f"{record.where}: {msg}") for msg in found]
    return problems


def write_manifest(path: str | os.PathLike, records: Sequence[ClipRecord]) -> Path:
    """Write records as JSONL with paths relative to the manifest's folder (atomic)."""
    from .media import atomic_path

    path = Path(path)
    base = path.parent.resolve()
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record.to_json(base), ensure_ascii=False) + "\n")
    return path


# ----------------------------------------------------------------------------------------------------------
# builders for public dataset layouts
