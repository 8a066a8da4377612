"""The synthetic audio-visual benchmark: clips of three families written as mp4 + wav + JSON labels.

Layout of a generated root:
    synth.json                  config, version and counts (written last: its presence means complete)
    manifest.jsonl              every clip; train.jsonl / val.jsonl / test.jsonl the splits
    clips/<id>.mp4 .wav .json   silent video (H.264, 25 fps), wav (16 kHz mono by default; `sample_rate`,
                                `channels: 2` for stereo with sources panned by position), labels
    speakers/<spk>.wav          one reference utterance per speaker (the `speaker` condition)

Clip i draws everything from numpy's SeedSequence((seed, i)): results do not depend on the number of
workers or the order clips are made in, and a half-made root resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from vssflow.core.errors import VssflowError

from .mouth import mouth_track, render_face
from .scenes import SHAPES, render_scene
from .speech import Speaker, shift_labels, speak, speakers, utterance

SYNTH_VERSION = 1
FAMILIES = ("v2s", "visualtts", "mix")
SPLITS = ("train", "val", "test")
_TASK = {"v2s": "v2s", "visualtts": "visualtts", "mix": "visualtts"}


@dataclass(frozen=True)
class SynthConfig:
    """What defines a synthetic set; two roots with equal configs hold identical clips."""

    clips: int
    seconds: float = 4.0
    seed: int = 0
    families: tuple[str, ...] = FAMILIES
    sample_rate: int = 16000
    fps: float = 25.0
    size: int = 96
    version: int = SYNTH_VERSION
    channels: int = 1  # 2: stereo, on-screen sources panned by x position, off-screen ones to the sides
    sentences: int = 1  # talking-face clips (visualtts family): sentences spoken one after another

    def __post_init__(self) -> None:
        if self.clips < 1:
            raise VssflowError(f"synthetic set: clips must be >= 1, got {self.clips}")
        if self.seconds < 1.0:
            raise VssflowError(f"synthetic set: seconds must be >= 1.0, got {self.seconds}")
        bad = [f for f in self.families if f not in FAMILIES]
        if bad or not self.families:
            raise VssflowError(f"synthetic set: unknown families {bad}; choose from {', '.join(FAMILIES)}")
        if self.sentences < 1:
            raise VssflowError(f"synthetic set: sentences must be >= 1, got {self.sentences}")
        if self.size % 2 or self.size < 32:
            raise VssflowError(f"synthetic set: size must be even and >= 32, got {self.size}")
        if self.channels not in (1, 2):
            raise VssflowError(f"synthetic set: channels must be 1 or 2, got {self.channels}")
        if not 8000 <= self.sample_rate <= 96000:
            raise VssflowError(f"synthetic set: sample_rate must be in [8000, 96000] Hz, got {self.sample_rate}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        out = asdict(self)
        out["families"] = list(self.families)
        if self.channels == 1:
            del out["channels"]  # mono sets keep the config (and the root) they had before stereo existed
        if self.sentences == 1:  # sets made before the option existed keep their config
            del out["sentences"]
        return out


def clip_family(config: SynthConfig, index: int) -> str:
    """Family of clip `index`: families take turns, so every prefix of the set is balanced."""
    return config.families[index % len(config.families)]


def clip_split(index: int) -> str:
    """Split of clip `index`: 80 % train, 10 % val, 10 % test."""
    return {8: "val", 9: "test"}.get(index % 10, "train")


def clip_id(config: SynthConfig, index: int) -> str:
    """Clip id, e.g. 'mix-000002'."""
    return f"{clip_family(config, index)}-{index:06d}"


def clip_rng(config: SynthConfig, index: int) -> np.random.Generator:
    """The clip's own random stream, from (seed, index) only."""
    return np.random.default_rng(np.random.SeedSequence([config.seed, index, config.version]))


# ----------------------------------------------------------------------------------------------------------
# one clip


def _place_speech(rng: np.random.Generator, config: SynthConfig, speaker: Speaker, max_seconds: float):
    """An utterance at a random offset in the clip: (wav (S,) at full clip length, labels in clip time)."""
    n = int(round(config.seconds * config.sample_rate))
    speech, labels = utterance(rng, speaker, max_seconds, config.sample_rate)
    speech = speech[:n]
    room = max(0.0, config.seconds - len(speech) / config.sample_rate)
    offset = float(rng.uniform(0.1 * room, 0.9 * room)) if room > 0 else 0.0
    start = int(round(offset * config.sample_rate))
    wav = np.zeros(n, np.float32)
    stop = min(n, start + len(speech))
    wav[start:stop] = speech[: stop - start]
    labels = shift_labels(labels, start / config.sample_rate)
    return wav, labels


