"""Audio prompts at generation: continuation of given audio, inpainting a span, and long videos window by
window, each window continuing the latents of the one before (docs/continuation.md).

A checkpoint has the audio-prompt route when its recipe has a condition with a `PromptEncoder`
(`audio-prompt`). Generation then works on one latent sequence for the whole clip:

    known frames   from the codec's encoding of given audio (--prompt-audio: its first seconds;
                   --inpaint START:END --audio FILE: everything outside the span)
    windows        in order; each starts `overlap` seconds before its first unknown frame, so the model sees
                   the tail of what is already there (given or generated) as known frames, and writes the rest
    join zone      the last `join` seconds an earlier window wrote before a window's first unknown frame are
                   not given to it: it writes them again, and the two versions are cross-faded there in latent
                   space (raised-cosine weights that sum to 1), so a window both continues the audio before it
                   and joins it through a cross-fade; given audio is never in a join zone
    output         the finished latent sequence decoded ONCE (no seam from decoding), trimmed to the video;
                   given audio is then put back exactly where it was given, with a short cross-fade into the
                   generated part

Long transcripts (VisualTTS over several windows) are split at word boundaries in proportion to visible
mouth activity (`word_times`), or by given word timings, and each window gets the words that fall in it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vssflow.core.errors import ContractError, MediaError

log = logging.getLogger("vssflow.generate")

LONG_MODES = ("continuation", "crossfade")
FADE_S = 0.02  # cross-fade from given audio into generated audio
JOIN_FRACTION = 0.75  # default join zone: this share of the overlap a continuing window rewrites and fades into


def prompt_route(model: Any) -> str | None:
    """The name of the model's audio-prompt condition, or None when it has none."""
    names = getattr(model, "prompt_names", [])
    return names[0] if names else None


def resolve_long(pipe: Any, long: str | None) -> str:
    """`continuation` (default when the checkpoint has the audio-prompt route) or `crossfade`."""
    has = prompt_route(pipe.model) is not None
    if long is None:
        return "continuation" if has else "crossfade"
    if long not in LONG_MODES:
        raise ContractError(f"--long must be one of {', '.join(LONG_MODES)}, got {long!r}")
    if long == "continuation" and not has:
        raise ContractError(f"{pipe.source} has no audio-prompt route, so it cannot continue windows; use "
                            "--long crossfade or a checkpoint trained with one (e.g. recipes/v2s-tiny-prompt.yaml)")
    return long


def check_prompt_request(pipe: Any, request: Any, seconds: float) -> None:
    """Refuse a prompt or inpainting request the checkpoint or the files cannot serve (one line each)."""
    if request.voice_prompt is not None:
        if prompt_route(pipe.model) is None:
            raise ContractError(f"{pipe.source} has no audio-prompt route; --voice-prompt needs a checkpoint trained "
                                "with one (e.g. recipes/visualtts-tiny-prompt.yaml)")
        if request.prompt_audio is not None or request.inpaint is not None:
            raise ContractError("--voice-prompt goes before generated audio; it cannot be combined with "
                                "--prompt-audio or --inpaint")
        if not Path(request.voice_prompt).is_file():
            raise MediaError(f"{request.voice_prompt}: voice prompt not found")
    wants = request.prompt_audio is not None or request.inpaint is not None
    if not wants:
        if request.audio is not None:
            raise ContractError("--audio gives the soundtrack to inpaint; pass --inpaint START:END with it")
        return
    if prompt_route(pipe.model) is None:
        raise ContractError(f"{pipe.source} has no audio-prompt route; --prompt-audio and --inpaint need a checkpoint "
                            "trained with one (e.g. recipes/v2s-tiny-prompt.yaml)")
    if request.prompt_audio is not None and request.inpaint is not None:
        raise ContractError("--prompt-audio and --inpaint are two uses of given audio; pass one of them")
    if request.inpaint is not None:
        start, end = request.inpaint
        if request.audio is None:
            raise ContractError("--inpaint needs the soundtrack it changes: --audio FILE")
        if not 0 <= start < end:
            raise ContractError(f"--inpaint {start}:{end}: the span must satisfy 0 <= START < END")
        if start >= seconds:
            raise ContractError(f"--inpaint {start}:{end}: starts after the video's end ({seconds:.2f} s)")
    path = request.prompt_audio if request.prompt_audio is not None else request.audio
    if not Path(path).is_file():
        raise MediaError(f"{path}: audio not found")


