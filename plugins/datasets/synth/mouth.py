"""A rendered talking face whose mouth follows the visemes of the spoken phonemes.

Each phoneme sets a target (opening, width) for the lips; targets blend with a dominance model of
coarticulation (Cohen & Massaro): every segment pulls the mouth towards its target with a weight that
is full inside the segment and decays exponentially outside it, and lip closures (p b m, f v) dominate
their neighbours so they still close. The blend is sampled at each frame's time (25 fps by default).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vssflow.core.phonemes import PhonemeTokenizer

from .speech import Speaker

# IPA unit -> (opening 0..1, width 0..1: 0 rounded/protruded, 1 spread), dominance
_VISEMES: dict[str, tuple[float, float, float]] = {}


def _set(units: str, opening: float, width: float, dominance: float) -> None:
    for unit in units.split():
        _VISEMES[unit] = (opening, width, dominance)


_set("p b m", 0.0, 0.5, 4.0)
_set("f v", 0.08, 0.55, 3.0)
_set("θ ð", 0.22, 0.55, 1.5)
_set("t d n l s z ɾ n̩ əl", 0.22, 0.62, 0.6)
_set("ʃ ʒ tʃ dʒ", 0.25, 0.3, 1.5)
_set("k ɡ ŋ h x ʔ", 0.35, 0.5, 0.4)
_set("ɹ r", 0.28, 0.35, 1.0)
_set("w ʍ", 0.15, 0.12, 2.5)
_set("j", 0.22, 0.75, 1.0)
_set("i iː ɪ ᵻ e eː", 0.35, 0.9, 1.0)
_set("ɛ", 0.55, 0.75, 1.0)
_set("æ a aː", 0.85, 0.72, 1.0)
_set("ɑ ɑː ɒ", 1.0, 0.55, 1.0)
_set("ʌ ə ɐ ɚ ɜ ɜː", 0.5, 0.55, 0.8)
_set("ɔ ɔː o oː", 0.62, 0.28, 1.2)
_set("ʊ u uː ʉ ʉː", 0.3, 0.12, 1.5)
REST = (0.02, 0.5, 1.0)  # closed, relaxed: before and after speech
_DIPHTHONGS = {"eɪ": "e ɪ", "aɪ": "a ɪ", "oʊ": "o ʊ", "aʊ": "a ʊ", "ɔɪ": "ɔ ɪ", "əʊ": "ə ʊ", "iə": "i ə",
               "eə": "e ə", "ʊə": "ʊ ə"}
_DECAY_S = 0.045  # how far (s) a segment's pull reaches outside it


def viseme_segments(phonemes: list[dict[str, Any]], tokenizer: PhonemeTokenizer | None = None
                    ) -> list[tuple[float, float, float, float, float]]:
    """(start, end, opening, width, dominance) per articulatory segment; diphthongs split in two."""
    tokenizer = tokenizer or PhonemeTokenizer()
    segments = []
    for p in phonemes:
        units = [u for u in tokenizer.split_phoneme(p["symbol"]) if u not in ("ˈ", "ˌ")]
        parts: list[str] = []
        for u in units:
            parts += _DIPHTHONGS.get(u, u).split()
        parts = [u for u in parts if u in _VISEMES] or ["ə"]
        step = (p["end"] - p["start"]) / len(parts)
        for k, u in enumerate(parts):
            o, w, d = _VISEMES[u]
            segments.append((p["start"] + k * step, p["start"] + (k + 1) * step, o, w, d))
    return segments


def mouth_track(phonemes: list[dict[str, Any]], times: np.ndarray,
                tokenizer: PhonemeTokenizer | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Opening and width (each (L,) in 0..1) at `times` seconds, from phonemes with start/end seconds."""
    segs = viseme_segments(phonemes, tokenizer)
    if segs:  # rest before the first and after the last phoneme
        segs = [(-10.0, segs[0][0], *REST), *segs, (segs[-1][1], 1e4, *REST)]
    else:
        segs = [(-10.0, 1e4, *REST)]
    arr = np.array(segs)  # (N, 5)
    start, end, opening, width, dom = (arr[:, i][None, :] for i in range(5))
    t = times[:, None]
    outside = np.maximum(0.0, np.maximum(start - t, t - end))  # (L, N) seconds outside each segment
    weight = dom * np.exp(-outside / _DECAY_S)
    weight /= weight.sum(axis=1, keepdims=True)
    return (weight * opening).sum(axis=1), (weight * width).sum(axis=1)


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / max(ry, 1e-3)) ** 2 + ((xx - cx) / max(rx, 1e-3)) ** 2 <= 1.0


