"""V2S scenes: rendered objects whose look (shape + colour) decides the timbre of their sound and whose
motion (impacts, bounces, speed) decides when and how loud it sounds.

Impulsive classes (one sound per impact): metal (ringing inharmonic partials), wood (short knock),
glass (high ping), drum (noisy pitch-dropping thud). Continuous class: engine (a harmonic hum whose pitch
and loudness follow the car's speed). Off-screen distractors: quiet impacts with nothing on screen.
Positions are simulated at 1 kHz, so event times are exact to a millisecond; frames sample the same path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

IMPULSIVE = ("metal", "wood", "glass", "drum")
CONTINUOUS = ("engine",)
CLASSES = IMPULSIVE + CONTINUOUS
SHAPES = {"metal": "square", "wood": "bar", "glass": "triangle", "drum": "circle", "engine": "car"}
COLOURS = {  # RGB; each object jitters around its class colour
    "metal": (175, 180, 190),
    "wood": (140, 88, 40),
    "glass": (140, 225, 240),
    "drum": (205, 35, 40),
    "engine": (235, 200, 35),
}
_GRAVITY = 420.0  # px / s^2 on a 96-px canvas (scaled with the canvas)
_REST_SPEED = 70.0  # impacts slower than this put the object to rest (px / s)
_SIM_RATE = 1000  # physics steps per second
_REF_SPEED = 260.0  # impact speed of amplitude 1
_EXTENT = {"circle": (1.0, 1.0), "square": (0.85, 0.85), "bar": (1.3, 0.5), "triangle": (0.72, 0.8)}  # half w, h / r


@dataclass
class SceneObject:
    """One on-screen object and its simulated path."""

    index: int
    cls: str
    colour: tuple[int, int, int]
    radius: float
    x: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))  # (N,) px at _SIM_RATE
    y: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    speed: np.ndarray | None = field(repr=False, default=None)  # engine: (N,) |v| px / s

    def label(self) -> dict[str, Any]:
        """JSON-friendly description."""
        return {"id": self.index, "class": self.cls, "shape": SHAPES[self.cls], "color": list(self.colour),
                "radius": round(self.radius, 2), "onscreen": True}


# ----------------------------------------------------------------------------------------------------------
# motion


def _bouncer(rng: np.random.Generator, n: int, size: int, radius: float, scale: float, shape: str):
    """Ballistic path with floor and wall bounces, rests and relaunches. Returns x, y and impact events."""
    half_w, half_h = (radius * e for e in _EXTENT[shape])
    floor = size * 0.9 - half_h
    left, right = half_w + 1, size - half_w - 1
    g = _GRAVITY * scale
    x = float(rng.uniform(left, right))
    y = float(rng.uniform(half_h + 2, floor * 0.7)) if rng.random() < 0.7 else floor
    vx = float(rng.uniform(-45, 45)) * scale
    vy = float(rng.uniform(-60, 60)) * scale
    resting_until = -1.0 if y < floor else float(rng.uniform(0.0, 0.8))
    xs, ys = np.empty(n), np.empty(n)
    events: list[tuple[float, float, str]] = []  # (time, speed px/s, kind)
    dt = 1.0 / _SIM_RATE
    for i in range(n):
        t = i * dt
        if resting_until >= 0:
            if t >= resting_until:  # relaunch upwards (silently: a throw, not an impact)
                vy = -float(rng.uniform(170, 250)) * scale
                vx = float(rng.uniform(-50, 50)) * scale
                resting_until = -1.0
        else:
            vy += g * dt
            x += vx * dt
            y += vy * dt
            if y >= floor:
                frac = (y - floor) / max(vy * dt, 1e-9)  # how far past the floor, as a step fraction
                speed = abs(vy)
                events.append((t - frac * dt, speed / scale, "floor"))
                y = floor
                vy = -vy * float(rng.uniform(0.55, 0.8))
                vx *= 0.85
                if speed / scale < _REST_SPEED:
                    vy = vx = 0.0
                    resting_until = t + float(rng.uniform(0.25, 1.0))
            if x <= left or x >= right:
                speed = abs(vx)
                if speed / scale > 25:
                    events.append((t, speed / scale * 0.8, "wall"))
                x = min(max(x, left), right)
                vx = -vx
        xs[i], ys[i] = x, y
    return xs, ys, events


def _car(rng: np.random.Generator, n: int, size: int, scale: float):
    """A car driving left and right along the floor; speed varies smoothly. Returns x, y, |v|."""
    t = np.arange(n) / _SIM_RATE
    freqs = rng.uniform(0.15, 0.6, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    profile = sum(np.sin(2 * np.pi * f * t + p) for f, p in zip(freqs, phases, strict=True)) / 3  # (N,) in [-1, 1]
    speed = (0.55 + 0.45 * profile) * rng.uniform(35, 60) * scale  # px / s, always positive
    direction = 1.0 if rng.random() < 0.5 else -1.0
    left, right = size * 0.15, size * 0.85
    x = np.empty(n)
    pos = float(rng.uniform(left, right))
    for i in range(n):
        pos += direction * speed[i] / _SIM_RATE
        if pos < left or pos > right:  # turn round at the edges
            direction = -direction
            pos = min(max(pos, left), right)
        x[i] = pos
    y = np.full(n, size * 0.9 - 5 * scale)
    return x, y, speed


# ----------------------------------------------------------------------------------------------------------
# sounds


def _decay(n: int, sr: int, tau: float) -> np.ndarray:
    return np.exp(-np.arange(n) / (sr * tau))


def _click(rng: np.random.Generator, sr: int, ms: float = 2.0) -> np.ndarray:
    """A contact transient: a few ms of decaying white noise."""
    n = max(2, int(sr * ms / 1000))
    return rng.standard_normal(n) * _decay(n, sr, ms / 3000)


def _timbre(rng: np.random.Generator, cls: str) -> dict[str, Any]:
    """Per-object sound parameters, fixed for the object's life so it always sounds the same."""
    if cls == "metal":
        f0 = rng.uniform(400, 900)
        return {"freqs": f0 * np.array([1.0, 2.76, 5.40, 8.93]), "amps": np.array([1.0, 0.6, 0.4, 0.25]),
                "taus": rng.uniform(0.4, 0.8) * np.array([1.0, 0.7, 0.45, 0.3]), "length": 1.2, "click": 0.3}
    if cls == "wood":
        f0 = rng.uniform(180, 420)
        return {"freqs": f0 * np.array([1.0, 2.3, 3.9]), "amps": np.array([1.0, 0.5, 0.3]),
                "taus": rng.uniform(0.02, 0.045) * np.array([1.0, 0.7, 0.5]), "length": 0.15, "click": 0.6}
    if cls == "glass":
        f0 = rng.uniform(2000, 3400)
        return {"freqs": f0 * np.array([1.0, 2.32, 4.25]), "amps": np.array([1.0, 0.45, 0.2]),
                "taus": rng.uniform(0.12, 0.25) * np.array([1.0, 0.6, 0.4]), "length": 0.6, "click": 0.25}
    if cls == "drum":
        return {"f_hi": rng.uniform(130, 180), "f_lo": rng.uniform(55, 75), "tau": rng.uniform(0.1, 0.18),
                "length": 0.4, "noise": rng.uniform(0.3, 0.5)}
    raise ValueError(f"no impulsive timbre for class {cls!r}")