@dataclass
class GivenAudio:
    """Audio the user gives for a clip: wav (S,) at the model's rate and which samples are given (S,) bool."""

    wav: Tensor
    given: Tensor


def given_audio(request: Any, total: int, sample_rate: int) -> GivenAudio | None:
    """The given samples of a request over `total` output samples, or None without a prompt or inpainting."""
    from vssflow.core.media import read_audio

    if request.prompt_audio is None and request.inpaint is None:
        return None
    path = request.prompt_audio if request.prompt_audio is not None else request.audio
    wav, _ = read_audio(path, sample_rate)
    wav = wav[:total]
    given = torch.zeros(total, dtype=torch.bool)
    if request.prompt_audio is not None:
        given[: wav.shape[0]] = True
    else:
        start, end = request.inpaint
        given[: wav.shape[0]] = True
        given[round(start * sample_rate) : round(end * sample_rate)] = False
    full = torch.zeros(total)
    full[: wav.shape[0]] = wav
    return GivenAudio(full, given)


def known_latents(model: Any, given: GivenAudio, frames: int) -> tuple[Tensor, Tensor]:
    """The codec's latents of given audio (frames, C) and the frames made of given samples only (frames,)."""
    hop = model.codec.hop_length
    device = next(model.backbone.parameters()).device
    with torch.no_grad():
        z = model.codec.encode(given.wav[None].to(device))[0].float().cpu()  # (T', C)
    out = torch.zeros(frames, z.shape[-1])
    n = min(frames, z.shape[0])
    out[:n] = z[:n]
    mask = torch.zeros(frames * hop, dtype=torch.bool)
    m = min(mask.shape[0], given.given.shape[0])
    mask[:m] = given.given[:m]
    known = mask.view(frames, hop).all(1)
    known[n:] = False
    return out, known


def prompt_frames(model: Any, seconds: float) -> int:
    """Latent frames a reference recording of `seconds` takes before the clip: at most half a window, and a
    whole number of frames of every time-aligned raw input (video at 25 and 10 fps: multiples of 0.2 s), so
    the clip's conditions shift by whole frames."""
    spec = model.spec
    rates = [e.contract.fps for e in model.encoders.values()
             if e.contract.modality in ("video", "features") and e.contract.fps]
    limit = spec.num_frames // 2
    frames = min(limit, max(1, round(seconds * spec.latent_fps)))
    while frames > 0:
        if all(abs(frames * f / spec.latent_fps - round(frames * f / spec.latent_fps)) < 1e-6 for f in rates):
            return frames
        frames -= 1
    return 0


