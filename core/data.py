"""Clip datasets, batching and sampling: manifest records -> the sample and batch dicts of docs/architecture.md.

    sample = {"id", "task", "wav": (S,), "wav_length": int, "conditions": {name: {"x": ..., **extras}}, "labels"}
    batch  = {"ids", "tasks", "wav": (B, S), "wav_lengths": (B,), "conditions": {name: {"x", "mask", "present",
              **extras}}, "labels": [dict]}

A condition is described by its encoder's InputContract; the contract's modality says which raw input the
clip provides: video frames at the contract's fps and size, transcript ids (+ speech span, + phoneme times),
caption byte ids (`caption_ids`), a speaker reference waveform, audio, or precomputed features. A condition whose frozen encoder was cached
(`vssflow features extract`) is served as its encoded features with `"encoded": True`.

Determinism: random crops draw from (seed, epoch, index); `(index, epoch)` keys let a batch sampler (the
trainer's step-derived `BatchPlan`) fix the epoch of each sample, also in DataLoader worker processes.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import MediaError
from .interfaces import InputContract
from .manifest import ClipRecord
from .sequence import SequenceSpec, pad_or_trim
from .video_cache import DecodedVideoCache

logger = logging.getLogger(__name__)

MODALITIES = ("video", "transcript", "caption", "speaker", "audio", "features", "prompt")
CAPTION_PAD_ID = 0
CAPTION_VOCAB = 257  # UTF-8 bytes shifted by one; 0 = padding
CROPS = ("start", "random", "center")
PAD_AUDIO = ("window", "longest")  # batch audio padded to the recipe window, or to the longest clip
PER_FRAME_EXTRAS = ("times",)  # extras with one row per frame/token of x: padded like x
ConditionInputs = Mapping[str, "tuple[str, InputContract] | InputContract"]


def _contract(name: str, value: Any) -> tuple[str, InputContract]:
    if isinstance(value, InputContract):
        modality, contract = value.modality, value
    else:
        modality, contract = value
    if modality not in MODALITIES:
        raise ValueError(f"condition {name!r}: modality {modality!r} has no raw input; use one of {MODALITIES}")
    return modality, contract


_CUT_WARNED: set[int] = set()


def caption_ids(text: str, max_length: int | None = None) -> torch.Tensor:
    """A caption's token ids (N,) long: its UTF-8 bytes + 1 (0 is padding), cut to `max_length` tokens
    (on a character boundary, so no character is split)."""
    data = text.strip().encode("utf-8")
    if max_length is not None and len(data) > max_length:
        if max_length not in _CUT_WARNED:  # once per length, one line: a long caption loses its end
            _CUT_WARNED.add(max_length)
            logger.warning("a caption of %d bytes is cut to the caption encoder's max_length %d (raise max_length "
                           "in the recipe to keep captions whole; further cuts are not reported)", len(data),
                           max_length)
        data = data[:max_length].decode("utf-8", errors="ignore").encode("utf-8")
    return torch.tensor([b + 1 for b in data], dtype=torch.long)


def load_features(path: str | Path) -> torch.Tensor:
    """Precomputed features (L, D) float32 from .npy or .safetensors (tensor 'features', else the only one)."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: cannot read features: file not found")
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            x = torch.from_numpy(np.ascontiguousarray(array))
        else:
            from safetensors.torch import load_file

            tensors = load_file(str(path))
            if "features" in tensors:
                x = tensors["features"]
            elif len(tensors) == 1:
                x = next(iter(tensors.values()))
            else:
                raise MediaError(f"{path}: cannot read features: no tensor named 'features' in {sorted(tensors)}")
    except MediaError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy/safetensors raise many types for a bad file
        raise MediaError(f"{path}: cannot read features: {type(exc).__name__}: {exc}") from None
    if x.dim() != 2:
        raise MediaError(f"{path}: features must be (L, D), got shape {tuple(x.shape)}")
    return x.float()