def _place_sentences(rng: np.random.Generator, config: SynthConfig, speaker: Speaker):
    """`config.sentences` utterances, one in each equal part of the clip (a talk several windows long):
    (wav (S,), labels in clip time with the transcript, phonemes and words of all of them)."""
    part = config.seconds / config.sentences
    n = int(round(config.seconds * config.sample_rate))
    wav = np.zeros(n, np.float32)
    merged: dict[str, Any] = {"transcript": [], "phonemes": [], "words": []}
    for k in range(config.sentences):
        speech, labels = utterance(rng, speaker, max(0.5, part - 0.3), config.sample_rate)
        room = max(0.0, part - len(speech) / config.sample_rate)
        offset = k * part + float(rng.uniform(0.1 * room, 0.9 * room))
        start = int(round(offset * config.sample_rate))
        stop = min(n, start + len(speech))
        wav[start:stop] += speech[: stop - start]
        labels = shift_labels(labels, start / config.sample_rate)
        word_base = sum(len(t.split()) for t in merged["transcript"])
        merged["transcript"].append(labels["transcript"])
        merged["phonemes"] += [{**p, "word": p["word"] + word_base} for p in labels["phonemes"]]
        merged["words"] += labels["words"]
        merged.setdefault("speaker", labels["speaker"])
        merged.setdefault("speech", list(labels["speech"]))[1] = labels["speech"][1]
    merged["transcript"] = " ".join(merged["transcript"])
    return wav, merged


def _talking_face(rng: np.random.Generator, config: SynthConfig, speaker: Speaker, labels: dict[str, Any],
                  n_frames: int, size: int):
    times = np.arange(n_frames) / config.fps
    opening, width = mouth_track(labels["phonemes"], times)
    frames, face = render_face(rng, speaker, opening, width, config.fps, size)
    return frames, {**face, "mouth": {"open": np.round(opening, 3).tolist(), "width": np.round(width, 3).tolist()}}