def shift_conditions(model: Any, conditions: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Batch-format conditions of a window moved `seconds` later in it: time-aligned inputs get that many
    masked (absent) frames in front and lose as many at the end; transcript spans and times move too."""
    out = {}
    for name, entry in conditions.items():
        mod = model.encoders[name].contract.modality
        fps = model.encoders[name].contract.fps
        entry = dict(entry)
        if mod in ("video", "features") and fps:
            n = round(seconds * fps)
            x, mask = entry["x"], entry["mask"]
            length = x.shape[1]
            entry["x"] = torch.cat([x.new_zeros(x.shape[0], n, *x.shape[2:]), x], dim=1)[:, :length]
            entry["mask"] = torch.cat([mask.new_zeros(mask.shape[0], n), mask], dim=1)[:, :length]
        elif mod == "transcript":
            for key in ("span", "times"):
                if key in entry:
                    entry[key] = entry[key] + seconds
        out[name] = entry
    return out


def plan_continuation(total: int, window: int, overlap: int, known: Tensor) -> list[tuple[int, int]]:
    """Windows [start, start + window) in latent frames, in generation order, until every frame of
    [0, total) is known: each starts `overlap` frames before its first unknown frame (at 0 when the known
    frames before it fit in half a window, so a short prompt is seen whole), and never past total - window."""
    done = known[:total].clone()
    windows = []
    while not bool(done.all()):
        first = int(torch.nonzero(~done)[0])
        start = 0 if first <= window // 2 else first - overlap
        start = max(0, min(start, total - window)) if total > window else 0
        windows.append((start, start + window))
        done[start : min(start + window, total)] = True
    return windows


def join_weights(n: int) -> Tensor:
    """The new window's weights (n,) across a join zone of n latent frames, rising from 0 to 1 exclusive
    (raised cosine); the earlier window's weights are 1 minus these, so each frame's weights sum to 1."""
    t = torch.arange(1, n + 1, dtype=torch.float64) / (n + 1)
    return (0.5 - 0.5 * torch.cos(torch.pi * t)).float()


def join_zone(start: int, end: int, given: Tensor, written: Tensor, join: int) -> Tensor:
    """Which frames of the window [start, end) form its join zone (end - start,) bool: the last `join`
    frames before its first unknown frame that an earlier window wrote (never given frames), contiguous up
    to that frame. Empty when nothing was written just before it or `join` is 0."""
    zone = torch.zeros(end - start, dtype=torch.bool)
    known = given[start:end] | written[start:end]
    unknown = torch.nonzero(~known).flatten()
    if join <= 0 or unknown.numel() == 0:
        return zone
    first = int(unknown[0])
    f = first - 1
    while f >= 0 and first - f <= join and bool(written[start + f]) and not bool(given[start + f]):
        zone[f] = True
        f -= 1
    return zone


def paste_given(generated: Tensor, given: GivenAudio, fade: int) -> Tensor:
    """Generated audio (S,) with the given samples put back exactly; each generated run fades in from the
    given audio over its first `fade` samples and out over its last ones (inside the run, so the given
    audio is untouched)."""
    n = generated.shape[0]
    w = given.given[:n].to(generated.dtype).clone()  # 1 = given
    g = given.given[:n]
    edges = torch.nonzero(g[1:] != g[:-1]).flatten() + 1
    bounds = [0, *edges.tolist(), n]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if bool(g[a]):
            continue
        f = min(fade, (b - a) // 2)
        if f <= 0:
            continue
        ramp = torch.linspace(1, 0, f + 2, dtype=w.dtype)[1:-1]
        if a > 0:
            w[a : a + f] = torch.maximum(w[a : a + f], ramp)
        if b < n:
            w[b - f : b] = torch.maximum(w[b - f : b], ramp.flip(0))
    return w * given.wav[:n].to(generated.dtype) + (1 - w) * generated


# ------------------------------------------------------------------------------------------------------------
# long transcripts


def mouth_activity(pipe: Any, video: Path, fps: float = 25.0) -> tuple[Tensor, float]:
    """Visible mouth motion per video frame (L,) at `fps`: mean absolute change of the mouth region's luma
    between frames. The region is the model's lip encoder's crop when it has one, else the lower middle of
    the frame (a face crop's mouth)."""
    from vssflow.core.media import read_video

    lip = next((e for e in pipe.model.encoders.values() if hasattr(e, "mouths")), None)
    size = lip.contract.size if lip is not None else (96, 96)
    frames = read_video(video, fps=fps, size=size).frames  # (L, 3, H, W)
    if lip is not None:
        with torch.no_grad():
            crops = lip.mouths(frames[None].to(next(lip.parameters(), torch.empty(0)).device))[0].float().cpu()
    else:
        y = 0.299 * frames[:, 0] + 0.587 * frames[:, 1] + 0.114 * frames[:, 2]  # (L, H, W)
        h, w = y.shape[-2:]
        crops = y[:, round(0.6 * h) : round(0.95 * h), round(0.25 * w) : round(0.75 * w)]
    # the crop's sorted luma values: the mouth opening (dark inside, teeth) changes them, a slight head
    # motion that shifts the crop by a pixel or two hardly does
    values = crops.flatten(1).sort(dim=1).values  # (L, P)
    diff = (values[1:] - values[:-1]).abs().mean(1)  # (L - 1,)
    activity = torch.cat([diff[:1], diff]) if diff.numel() else torch.zeros(crops.shape[0])
    return speaking(activity, fps), fps


def speaking(activity: Tensor, fps: float, smooth_s: float = 0.2, level: float = 0.45) -> Tensor:
    """Where the mouth moves, (L,) in {0, 1}: frame changes averaged over `smooth_s` (a mouth is still for a
    frame or two inside a word), above `level` x their 90th percentile. Speech is laid over these frames
    evenly, so bursts of motion do not pull words towards them."""
    if activity.numel() == 0:
        return activity
    k = max(1, round(smooth_s * fps)) | 1  # odd
    smooth = torch.nn.functional.avg_pool1d(activity[None, None].float(), k, 1, k // 2, count_include_pad=False)[0, 0]
    top = float(torch.quantile(smooth, 0.9))
    if top <= 0:
        return torch.zeros_like(smooth)
    return (smooth > level * top).float()


def word_weights(words: Sequence[str], tokenizer: Any) -> list[float]:
    """How long each word takes, in spoken phonemes (its letters without a tokenizer), at least one."""
    from vssflow.core.phonemes import spoken_phonemes

    out = []
    for w in words:
        n = spoken_phonemes(tokenizer, w) if tokenizer is not None else sum(ch.isalnum() for ch in w)
        out.append(float(max(1, n)))
    return out


def word_times(words: Sequence[str], weights: Sequence[float], activity: Tensor, fps: float,
               span: tuple[float, float] | None = None) -> list[tuple[float, float]]:
    """(start, end) seconds per word: the words, in order and with their weights, laid over time so that each
    takes a share of the cumulative mouth activity equal to its share of the weights (outside `span`, if
    given, there is no speech)."""
    a = activity.double().clamp_min(0)
    t = torch.arange(a.shape[0] + 1, dtype=torch.float64) / fps  # frame edges
    if span is not None:
        centres = (torch.arange(a.shape[0], dtype=torch.float64) + 0.5) / fps
        a = torch.where((centres >= span[0]) & (centres < span[1]), a, torch.zeros_like(a))
    if float(a.sum()) <= 0:  # no visible speech: spread the words evenly
        a = torch.ones_like(a)
    cum = torch.cat([torch.zeros(1, dtype=torch.float64), a.cumsum(0)])
    cum = cum / cum[-1]
    w = torch.tensor(list(weights), dtype=torch.float64)
    edges = torch.cat([torch.zeros(1, dtype=torch.float64), w.cumsum(0) / w.sum()])
    return [(_at(cum, t, float(edges[i]), start=True), _at(cum, t, float(edges[i + 1]), start=False))
            for i in range(len(words))]


def _at(cum: Tensor, t: Tensor, level: float, start: bool) -> float:
    """The time where the cumulative share `cum` (over edges `t`) reaches `level`: a word starts at the last
    such time (after any still stretch before it) and ends at the first."""
    n = cum.shape[0] - 1
    q = torch.tensor([level], dtype=cum.dtype)
    if start:
        j = int(torch.searchsorted(cum, q, right=True)) - 1
        j = min(max(j, 0), n - 1)
        lo, hi = j, j + 1
    else:
        j = int(torch.searchsorted(cum, q, right=False))
        j = min(max(j, 1), n)
        lo, hi = j - 1, j
    step = float(cum[hi] - cum[lo])
    frac = (level - float(cum[lo])) / step if step > 0 else (0.0 if start else 1.0)
    return float(t[lo] + min(max(frac, 0.0), 1.0) * (t[hi] - t[lo]))


@dataclass
class WindowSpeech:
    """The words one window speaks and where: transcript (None: no speech) and span (seconds in the clip)."""

    transcript: str | None
    span: tuple[float, float] | None


def split_transcript(pipe: Any, request: Any, windows: Sequence[tuple[float, float]],
                     owned: Sequence[tuple[float, float]] | None = None) -> list[WindowSpeech]:
    """The request's transcript per window, split at word boundaries.

    windows: (start, end) seconds of each window; owned: the part of the clip each window is responsible
    for (cross-fade: windows split at overlap midpoints). A word goes to every window its centre falls in
    (continuation: a window also hears the words of its known context), or to the window that owns it.
    Word timings come from `request.meta["word_times"]` ([[word, start, end], ...]) when given, else from
    mouth activity (`word_times`).
    """
    words = request.transcript.split()
    given = request.meta.get("word_times") if request.meta else None
    if given:
        if [str(w[0]) for w in given] != words:
            raise ContractError("word_times must list the transcript's words in order")
        times = [(float(w[1]), float(w[2])) for w in given]
    else:
        activity, fps = mouth_activity(pipe, request.video)
        times = word_times(words, word_weights(words, pipe.tokenizer), activity, fps, request.speech_span)
    out = []
    regions = owned if owned is not None else windows
    for (w0, w1), (o0, o1) in zip(windows, regions, strict=True):
        mine = [i for i, (s, e) in enumerate(times) if o0 <= (s + e) / 2 < o1]
        if not mine:
            out.append(WindowSpeech(None, None))
            continue
        span = (max(w0, times[mine[0]][0]), min(w1, times[mine[-1]][1]))
        out.append(WindowSpeech(" ".join(words[i] for i in mine), span))
    return out


def needs_split(pipe: Any, request: Any, seconds: float, room: float | None = None) -> bool:
    """Whether a request's speech is longer than the `room` of one window (default: the whole window); its
    transcript is then split per window."""
    room = pipe.window_s if room is None else room
    if not request.transcript:
        return False
    span = request.speech_span or (0.0, seconds)
    return span[1] - span[0] > room + 1e-6 and seconds > room + 1e-6


def owned_regions(windows: Sequence[tuple[float, float]], total: float) -> list[tuple[float, float]]:
    """Cross-fade windows split at the middle of each overlap: the part of the clip each one speaks."""
    out = []
    for k, (s, e) in enumerate(windows):
        left = 0.0 if k == 0 else (s + windows[k - 1][1]) / 2
        right = total + 1.0 if k + 1 == len(windows) else (windows[k + 1][0] + e) / 2
        out.append((left, right))
    return out


# ------------------------------------------------------------------------------------------------------------
# generation


def generate_continued(
    pipe: Any, request: Any, seconds: float, *, sampler: Any = None, steps: int | None = None,
    guidance: float | None = None, seed: int = 0, overlap: float = 1.0, join: float | None = None,
    conditioned: bool = True, use_bf16: bool = False,
) -> tuple[Tensor, list[tuple[float, float]]]:
    """One clip by continuation: (waveform (S,) exactly `seconds` long, the windows in seconds).

    Given audio (prompt or inpainting) fixes known frames; windows run in order, each with the known frames
    in it (given, or written by an earlier window) as its audio prompt, except its join zone: the last
    `join` seconds (default `JOIN_FRACTION` of the overlap; at most the overlap less one frame) an earlier
    window wrote before its first unknown frame, which it writes again and cross-fades into (`join_zone`,
    `join_weights`). join=0: the window's new audio starts right after the known audio.
    """
    from vssflow.core.windows import Window
    from vssflow.generation import clip_seed

    model, spec, sr = pipe.model, pipe.model.spec, pipe.sample_rate
    name = prompt_route(model)
    hop = model.codec.hop_length
    total_samples = round(seconds * sr)
    total = max(1, -(-total_samples // hop))  # latent frames covering the clip
    window = spec.num_frames
    overlap_frames = max(1, min(round(overlap * spec.latent_fps), window // 2))
    if join is not None and join < 0:
        raise ContractError(f"--join must be at least 0 seconds, got {join}")
    join_frames = round(JOIN_FRACTION * overlap_frames) if join is None else round(join * spec.latent_fps)
    join_frames = min(join_frames, overlap_frames - 1)  # the window knows at least one frame before it
    length = max(total, window)
    latents = torch.zeros(length, model.latent_channels)
    known = torch.zeros(length, dtype=torch.bool)
    given = given_audio(request, total_samples, sr)
    if given is not None:
        z, k = known_latents(model, given, total)
        latents[:total], known[:total] = z, k
        if bool(k.all()):
            log.info("%s: every frame is given; nothing to generate", request.clip_id)
    fixed = known.clone()  # given frames: no window changes them
    fps = spec.latent_fps
    device = next(model.backbone.parameters()).device
    voice = _voice_prompt(pipe, request)  # (reference latents (r, C), r) or None
    lead: list[tuple[float, float]] = []
    after = known
    if voice is not None:
        own = min(window - voice[1], total)  # the clip frames the voice-prompted first window writes
        lead = [(0.0, own / fps)]
        after = known.clone()
        after[:own] = True
    plan = plan_continuation(total, window, overlap_frames, after)
    bounds = lead + [(s / fps, e / fps) for s, e in plan]
    room = (window - voice[1]) / fps if voice is not None else pipe.window_s
    speech = split_transcript(pipe, request, bounds) if needs_split(pipe, request, seconds, room) else None
    if voice is not None:
        _voice_window(pipe, request, voice, total, latents, known, speech[0] if speech else None, seed=seed,
                      sampler=sampler, steps=steps, guidance=guidance, conditioned=conditioned, use_bf16=use_bf16)
    for j, (s, e) in enumerate(plan, start=len(lead)):
        win = Window(s / fps, window / fps, window / fps)
        record = pipe._record(request, win, speech[j] if speech is not None else None)
        conds = pipe._conditions([record], [request]) if conditioned else {}
        zone = join_zone(s, e, fixed, known & ~fixed, join_frames)
        k = known[s:e] & ~zone
        conds[name] = {"x": latents[None, s:e].to(device), "known": k[None].to(device),
                       "present": torch.tensor([bool(k.any())], device=device)}
        negative = None
        if conditioned and request.negative:
            negative = pipe._conditions([pipe._negative_record(record, request)], [request], negative=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = model.generate(conds, batch_size=1, steps=steps, guidance=guidance, sampler=sampler,
                                 seeds=[clip_seed(seed, request.clip_id, j)], negative=negative, decode=False)
        new = out.latent[0].float().cpu()
        if bool(zone.any()):  # the earlier window fades out as this one fades in
            w = join_weights(int(zone.sum()))[:, None]
            new[zone] = (1 - w) * latents[s:e][zone] + w * new[zone]
        latents[s:e] = torch.where(k[:, None], latents[s:e], new)
        known[s:e] = True
    with torch.no_grad():
        mel = model.codec.decode(latents[None, :total].to(device))
        wav = model.vocoder(mel)[0].float().cpu()
    wav = wav[:total_samples]
    if wav.shape[0] < total_samples:
        wav = torch.cat([wav, wav.new_zeros(total_samples - wav.shape[0])])
    if given is not None:
        wav = paste_given(wav, given, round(FADE_S * sr))
    return wav, bounds


def _voice_prompt(pipe: Any, request: Any) -> tuple[Tensor, int] | None:
    """The voice prompt's latents (r, C) and r, its frames before the clip (`prompt_frames`), or None."""
    from vssflow.core.media import read_audio

    if request.voice_prompt is None:
        return None
    model = pipe.model
    ref, _ = read_audio(request.voice_prompt, pipe.sample_rate)
    r = prompt_frames(model, ref.shape[0] / pipe.sample_rate)
    if r == 0:
        raise ContractError(f"{request.voice_prompt}: the voice prompt is shorter than one latent frame")
    device = next(model.backbone.parameters()).device
    with torch.no_grad():
        z = model.codec.encode(ref[None, : r * model.codec.hop_length].to(device))[0].float().cpu()
    out = torch.zeros(r, model.latent_channels)
    out[: min(r, z.shape[0])] = z[:r]
    return out, r


def _voice_window(pipe: Any, request: Any, voice: tuple[Tensor, int], total: int, latents: Tensor,
                  known: Tensor, part: WindowSpeech | None, *, seed: int, sampler: Any, steps: int | None,
                  guidance: float | None, conditioned: bool, use_bf16: bool) -> None:
    """The first window as [reference | the clip's first seconds]: the reference's latents known, the clip's
    conditions moved after it (`shift_conditions`); its generated part fills the clip's first frames
    (`latents` and `known` are updated)."""
    from vssflow.core.windows import Window
    from vssflow.generation import clip_seed

    model, spec = pipe.model, pipe.model.spec
    name, window, fps = prompt_route(model), spec.num_frames, spec.latent_fps
    z, r = voice
    x = torch.zeros(window, model.latent_channels)
    x[:r] = z
    k = torch.zeros(window, dtype=torch.bool)
    k[:r] = True
    own = min(window - r, total)
    device = next(model.backbone.parameters()).device
    record = pipe._record(request, Window(0.0, window / fps, window / fps), part)
    conds = pipe._conditions([record], [request]) if conditioned else {}
    conds = shift_conditions(model, conds, r / fps)
    conds[name] = {"x": x[None].to(device), "known": k[None].to(device), "present": torch.tensor([True], device=device)}
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
        out = model.generate(conds, batch_size=1, steps=steps, guidance=guidance, sampler=sampler,
                             seeds=[clip_seed(seed, request.clip_id, 0)], decode=False)
    latents[:own] = torch.where(known[:own, None], latents[:own], out.latent[0, r : r + own].float().cpu())
    known[:own] = True