class ClipDataset(Dataset):
    """Clips (manifest records) as samples: the audio window plus each condition's raw input.

    records: the clips, or a callable returning them on first use (a manifest read lazily).
    conditions: {name: (modality, InputContract)} (or the contract alone, its modality is used).
    spec: the audio window (sample rate, hop, duration); None serves whole clips without audio (extraction).
    features: {condition name: cache folder} of encoded features; those conditions come back encoded.
    crop: where a window starts inside a longer clip: "start", "random" (v2s clips only: a transcript
          covers the whole utterance) or "center".
    phoneme_times: also give transcript `times` (N, 2): from the labels when they have them, else each
          token an equal share of the speech span.
    condition_tasks: {name: tasks}: a condition is only given to clips of those tasks.
    pad_audio: "window" pads every batch's audio to the window; "longest" to the batch's longest clip.
    video_cache_mb: keep the decoded frames of recently served clips in memory, up to this many MiB per
          loading process (least recently used out first; keyed by the file, its size and modification
          time, and the frame rate, size and window); 0 decodes every time. A clip's video conditions are
          decoded in one pass either way. Pays when clips repeat within the budget (small sets, many epochs).
    """

    def __init__(
        self,
        records: Sequence[ClipRecord] | Callable[[], Sequence[ClipRecord]] | None,
        conditions: ConditionInputs | None = None,
        spec: SequenceSpec | None = None,
        *,
        tokenizer: Any = None,
        features: Mapping[str, str | Path] | None = None,
        crop: str = "start",
        seed: int = 0,
        phoneme_times: bool = False,
        condition_tasks: Mapping[str, Sequence[str]] | None = None,
        load_labels: bool = True,
        pad_audio: str = "window",
        video_cache_mb: float = 0,
    ) -> None:
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        if pad_audio not in PAD_AUDIO:
            raise ValueError(f"pad_audio must be one of {PAD_AUDIO}, got {pad_audio!r}")
        self.pad_audio = pad_audio
        self._loader = records if callable(records) else None
        self._records = None if records is None or callable(records) else list(records)
        self.conditions = {name: _contract(name, value) for name, value in (conditions or {}).items()}
        self.spec = spec
        self._tokenizer = tokenizer
        self.features = {k: Path(v) for k, v in (features or {}).items()}
        self.crop, self.seed, self.phoneme_times = crop, int(seed), phoneme_times
        self.condition_tasks = {k: tuple(v) for k, v in (condition_tasks or {}).items()}
        self.load_labels = load_labels
        self.epoch = 0
        self._durations: dict[int, float] = {}
        self.video_cache = DecodedVideoCache(video_cache_mb)

    # records ---------------------------------------------------------------------------------------------
    @property
    def records(self) -> list[ClipRecord]:
        """The clips served (read on first access when a loader was given)."""
        if self._records is None and self._loader is not None:
            self._records = list(self._loader())
        return self._records

    def __len__(self) -> int:
        return len(self.records)

    @property
    def tokenizer(self) -> Any:
        """The phoneme tokenizer for transcripts (a default PhonemeTokenizer when none was given)."""
        if self._tokenizer is None:
            from .phonemes import PhonemeTokenizer

            self._tokenizer = PhonemeTokenizer()
        return self._tokenizer

    def configure(
        self,
        conditions: ConditionInputs | None = None,
        spec: SequenceSpec | None = None,
        **options: Any,
    ) -> ClipDataset:
        """A copy serving the same clips with other conditions, window or options (tokenizer, features, ...)."""
        out = copy.copy(self)
        if conditions is not None:
            out.conditions = {name: _contract(name, value) for name, value in conditions.items()}
        if spec is not None:
            out.spec = spec
        for key, value in options.items():
            if key == "tokenizer":
                out._tokenizer = value
            elif key == "features":
                out.features = {k: Path(v) for k, v in (value or {}).items()}
            elif key == "condition_tasks":
                out.condition_tasks = {k: tuple(v) for k, v in (value or {}).items()}
            elif key == "pad_audio":
                if value not in PAD_AUDIO:
                    raise ValueError(f"pad_audio must be one of {PAD_AUDIO}, got {value!r}")
                out.pad_audio = value
            elif key == "video_cache_mb":
                out.video_cache = DecodedVideoCache(value)
            elif key in ("crop", "seed", "phoneme_times", "load_labels"):
                setattr(out, key, value)
            else:
                raise TypeError(f"configure() got an unknown option {key!r}")
        out._durations = dict(self._durations)
        return out

    def set_epoch(self, epoch: int) -> None:
        """Epoch used by random crops (call before iterating; or let the sampler pass (index, epoch) keys)."""
        self.epoch = int(epoch)

    def tasks(self) -> list[str]:
        """Task of every clip, in order."""
        return [r.task for r in self.records]

    def durations(self) -> list[float]:
        """Seconds of every clip (from the manifest, else probed once), capped at the window."""
        out = []
        for i, record in enumerate(self.records):
            seconds = self._probed_seconds(record, i)
            out.append(min(seconds, self.spec.duration_s) if self.spec is not None else seconds)
        return out

    # one sample ------------------------------------------------------------------------------------------
    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = (key if isinstance(key, tuple) else (key, self.epoch))
        record = self.records[index]
        try:
            return self._sample(record, int(index), int(epoch))
        except MediaError as exc:
            raise MediaError(f"clip {record.id!r} ({record.where or 'no manifest'}): {exc}") from None

    def _clip_seconds(self, record: ClipRecord, index: int) -> float | None:
        if record.seconds is not None:
            return record.seconds
        if index in self._durations:
            return self._durations[index]
        return None

    def _probed_seconds(self, record: ClipRecord, index: int) -> float:
        """Clip seconds from the manifest, else from the file (probed once)."""
        seconds = self._clip_seconds(record, index)
        if seconds is None:
            from .media import probe

            seconds = self._durations[index] = probe(record.audio_path).duration_s - record.start
        return seconds

    def _window_start(self, record: ClipRecord, index: int, epoch: int) -> float:
        """Start (file seconds) of the window inside the clip."""
        if self.spec is None or self.crop == "start" or (self.crop == "random" and record.task != "v2s"):
            return record.start
        seconds = self._probed_seconds(record, index)
        room = max(0.0, seconds - self.spec.duration_s)
        if room <= 0:
            return record.start
        if self.crop == "center":
            return record.start + room / 2
        rng = np.random.default_rng([self.seed, epoch, index])
        return record.start + float(rng.uniform(0, room))

    def _sample(self, record: ClipRecord, index: int, epoch: int) -> dict[str, Any]:
        from .media import fit_channels, read_audio

        t0 = self._window_start(record, index, epoch)
        sample: dict[str, Any] = {"id": record.id, "task": record.task}
        if self.spec is not None:
            window = self.spec.num_samples / self.spec.sample_rate  # >= duration_s: whole latent frames
            t1 = t0 + window if record.end is None else min(t0 + window, record.end)
            channels = getattr(self.spec, "channels", 1)
            wav, _ = read_audio(record.audio_path, self.spec.sample_rate, mono=channels == 1, start=t0, end=t1)
            if channels != 1:
                wav = fit_channels(wav, channels)  # (C, S)
            length = min(int(wav.shape[-1]), self.spec.num_samples)
            sample["wav"] = pad_or_trim(wav, self.spec.num_samples)  # (S,), or (C, S) for multi-channel audio
            sample["wav_length"] = length
            valid_s = length / self.spec.sample_rate
        else:
            t1 = record.end
            valid_s = (t1 - t0) if t1 is not None else self._probed_seconds(record, index)
        labels = self._labels(record)
        conditions: dict[str, dict[str, Any]] = {}
        wanted = {name: (modality, contract) for name, (modality, contract) in self.conditions.items()
                  if self.condition_tasks.get(name) is None or record.task in self.condition_tasks[name]}
        videos = self._videos(wanted, record, t0, t1)
        for name, (modality, contract) in wanted.items():
            if name in videos:
                entry = {"x": videos[name]}
            else:
                entry = self._condition(name, modality, contract, record, t0, t1, valid_s, labels)
            if entry is not None:
                conditions[name] = entry
        sample["conditions"] = conditions
        sample["labels"] = {**labels, "window": [t0, t1]} if labels or self.load_labels else {}
        return sample

    def _videos(self, wanted: Mapping[str, tuple[str, InputContract]], record: ClipRecord, t0: float,
                t1: float | None) -> dict[str, torch.Tensor]:
        """{condition: frames (L, 3, H, W)} of the clip's video conditions, all decoded in one pass (or cached)."""
        from .media import VideoRequest

        if record.video is None:
            return {}
        requests = {name: VideoRequest(contract.fps, tuple(contract.size) if contract.size else None, t0, t1)
                    for name, (modality, contract) in wanted.items() if modality == "video" and name not in self.features}
        if not requests:
            return {}
        read = self.video_cache.read(record.video, list(requests.values()))
        out = {}
        for (name, request), video in zip(requests.items(), read, strict=True):
            frames = video.frames
            if self.spec is not None and request.fps:
                frames = frames[: self.spec.condition_frames(request.fps)]
            out[name] = frames
        return out

    def _labels(self, record: ClipRecord) -> dict[str, Any]:
        if not self.load_labels or record.labels is None:
            return {}
        try:
            return json.loads(Path(record.labels).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise MediaError(f"{record.labels}: cannot read labels: {exc}") from None

    def _condition(
        self, name: str, modality: str, contract: InputContract, record: ClipRecord, t0: float,
        t1: float | None, valid_s: float | None, labels: dict[str, Any],
    ) -> dict[str, Any] | None:
        from .media import read_audio, read_video

        if modality == "prompt":
            return None  # the model builds audio prompts from the target latents (core/model.py)
        if name in self.features:
            return self._cached(name, contract, record, t0, valid_s)
        if modality == "video":
            if record.video is None:
                return None
            frames = read_video(record.video, fps=contract.fps, size=contract.size, start=t0, end=t1).frames
            if self.spec is not None and contract.fps:
                frames = frames[: self.spec.condition_frames(contract.fps)]
            return {"x": frames}  # (L, 3, H, W)
        if modality == "transcript":
            return self._transcript(record, t0, valid_s, labels)
        if modality == "caption":
            if not record.caption or not record.caption.strip():
                return None
            tokenize = contract.extra.get("tokenize")  # a pretrained text model's own tokenizer
            if tokenize is not None:
                return {"x": tokenize(record.caption)}  # (N,)
            return {"x": caption_ids(record.caption, contract.extra.get("max_length"))}  # (N,)
        if modality in ("speaker", "audio"):
            rate = contract.sample_rate or (self.spec.sample_rate if self.spec else None)
            if modality == "speaker" and record.speaker is not None:
                max_s = float(contract.extra.get("max_seconds", 10.0))
                wav, _ = read_audio(record.speaker, rate, start=0.0, end=max_s)
            elif modality == "speaker" and record.task != "visualtts":
                return None  # no voice to take a speaker from
            else:
                wav, _ = read_audio(record.audio_path, rate, start=t0, end=t1)
            return {"x": wav}  # (S,)
        if modality == "features":
            path = record.features.get(name)
            if path is None:
                return None
            return {"x": self._crop_features(load_features(path), contract.fps, record, t0)}
        raise ValueError(f"condition {name!r}: unsupported modality {modality!r}")

    def _crop_features(self, x: torch.Tensor, fps: float | None, record: ClipRecord, t0: float) -> torch.Tensor:
        """Features cover the clip from its start: keep the window's frames. (L, D)"""
        if fps is None or self.spec is None:
            return x
        first = int(round((t0 - record.start) * fps))
        return x[first : first + self.spec.condition_frames(fps)]

    def _cached(self, name: str, contract: InputContract, record: ClipRecord, t0: float,
                valid_s: float | None) -> dict[str, Any] | None:
        from .feature_cache import feature_path, read_feature_file

        path = feature_path(self.features[name], record.id)
        if not path.is_file():
            raise MediaError(
                f"no cached features for condition {name!r} in {self.features[name]} "
                f"(run `vssflow features extract` for this manifest, or drop the cache)"
            )
        x, meta = read_feature_file(path)
        fps = meta.get("fps")
        return {"x": self._crop_features(x, float(fps) if fps else None, record, t0), "encoded": True}

    def _transcript(self, record: ClipRecord, t0: float, valid_s: float | None,
                    labels: dict[str, Any]) -> dict[str, Any] | None:
        if not record.transcript or not record.transcript.strip():
            return None
        tok = self.tokenizer
        ids = tok.encode(record.transcript)
        if not ids:
            return None
        end_s = valid_s if valid_s is not None else math.inf
        if record.speech is not None:
            span = (max(0.0, record.speech[0] - t0), min(end_s, record.speech[1] - t0))
        else:
            span = (0.0, end_s if math.isfinite(end_s) else 0.0)
        entry: dict[str, Any] = {"x": torch.tensor(ids, dtype=torch.long), "span": torch.tensor(span, dtype=torch.float32)}
        if self.phoneme_times:
            times = None
            phonemes = labels.get("phonemes")
            if phonemes:
                timed_ids, timed = tok.encode_timed([(p["symbol"], p["start"], p["end"], p["word"]) for p in phonemes])
                if timed_ids == ids:
                    times = torch.tensor(timed, dtype=torch.float32) - t0
                else:
                    logger.debug("clip %s: spoken phonemes differ from the transcript's; uniform times", record.id)
            if times is None:  # each token an equal share of the speech span
                edges = torch.linspace(span[0], span[1], len(ids) + 1)
                times = torch.stack([edges[:-1], edges[1:]], dim=1)
            entry["times"] = times  # (N, 2) seconds in the window
        return entry

    # batching --------------------------------------------------------------------------------------------
    def collate(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """`collate` that also fills conditions no sample in the batch has (present False everywhere).

        pad_audio="longest" cuts the batch's audio to its longest clip (rounded up to whole latent frames)
        instead of the whole window: with duration bucketing, short clips then cost short sequences.
        """
        batch = collate(samples, conditions=self.conditions)
        if self.pad_audio == "longest" and self.spec is not None and "wav" in batch:
            hop = self.spec.hop_length
            keep = -(-int(batch["wav_lengths"].max()) // hop) * hop  # ceil to whole frames
            batch["wav"] = batch["wav"][..., : max(hop, min(keep, batch["wav"].shape[-1]))]
        return batch


# ----------------------------------------------------------------------------------------------------------
# collate


def _pad_stack(tensors: list[torch.Tensor | None], length: int, like: torch.Tensor) -> torch.Tensor:
    """Stack (L_i, ...) tensors zero-padded to (B, length, ...); None rows are all zeros."""
    out = torch.zeros((len(tensors), length, *like.shape[1:]), dtype=like.dtype)
    for i, t in enumerate(tensors):
        if t is not None and t.shape[0]:
            out[i, : t.shape[0]] = t
    return out


def collate(samples: Sequence[dict[str, Any]], conditions: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Batch samples, padding every condition to the batch maximum with a mask (True = valid) and `present`.

    Conditions listed in `conditions` (name -> (modality, contract)) but carried by no sample still appear,
    one padded frame with mask and present all False; without `conditions` such conditions are left out.
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    batch: dict[str, Any] = {"ids": [s["id"] for s in samples], "tasks": [s["task"] for s in samples]}
    if all("wav" in s for s in samples):
        batch["wav"] = torch.stack([s["wav"] for s in samples])  # (B, S), or (B, C, S) for multi-channel audio
        batch["wav_lengths"] = torch.tensor([int(s["wav_length"]) for s in samples], dtype=torch.long)
    names = list(dict.fromkeys(n for s in samples for n in s.get("conditions", {})))
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        entries = [s["conditions"].get(name) for s in samples]
        present = torch.tensor([e is not None for e in entries], dtype=torch.bool)
        first = next(e for e in entries if e is not None)
        xs = [e["x"] if e is not None else None for e in entries]
        lengths = torch.tensor([x.shape[0] if x is not None else 0 for x in xs], dtype=torch.long)
        max_len = max(1, int(lengths.max()))
        cond: dict[str, Any] = {
            "x": _pad_stack(xs, max_len, first["x"]),  # (B, L, ...)
            "mask": torch.arange(max_len)[None, :] < lengths[:, None],  # (B, L)
            "present": present,  # (B,)
        }
        for key in first:
            if key == "x":
                continue
            values = [e.get(key) if e is not None else None for e in entries]
            ref = next(v for v in values if v is not None)
            if not isinstance(ref, torch.Tensor):
                kinds = {v for v in values if v is not None}
                if len(kinds) != 1:
                    raise ValueError(f"condition {name!r}: samples disagree on {key!r}: {sorted(map(str, kinds))}")
                cond[key] = ref
            elif key in PER_FRAME_EXTRAS:
                cond[key] = _pad_stack(values, max_len, ref)  # per-token extras follow x's padding
            else:
                cond[key] = torch.stack([v if v is not None else torch.zeros_like(ref) for v in values])
        out[name] = cond
    for name, value in (conditions or {}).items():
        if name in out:
            continue
        modality, contract = _contract(name, value)
        shape: tuple[int, ...] = ()
        dtype = torch.float32
        if modality == "video":
            h, w = contract.size or (1, 1)
            shape = (3, h, w)
        elif modality == "features":
            shape = (contract.dim or 1,)
        elif modality in ("transcript", "caption"):
            dtype = torch.long
        b = len(samples)
        out[name] = {"x": torch.zeros((b, 1, *shape), dtype=dtype), "mask": torch.zeros((b, 1), dtype=torch.bool),
                     "present": torch.zeros(b, dtype=torch.bool)}
    batch["conditions"] = out
    batch["labels"] = [s.get("labels", {}) for s in samples]
    return batch