def render_clip(config: SynthConfig, index: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Frames (L, H, W, 3) uint8, wav (S,) float32 ((2, S) for stereo sets) and labels of clip `index`."""
    rng = clip_rng(config, index)
    family = clip_family(config, index)
    n_frames = max(1, int(np.ceil(config.seconds * config.fps - 1e-6)))
    labels: dict[str, Any] = {"id": clip_id(config, index), "family": family, "seconds": config.seconds,
                              "sample_rate": config.sample_rate, "fps": config.fps, "size": config.size}
    if config.channels != 1:
        labels["channels"] = config.channels
    if family == "v2s":
        frames, wav, scene = render_scene(rng, config.seconds, config.fps, config.size, config.sample_rate,
                                          channels=config.channels)
        labels.update(scene)
        return frames, wav, labels
    speaker = speakers()[int(rng.integers(len(speakers())))]
    if family == "visualtts":
        if config.sentences > 1:
            wav, speech = _place_sentences(rng, config, speaker)
        else:
            wav, speech = _place_speech(rng, config, speaker, config.seconds - 0.2)
        frames, face = _talking_face(rng, config, speaker, speech, n_frames, config.size)
        labels.update(speech, face=face)
        return frames, _centre(wav, config.channels), labels
    # mix: speech inside a scene, "add" (scene scaled by U(0.3, 0.7), face inset) or "insert" (replaced)
    frames, scene_wav, scene = render_scene(rng, config.seconds, config.fps, config.size, config.sample_rate,
                                            channels=config.channels)
    mode = "add" if rng.random() < 0.5 else "insert"
    speech_wav, speech = _place_speech(rng, config, speaker, max(0.5, 0.7 * config.seconds))
    s0, s1 = speech["speech"]
    if mode == "add":
        gain = float(rng.uniform(0.3, 0.7))
        wav = gain * scene_wav + _centre(speech_wav, config.channels)
        inset = config.size // 2
        face_frames, face = _talking_face(rng, config, speaker, speech, n_frames, inset)
        corner = int(rng.integers(2))
        x0 = 0 if corner == 0 else config.size - inset
        frames[:, :inset, x0 : x0 + inset] = face_frames
        face["inset"] = [x0, 0, inset, inset]
        events = [{**e, "amplitude": round(e["amplitude"] * gain, 4)} for e in scene["events"]]
        continuous = [{**c, "gain": round(c["gain"] * gain, 4), "loudness": [round(v * gain, 4) for v in c["loudness"]]}
                      for c in scene["continuous"]]
    else:
        gain = 1.0
        face_frames, face = _talking_face(rng, config, speaker, speech, n_frames, config.size)
        a, b = int(s0 * config.sample_rate), int(s1 * config.sample_rate)
        fade = np.ones(scene_wav.shape[-1], np.float32)
        ramp = int(0.01 * config.sample_rate)  # 10 ms crossfades around the inserted speech
        fade[a:b] = 0.0
        fade[max(0, a - ramp) : a] = np.linspace(1, 0, a - max(0, a - ramp))
        fade[b : b + ramp] = np.linspace(0, 1, len(fade[b : b + ramp]))
        wav = scene_wav * fade + _centre(speech_wav, config.channels)
        k0, k1 = int(np.floor(s0 * config.fps)), int(np.ceil(s1 * config.fps))
        frames[k0:k1] = face_frames[k0:k1]
        face["frames"] = [k0, min(k1, n_frames)]
        events = [e for e in scene["events"] if not (s0 - 0.01 <= e["time"] <= s1 + 0.01)]
        muted = [k0 <= k < k1 for k in range(n_frames)]  # continuous sounds are silent where speech replaced them
        continuous = [{**c, "loudness": [0.0 if m else v for v, m in zip(c["loudness"], muted, strict=True)]}
                      for c in scene["continuous"]]
    peak = float(np.abs(wav).max())
    norm = min(1.0, 0.95 / peak) if peak > 0 else 1.0  # keep the sum from clipping; labels follow
    wav = wav * norm
    events = [{**e, "amplitude": round(e["amplitude"] * norm, 4)} for e in events]
    continuous = [{**c, "gain": round(c["gain"] * norm, 4), "loudness": [round(v * norm, 4) for v in c["loudness"]]}
                  for c in continuous]
    labels.update(speech, face=face, objects=scene["objects"], events=events, continuous=continuous,
                  classes=scene["classes"], mix={"mode": mode, "scene_gain": round(gain, 4), "mix_gain": round(norm, 4)})
    return frames, wav.astype(np.float32), labels


def _centre(wav: np.ndarray, channels: int) -> np.ndarray:
    """A mono source in the middle of the stereo image (equal-power: -3 dB per side); mono stays (S,)."""
    return wav if channels == 1 else np.stack([wav, wav]) * np.float32(np.sqrt(0.5))


def _json_atomic(path: Path, data: Any, lines: bool = False) -> None:
    from vssflow.core.media import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            if lines:
                for row in data:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                json.dump(data, f, ensure_ascii=False, indent=1)


def make_clip(config: SynthConfig, index: int, root: str | os.PathLike) -> dict[str, Any]:
    """Render and write clip `index` under `root` (skipped when already complete); its manifest record."""
    from vssflow.core.media import write_audio, write_video

    root = Path(root)
    cid = clip_id(config, index)
    video, audio, label_path = (root / "clips" / f"{cid}{ext}" for ext in (".mp4", ".wav", ".json"))
    if label_path.exists() and video.exists() and audio.exists():  # labels are written last
        labels = json.loads(label_path.read_text())
    else:
        frames, wav, labels = render_clip(config, index)
        write_video(video, frames, config.fps)
        write_audio(audio, wav, config.sample_rate)
        _json_atomic(label_path, labels)
    return _record(config, index, labels)


_NUMBERS = ("no", "one", "two", "three", "four", "five")


def _count(n: int, noun: str) -> str:
    word = _NUMBERS[n] if n < len(_NUMBERS) else str(n)
    return f"{word} {noun}{'' if n == 1 else 's'}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def caption(labels: dict[str, Any]) -> str:
    """What is on screen and what is heard, from a clip's labels: the classes and counts of the on-screen
    objects (with their shapes), the off-screen sounds, and speech (for a talking face).

    e.g. "two metal squares and one engine car on screen; off-screen drum and glass hits"
    """
    parts = []
    if "transcript" in labels:
        parts.append("a person speaking" + (" over a scene" if labels.get("objects") else ""))
    objects = labels.get("objects") or []
    if objects:
        counts: dict[str, int] = {}
        for obj in objects:
            counts[obj["class"]] = counts.get(obj["class"], 0) + 1
        seen = [_count(n, f"{cls} {SHAPES[cls]}") for cls, n in sorted(counts.items())]
        parts.append(f"{_join(seen)} on screen")
        off = sorted({ev["class"] for ev in labels.get("events", []) if not ev.get("onscreen", True)})
        parts.append(f"off-screen {_join(off)} hits" if off else "no off-screen sounds")
    return "; ".join(parts)


def _record(config: SynthConfig, index: int, labels: dict[str, Any]) -> dict[str, Any]:
    cid = labels["id"]
    family = labels["family"]
    rec: dict[str, Any] = {"id": cid, "task": _TASK[family], "video": f"clips/{cid}.mp4",
                           "audio": f"clips/{cid}.wav", "start": 0.0, "end": config.seconds,
                           "duration": config.seconds, "split": clip_split(index), "labels": f"clips/{cid}.json"}
    if "transcript" in labels:
        rec["transcript"] = labels["transcript"]
        rec["speaker"] = f"speakers/{labels['speaker']['id']}.wav"
        rec["speech"] = labels["speech"]
    rec["caption"] = caption(labels)
    rec["meta"] = {"family": family}
    return rec


# ----------------------------------------------------------------------------------------------------------
# the whole set

_REFERENCE_WORDS = ("place", "green", "by", "k", "seven", "again")


def write_speakers(root: Path, sample_rate: int) -> None:
    """One reference utterance per speaker: the `speaker` condition's input (same sentence for everyone)."""
    from vssflow.core.media import write_audio

    for spk in speakers():
        path = root / "speakers" / f"{spk.id}.wav"
        if not path.exists():
            wav, _ = speak(list(_REFERENCE_WORDS), spk, sample_rate)
            write_audio(path, wav / (np.abs(wav).max() + 1e-9) * 0.7, sample_rate)


@contextlib.contextmanager
def _single_threaded_torch() -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core: no oversubscription


def _make_many(config: SynthConfig, indices: Sequence[int], root: str) -> list[dict[str, Any]]:
    return [make_clip(config, i, root) for i in indices]


@dataclass
class _Lock:
    """An exclusive lock file (fcntl) so two processes never generate into one root at once."""

    path: Path
    handle: Any = field(default=None, repr=False)

    def __enter__(self) -> _Lock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "w")
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: Any) -> None:
        import fcntl

        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def read_config(root: str | os.PathLike) -> dict[str, Any] | None:
    """The synth.json of a complete root, or None."""
    path = Path(root) / "synth.json"
    return json.loads(path.read_text()) if path.exists() else None