def impact_sound(rng: np.random.Generator, cls: str, timbre: dict[str, Any], sr: int) -> np.ndarray:
    """One impact of unit peak: a transient then the class's resonance, fading smoothly to silence."""
    longest = timbre["tau"] if cls == "drum" else float(np.max(timbre["taus"]))
    n = int(max(timbre["length"], 4.0 * longest) * sr)
    t = np.arange(n) / sr
    if cls == "drum":
        f = timbre["f_lo"] + (timbre["f_hi"] - timbre["f_lo"]) * np.exp(-t / 0.05)
        body = np.sin(2 * np.pi * np.cumsum(f) / sr) * _decay(n, sr, timbre["tau"])
        noise = rng.standard_normal(n) * _decay(n, sr, 0.03)
        noise = np.convolve(noise, np.ones(8) / 8, mode="same")  # a crude low-pass: a thud, not a hiss
        out = body + timbre["noise"] * noise
    else:
        phases = rng.uniform(0, 2 * np.pi, len(timbre["freqs"]))
        out = np.zeros(n)
        for f, a, tau, p in zip(timbre["freqs"], timbre["amps"], timbre["taus"], phases, strict=True):
            if f < sr / 2:
                out += a * np.sin(2 * np.pi * f * t + p) * _decay(n, sr, tau)
        click = _click(rng, sr) * timbre["click"] * np.abs(out).max()
        out[: len(click)] += click
    attack = min(n, int(0.001 * sr))  # 1 ms fade-in: an onset, not a discontinuity
    out[:attack] *= np.linspace(0, 1, attack, endpoint=False)
    tail = n // 3  # fade the last third out: a cut-off tail would be a click, i.e. an unlabelled onset
    out[n - tail :] *= np.cos(np.linspace(0, np.pi / 2, tail)) ** 2
    return out / (np.abs(out).max() + 1e-9)


