"""VisualTTS speech: GRID-like sentences spoken by espeak-ng voices, with phoneme and word timings.

Speakers are a fixed population (not drawn per seed): an espeak-ng English voice variant with its own pitch,
pitch range and rate, plus a face (skin, lips, face shape) so identity is visible as well as audible. All
speakers use US English phonology, so the phonemes espeak speaks are exactly the ones `PhonemeTokenizer`
(voice en-us) writes for the transcript, and spoken timings line up with transcript ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vssflow.core.phonemes import Espeak

COMMANDS = ("bin", "lay", "place", "set")
COLOURS = ("blue", "green", "red", "white")
PREPOSITIONS = ("at", "by", "in", "with")
LETTERS = tuple("abcdefghijklmnopqrstuvxyz")  # GRID has no 'w'
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ADVERBS = ("again", "now", "please", "soon")
GRAMMAR = (COMMANDS, COLOURS, PREPOSITIONS, LETTERS, DIGITS, ADVERBS)


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: espeak-ng voice, prosody, and the face that goes with it."""

    id: str
    voice: str
    pitch: int  # espeak 0-99
    pitch_range: int  # espeak 0-99
    rate: int  # words per minute
    skin: tuple[int, int, int]
    lips: tuple[int, int, int]
    face_width: float  # relative to the canvas

    def label(self) -> dict[str, Any]:
        """JSON-friendly description."""
        return {"id": self.id, "voice": self.voice, "pitch": self.pitch, "range": self.pitch_range,
                "rate": self.rate}


_VARIANTS = ("m1", "f2", "m3", "f4", "m7", "f1", "klatt", "m2", "f3", "m5", "f5", "klatt3")
_SKINS = ((241, 194, 160), (198, 134, 96), (141, 85, 54), (224, 172, 130), (255, 219, 180), (168, 110, 75))
_LIPS = ((190, 90, 90), (160, 70, 70), (120, 50, 55), (200, 110, 110))


def speakers() -> list[Speaker]:
    """The fixed speaker population (12 speakers)."""
    out = []
    for i, variant in enumerate(_VARIANTS):
        female = variant.startswith("f")
        out.append(Speaker(
            id=f"spk{i:02d}",
            voice=f"en-us+{variant}",
            pitch=(55 if female else 35) + (i * 7) % 20,
            pitch_range=40 + (i * 11) % 40,
            rate=150 + (i * 13) % 50,
            skin=_SKINS[i % len(_SKINS)],
            lips=_LIPS[(i * 3) % len(_LIPS)],
            face_width=0.58 + 0.04 * (i % 4),
        ))
    return out


def sentence(rng: np.random.Generator) -> list[str]:
    """One GRID sentence as words: command colour preposition letter digit adverb."""
    return [str(rng.choice(slot)) for slot in GRAMMAR]


def _resample(wav: np.ndarray, src: int, dst: int) -> np.ndarray:
    import torch

    from vssflow.core.media import resample

    return resample(torch.from_numpy(wav), src, dst).numpy()


def speak(words: list[str], speaker: Speaker, sample_rate: int = 16000,
          rate: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Synthesise `words`: wav (S,) float32 at `sample_rate` and labels (phonemes, words, speech span, seconds)."""
    text = " ".join(words)
    raw, sr, events = Espeak.get().synthesize(text, speaker.voice, rate or speaker.rate, speaker.pitch,
                                              speaker.pitch_range)
    wav = _resample(raw.astype(np.float32) / 32768.0, sr, sample_rate)
    phonemes = []
    for ev, nxt in zip(events[:-1], events[1:], strict=True):
        start, end = ev.sample / sr, nxt.sample / sr
        if end > start:
            phonemes.append({"symbol": ev.symbol, "start": round(start, 4), "end": round(end, 4), "word": ev.word})
    spans: dict[int, list[float]] = {}
    for p in phonemes:
        span = spans.setdefault(p["word"], [p["start"], p["end"]])
        span[1] = p["end"]
    word_labels = [{"word": words[w] if w < len(words) else "", "start": s, "end": e}
                   for w, (s, e) in sorted(spans.items())]
    speech = [phonemes[0]["start"], phonemes[-1]["end"]] if phonemes else [0.0, 0.0]
    labels = {"transcript": text, "phonemes": phonemes, "words": word_labels, "speech": speech,
              "spoken_seconds": len(wav) / sample_rate, "speaker": speaker.label()}
    return wav.astype(np.float32), labels


def utterance(rng: np.random.Generator, speaker: Speaker, max_seconds: float,
              sample_rate: int = 16000) -> tuple[np.ndarray, dict[str, Any]]:
    """A sentence that fits in `max_seconds`: speak faster, then drop trailing words, until it does."""
    words = sentence(rng)
    rate = speaker.rate
    while True:
        wav, labels = speak(words, speaker, sample_rate, rate)
        if labels["speech"][1] - labels["speech"][0] <= max_seconds or (len(words) == 1 and rate >= 320):
            break
        if rate < 240:
            rate += 30
        elif len(words) > 1:
            words = words[:-1]
        else:
            rate += 40
    # keep only the spoken part plus a little margin: the caller places it in the clip
    start = max(0, int((labels["speech"][0] - 0.02) * sample_rate))
    stop = min(len(wav), int((labels["speech"][1] + 0.03) * sample_rate))
    wav = wav[start:stop]
    shift = start / sample_rate
    for p in labels["phonemes"]:
        p["start"], p["end"] = round(p["start"] - shift, 4), round(p["end"] - shift, 4)
    for w in labels["words"]:
        w["start"], w["end"] = round(w["start"] - shift, 4), round(w["end"] - shift, 4)
    labels["speech"] = [round(labels["speech"][0] - shift, 4), round(labels["speech"][1] - shift, 4)]
    labels["spoken_seconds"] = len(wav) / sample_rate
    labels["rate"] = rate
    peak = float(np.abs(wav).max()) or 1.0
    wav = wav * (float(rng.uniform(0.5, 0.8)) / peak)
    return wav.astype(np.float32), labels


def shift_labels(labels: dict[str, Any], offset: float) -> dict[str, Any]:
    """Speech labels moved by `offset` seconds (placing the utterance inside a clip)."""
    out = dict(labels)
    out["phonemes"] = [{**p, "start": round(p["start"] + offset, 4), "end": round(p["end"] + offset, 4)}
                       for p in labels["phonemes"]]
    out["words"] = [{**w, "start": round(w["start"] + offset, 4), "end": round(w["end"] + offset, 4)}
                    for w in labels["words"]]
    out["speech"] = [round(labels["speech"][0] + offset, 4), round(labels["speech"][1] + offset, 4)]
    return out