def render_face(
    rng: np.random.Generator,
    speaker: Speaker,
    opening: np.ndarray,
    width: np.ndarray,
    fps: float = 25.0,
    size: int = 96,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Frames (L, size, size, 3) uint8 of the speaker's face with the given mouth track; plus face labels.

    The static face is drawn once (eyes open and shut) and shifted per frame for a slight head sway; only
    the mouth is drawn per frame.
    """
    n = len(opening)
    s = size / 96.0
    pad = max(2, int(round(3 * s)))
    big = size + 2 * pad
    yy, xx = np.mgrid[0:big, 0:big].astype(np.float32) + 0.5
    cx, cy = big / 2, big / 2 + 2 * s
    face_rx, face_ry = speaker.face_width * size / 2, 0.42 * size
    base = (np.array(rng.uniform(30, 90, 3)) * np.ones((big, big, 1))).astype(np.uint8)
    base[_ellipse(yy, xx, cy - 0.12 * size, cx, face_ry * 0.9, face_rx * 1.05)] = rng.integers(10, 90, 3)
    base[_ellipse(yy, xx, cy, cx, face_ry, face_rx)] = speaker.skin
    layers = []
    for eye_h in (3.0 * s, 0.6 * s):  # open, shut
        img = base.copy()
        for ex in (-1, 1):
            img[_ellipse(yy, xx, cy - 0.12 * size, cx + ex * 0.3 * face_rx * 1.2, eye_h, 4.0 * s)] = (30, 30, 40)
        layers.append(img)
    blinks: set[int] = set()
    t_blink = rng.uniform(0.3, 2.0)
    while t_blink * fps < n:
        blinks.update(range(int(t_blink * fps), int(t_blink * fps) + 3))
        t_blink += rng.uniform(1.5, 4.0)
    sway_f, sway_p = rng.uniform(0.3, 0.8), rng.uniform(0, 2 * np.pi)
    my, box_w, box_h = cy + 0.2 * size, int(0.24 * size) + 4, int(12 * s) + 4
    y0, x0 = int(my) - box_h, int(cx) - box_w
    ly, lx = np.mgrid[y0 : y0 + 2 * box_h, x0 : x0 + 2 * box_w].astype(np.float32) + 0.5
    frames = np.empty((n, size, size, 3), np.uint8)
    for k in range(n):
        t = k / fps
        img = layers[1 if k in blinks else 0].copy()
        half_w = (0.10 + 0.10 * width[k]) * size
        half_h = (0.6 + 11.0 * opening[k]) * s
        box = img[y0 : y0 + 2 * box_h, x0 : x0 + 2 * box_w]
        box[_ellipse(ly, lx, my, cx, half_h + 2.2 * s, half_w + 2.0 * s)] = speaker.lips
        if opening[k] > 0.04:
            inner = _ellipse(ly, lx, my, cx, half_h, half_w)
            box[inner] = (45, 15, 20)
            box[inner & (ly < my - half_h * 0.45)] = (235, 235, 225)  # upper teeth
        dx = int(round(pad * 0.6 * np.sin(2 * np.pi * sway_f * t + sway_p)))  # slight head motion
        dy = int(round(pad * 0.4 * np.sin(2 * np.pi * sway_f * 0.7 * t)))
        frames[k] = img[pad - dy : pad - dy + size, pad - dx : pad - dx + size]
    return frames, {"mouth_center": [round(cx - pad, 2), round(my - pad, 2)]}