def engine_sound(rng: np.random.Generator, speed: np.ndarray, sr: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic hum: pitch and loudness follow speed (given at _SIM_RATE). Returns (wav (n,), loudness (n,))."""
    t_sim = np.arange(len(speed)) / _SIM_RATE
    v = np.interp(np.arange(n) / sr, t_sim, speed)
    rel = v / (speed.max() + 1e-9)  # 0..1
    f0 = rng.uniform(45, 70) * (1.0 + 0.9 * rel)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    out = sum((0.8**k) * np.sin(k * phase) for k in range(1, 7))
    rumble = np.convolve(rng.standard_normal(n), np.ones(16) / 16, mode="same") * 0.4
    loud = 0.1 + 0.9 * rel**1.5
    wav = (out / 3.0 + rumble) * loud
    return wav, loud


# ----------------------------------------------------------------------------------------------------------
# rendering


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy + 0.5, xx + 0.5


def draw_shape(canvas: np.ndarray, yy: np.ndarray, xx: np.ndarray, shape: str, cx: float, cy: float,
               r: float, colour: tuple[int, int, int]) -> None:
    """Draw one object (in place) on an (H, W, 3) uint8 canvas."""
    dx, dy = xx - cx, yy - cy
    dark = tuple(int(c * 0.55) for c in colour)
    if shape == "circle":
        d2 = dx * dx + dy * dy
        canvas[d2 <= r * r] = dark  # rim
        canvas[d2 <= (0.75 * r) ** 2] = colour
    elif shape == "square":
        canvas[(np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)] = colour
        canvas[(np.abs(dx + r * 0.3) <= r * 0.2) & (np.abs(dy + r * 0.3) <= r * 0.2)] = (245, 245, 250)
    elif shape == "bar":
        canvas[(np.abs(dx) <= r * 1.3) & (np.abs(dy) <= r * 0.5)] = colour
        canvas[(np.abs(dx) <= r * 1.3) & (np.abs(dy) <= r * 0.08)] = dark  # wood grain
    elif shape == "triangle":
        inside = (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
        canvas[inside] = colour
    elif shape == "car":
        canvas[(np.abs(dx) <= r * 1.4) & (dy <= r * 0.3) & (dy >= -r * 0.5)] = colour
        canvas[(np.abs(dx) <= r * 0.7) & (dy < -r * 0.5) & (dy >= -r * 0.95)] = colour
        for wx in (-0.85, 0.85):
            canvas[(dx - wx * r) ** 2 + (dy - r * 0.35) ** 2 <= (r * 0.38) ** 2] = (25, 25, 25)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random vertical gradient with a floor band. (H, W, 3) uint8"""
    top, bottom = rng.uniform(40, 140, 3), rng.uniform(40, 140, 3)
    ramp = np.linspace(0, 1, size)[:, None, None]
    img = (top * (1 - ramp) + bottom * ramp) * np.ones((1, size, 1))
    img[int(size * 0.9) :] = rng.uniform(20, 60, 3)
    return img.clip(0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------
# the scene


def render_scene(
    rng: np.random.Generator,
    seconds: float,
    fps: float = 25.0,
    size: int = 96,
    sample_rate: int = 16000,
    max_objects: int = 3,
    channels: int = 1,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One V2S scene: frames (L, H, W, 3) uint8, wav (S,) float32 in [-1, 1], labels (events, objects...).

    channels=2 gives wav (2, S): each on-screen source is panned (equal-power) by its x position at each
    moment (a car moving across the frame moves across the stereo image), off-screen hits come from the far
    left or right; the random draws are the same as for mono, so the two versions hold the same scene."""
    stereo = channels == 2
    st = np.zeros((2, int(round(seconds * sample_rate)))) if stereo else None
    scale = size / 96.0
    n_sim = int(round(seconds * _SIM_RATE))
    n_audio = int(round(seconds * sample_rate))
    n_frames = max(1, int(np.ceil(seconds * fps - 1e-6)))
    count = int(rng.integers(1, max_objects + 1))
    classes = list(rng.choice(CLASSES, size=count, replace=count > len(CLASSES)))
    if rng.random() < 0.75 and not any(c in IMPULSIVE for c in classes):
        classes[0] = str(rng.choice(IMPULSIVE))  # most scenes have something to hit
    objects: list[SceneObject] = []
    events: list[dict[str, Any]] = []
    continuous: list[dict[str, Any]] = []
    wav = np.zeros(n_audio)
    for i, cls in enumerate(classes):
        cls = str(cls)
        colour = tuple(int(np.clip(c + rng.integers(-15, 16), 0, 255)) for c in COLOURS[cls])
        radius = float(rng.uniform(6, 9)) * scale
        obj = SceneObject(i, cls, colour, radius)
        if cls in CONTINUOUS:
            obj.x, obj.y, obj.speed = _car(rng, n_sim, size, scale)
            hum, loud = engine_sound(rng, obj.speed, sample_rate, n_audio)
            gain = float(rng.uniform(0.15, 0.3))
            wav += gain * hum
            if stereo:
                sim = np.minimum((np.arange(n_audio) / sample_rate * _SIM_RATE).astype(int), n_sim - 1)
                st += gain * hum * _pan_gains(obj.x[sim] / size)
            frame_idx = np.minimum((np.arange(n_frames) / fps * _SIM_RATE).astype(int), n_sim - 1)
            continuous.append({"class": cls, "object": i, "gain": gain,
                               "speed": np.round(obj.speed[frame_idx] / scale, 2).tolist(),
                               "loudness": np.round(loud[(np.arange(n_frames) / fps * sample_rate).astype(int)
                                                         .clip(0, n_audio - 1)] * gain, 4).tolist()})
        else:
            obj.x, obj.y, hits = _bouncer(rng, n_sim, size, radius, scale, SHAPES[cls])
            timbre = _timbre(rng, cls)
            for time, speed, kind in hits:
                amp = float(min(1.0, speed / _REF_SPEED)) * float(rng.uniform(0.85, 1.0))
                sound = impact_sound(rng, cls, timbre, sample_rate) * amp
                _add(wav, sound, time, sample_rate)
                events.append({"time": round(time, 4), "class": cls, "amplitude": amp, "object": i,
                               "onscreen": True, "kind": kind})
                if stereo:
                    pan = float(np.clip(obj.x[min(int(time * _SIM_RATE), n_sim - 1)] / size, 0.0, 1.0))
                    _add_stereo(st, sound, time, sample_rate, pan)
                    events[-1]["pan"] = round(pan, 3)
        objects.append(obj)
    for _ in range(int(rng.integers(0, 3))):  # off-screen distractors, about 20 dB down
        cls = str(rng.choice(IMPULSIVE))
        time = float(rng.uniform(0.05, max(0.06, seconds - 0.2)))
        amp = float(rng.uniform(0.05, 0.12))
        sound = impact_sound(rng, cls, _timbre(rng, cls), sample_rate) * amp
        _add(wav, sound, time, sample_rate)
        events.append({"time": round(time, 4), "class": cls, "amplitude": amp, "object": None,
                       "onscreen": False, "kind": "offscreen"})
        if stereo:  # from outside the frame: alternately far left and far right
            pan = 0.05 if len(events) % 2 else 0.95
            _add_stereo(st, sound, time, sample_rate, pan)
            events[-1]["pan"] = pan
    noise = rng.standard_normal(n_audio) * 3e-4  # a noise floor: real silence is never digital zero
    wav += noise
    if stereo:
        wav = st + noise
    peak = float(np.abs(wav).max())
    gain = min(1.0, 0.9 / peak) if peak > 0 else 1.0
    wav *= gain
    for ev in events:
        ev["amplitude"] = round(ev["amplitude"] * gain, 4)
    for c in continuous:
        c["gain"] = round(c["gain"] * gain, 4)
        c["loudness"] = [round(v * gain, 4) for v in c["loudness"]]
    events.sort(key=lambda e: e["time"])
    frames = _render_frames(rng, objects, n_frames, fps, size)
    labels = {
        "objects": [o.label() for o in objects],
        "events": events,
        "continuous": continuous,
        "classes": sorted({o.cls for o in objects}),
    }
    return frames, wav.astype(np.float32), labels


def _pan_gains(pan: np.ndarray | float) -> np.ndarray:
    """Equal-power pan law: pan 0 = left, 1 = right -> gains (2, ...) with left^2 + right^2 = 1."""
    p = np.clip(np.asarray(pan, dtype=np.float64), 0.0, 1.0) * (np.pi / 2)
    return np.stack([np.cos(p), np.sin(p)])


def _add_stereo(st: np.ndarray, sound: np.ndarray, time: float, sr: int, pan: float) -> None:
    gains = _pan_gains(pan)
    for c in range(2):
        _add(st[c], sound * gains[c], time, sr)


def _add(wav: np.ndarray, sound: np.ndarray, time: float, sr: int) -> None:
    start = int(round(time * sr))
    if start >= len(wav):
        return
    stop = min(len(wav), start + len(sound))
    wav[start:stop] += sound[: stop - start]


def _render_frames(rng: np.random.Generator, objects: list[SceneObject], n_frames: int, fps: float,
                   size: int) -> np.ndarray:
    bg = background(rng, size)
    yy, xx = _grid(size)
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    n_sim = len(objects[0].x) if objects else 1
    for k in range(n_frames):
        j = min(int(round(k / fps * _SIM_RATE)), n_sim - 1)
        canvas = bg.copy()
        for obj in objects:
            draw_shape(canvas, yy, xx, SHAPES[obj.cls], float(obj.x[j]), float(obj.y[j]), obj.radius, obj.colour)
        frames[k] = canvas
    return frames