def generate(
    root: str | os.PathLike,
    config: SynthConfig,
    workers: int = 1,
    progress: bool | Callable[[int], None] = False,
) -> Path:
    """Generate (or finish, or reuse) a synthetic set under `root`; returns its manifest path.

    A root complete with the same config is reused as is; a root made with another config is an error.
    """
    root = Path(root)
    wanted = config.as_dict()
    with _Lock(root / ".synth.lock"):
        done = read_config(root)
        if done is not None:
            if done.get("config") != wanted:
                raise VssflowError(
                    f"{root} already holds a synthetic set made with {done.get('config')}; "
                    f"use another --out/root or delete it to make {wanted}"
                )
            _add_captions(root)
            return root / "manifest.jsonl"
        partial = root / "synth.partial.json"
        if partial.exists() and json.loads(partial.read_text()) != wanted:
            raise VssflowError(f"{root} holds a half-made synthetic set with another config "
                               f"({partial.read_text().strip()}); delete it or use another root")
        _json_atomic(partial, wanted)
        with _single_threaded_torch():  # as in the workers: samples must not depend on the thread count
            if any(f != "v2s" for f in config.families):
                write_speakers(root, config.sample_rate)
            records = _run(config, root, workers, progress)
        _json_atomic(root / "manifest.jsonl", records, lines=True)
        for split in SPLITS:
            _json_atomic(root / f"{split}.jsonl", [r for r in records if r["split"] == split], lines=True)
        counts = {f: sum(1 for r in records if r["meta"]["family"] == f) for f in config.families}
        splits = {s: sum(1 for r in records if r["split"] == s) for s in SPLITS}
        _json_atomic(root / "synth.json", {"config": wanted, "families": counts, "splits": splits})
        partial.unlink()
    return root / "manifest.jsonl"


def _add_captions(root: Path) -> None:
    """Give the manifests of a set made before clips had captions their `caption` field (from the labels)."""
    names = ["manifest.jsonl", *(f"{split}.jsonl" for split in SPLITS)]
    for name in names:
        path = root / name
        if not path.is_file():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if all("caption" in row for row in rows):
            continue
        for row in rows:
            if "caption" not in row:
                row["caption"] = caption(json.loads((root / row["labels"]).read_text()))
        _json_atomic(path, rows, lines=True)


def _run(config: SynthConfig, root: Path, workers: int, progress: bool | Callable[[int], None]) -> list[dict]:
    bar = None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=config.clips, unit="clip", desc="synth")
        tick: Callable[[int], None] = bar.update
    elif callable(progress):
        tick = progress
    else:
        def tick(_n: int) -> None:
            return None

    records: list[dict[str, Any]] = []
    try:
        if workers <= 1 or config.clips < 8:
            for i in range(config.clips):
                records.append(make_clip(config, i, root))
                tick(1)
        else:
            chunk = max(1, min(16, config.clips // (workers * 4)))
            batches = [list(range(i, min(i + chunk, config.clips))) for i in range(0, config.clips, chunk)]
            # spawn: espeak-ng and x264 keep global state that must not be shared with a forked parent
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_worker_init) as pool:
                for batch in pool.map(_make_many, [config] * len(batches), batches, [str(root)] * len(batches)):
                    records += batch
                    tick(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return records
