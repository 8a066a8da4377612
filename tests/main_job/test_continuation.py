"""Continuation, inpainting and long videos window by window, through the Python API and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch

from tests.main_job.conftest import HERE, train_two_steps, vssflow
from tests.main_job.test_generate import moving_square
from vssflow.continuation import join_weights, join_zone, paste_given, plan_continuation
from vssflow.core.media import read_audio, write_audio

MICRO_PROMPT = HERE / "micro-prompt.yaml"
SR = 16000


@pytest.fixture(scope="module")
def pipe():
    from vssflow.generation import Pipeline
    from vssflow.registry.recipe import load_recipe

    return Pipeline.untrained(load_recipe(MICRO_PROMPT), device="cpu")


@pytest.fixture(scope="module")
def prompt_checkpoint(tmp_path_factory, synth_root) -> Path:
    """The micro recipe with the audio-prompt route, trained for two steps on CPU."""
    return train_two_steps(tmp_path_factory, MICRO_PROMPT, synth_root, "prompt-run")


def tone(path: Path, seconds: float, freq: float = 440.0) -> Path:
    t = torch.arange(round(seconds * SR)) / SR
    write_audio(path, 0.3 * torch.sin(2 * torch.pi * freq * t) * (1 + 0.5 * torch.sin(2 * torch.pi * 3 * t)), SR)
    return path


def test_windows_continue_from_the_first_unknown_frame():
    none = torch.zeros(250, dtype=torch.bool)
    assert plan_continuation(250, 100, 25, none) == [(0, 100), (75, 175), (150, 250)]
    prompt = none.clone()
    prompt[:40] = True  # a prompt shorter than half a window is seen whole
    assert plan_continuation(250, 100, 25, prompt) == [(0, 100), (75, 175), (150, 250)]
    gap = torch.ones(250, dtype=torch.bool)
    gap[120:140] = False  # one window around the span, with the given frames on both sides
    assert plan_continuation(250, 100, 25, gap) == [(95, 195)]
    assert plan_continuation(60, 100, 25, none) == [(0, 100)]  # shorter than a window: one padded window


def test_join_weights_rise_smoothly_and_mirror():
    w = join_weights(25)
    assert w.shape == (25,) and bool((w > 0).all()) and bool((w < 1).all())
    assert bool((w[1:] > w[:-1]).all())  # the new window fades in monotonically
    assert torch.allclose(w + w.flip(0), torch.ones(25), atol=1e-6)  # the fade out is the fade in reversed
    assert join_weights(0).shape == (0,)


def test_join_zone_is_written_audio_just_before_the_first_unknown_frame():
    given = torch.zeros(40, dtype=torch.bool)
    written = torch.zeros(40, dtype=torch.bool)
    written[:20] = True
    zone = join_zone(5, 35, given, written, 8)
    assert torch.nonzero(zone).flatten().tolist() == list(range(7, 15))  # clip frames 12..19
    given[:16] = True  # given audio is never rewritten: the zone stops at it
    written[:16] = False
    assert torch.nonzero(join_zone(5, 35, given, written, 8)).flatten().tolist() == [11, 12, 13, 14]
    assert not join_zone(5, 35, given, written, 0).any()  # no join zone: the hard join
    written[:] = False
    assert not join_zone(5, 35, given, written, 8).any()  # only given audio before: nothing to fade from


def test_windows_rewrite_their_join_zone_and_cross_fade_into_it(tmp_path, pipe, monkeypatch):
    """A 1.6 s clip of 1 s windows (100 latent frames), overlap 0.5 s, join zone 0.25 s: windows (0, 100),
    (50, 150), (60, 160); each continuing window knows the frames before its zone and fades in across it."""
    model = pipe.model
    calls, outs, decoded = [], [], []
    generate, decode = model.generate, model.codec.decode

    def record(conds, **k):
        out = generate(conds, **k)
        calls.append(conds["prompt"]["known"][0].clone())
        outs.append(out.latent[0].float().clone())
        return out

    monkeypatch.setattr(model, "generate", record)
    monkeypatch.setattr(model.codec, "decode", lambda z: decoded.append(z.clone()) or decode(z))
    video = moving_square(tmp_path / "v.mp4", 1.6, 25.0)
    wav = pipe.generate_clip(video, steps=2, join=0.25)
    assert wav.shape == (round(1.6 * SR),)
    assert len(calls) == 3 and not calls[0].any()
    assert torch.equal(calls[1], torch.arange(100) < 25)  # knows clip frames 50..74; 75..99 is its zone
    assert torch.equal(calls[2], torch.arange(100) < 65)  # clip frames 60..124 known; 125..149 its zone
    z, w = decoded[0][0], join_weights(25)[:, None]
    assert z.shape[0] == 160
    assert torch.equal(z[:75], outs[0][:75])  # the earlier window is untouched before the zone
    assert torch.allclose(z[75:100], (1 - w) * outs[0][75:100] + w * outs[1][25:50], atol=1e-6)
    assert torch.equal(z[100:125], outs[1][50:75])
    assert torch.allclose(z[125:150], (1 - w) * outs[1][75:100] + w * outs[2][65:90], atol=1e-6)
    assert torch.equal(z[150:], outs[2][90:])
    calls.clear()
    pipe.generate_clip(video, steps=2, join=0.0)  # no zone: each window knows everything before it
    assert torch.equal(calls[1], torch.arange(100) < 50) and torch.equal(calls[2], torch.arange(100) < 90)
    calls.clear()
    pipe.generate_clip(video, steps=2)  # by default the zone is 3/4 of the overlap: 38 of 50 frames
    assert torch.equal(calls[1], torch.arange(100) < 12) and torch.equal(calls[2], torch.arange(100) < 52)


def test_paste_keeps_given_samples_and_fades_inside_the_generated_run():
    from vssflow.continuation import GivenAudio

    given = torch.ones(100, dtype=torch.bool)
    given[40:70] = False
    out = paste_given(torch.zeros(100), GivenAudio(torch.ones(100), given), fade=5)
    assert torch.equal(out[:40], torch.ones(40)) and torch.equal(out[70:], torch.ones(30))
    assert torch.all(out[45:65] == 0) and 0 < float(out[40]) < 1 and 0 < float(out[69]) < 1


def test_continuation_keeps_the_prompt_and_lasts_as_long_as_the_video(tmp_path, pipe):
    video = moving_square(tmp_path / "v.mp4", 2.4, 25.0)
    prompt = tone(tmp_path / "p.wav", 0.4)
    wav = pipe.generate_clip(video, prompt_audio=prompt, steps=2)
    assert wav.shape == (round(2.4 * SR),)
    given, _ = read_audio(prompt, SR)
    assert torch.allclose(wav[: given.shape[0]], given, atol=1e-6)  # the given seconds, exactly
    assert wav[given.shape[0] + 400 :].abs().max() > 0  # the rest is generated


def test_join_zones_never_touch_the_given_latents(tmp_path, pipe, monkeypatch):
    from vssflow.continuation import GivenAudio, known_latents

    decoded = []
    decode = pipe.model.codec.decode
    monkeypatch.setattr(pipe.model.codec, "decode", lambda z: decoded.append(z.clone()) or decode(z))
    video = moving_square(tmp_path / "v.mp4", 2.4, 25.0)
    prompt = tone(tmp_path / "p.wav", 0.8)  # longer than half a window: the next window starts inside it
    pipe.generate_clip(video, prompt_audio=prompt, steps=2, join=0.5)
    given, _ = read_audio(prompt, SR)
    full = torch.cat([given, torch.zeros(round(2.4 * SR) - given.shape[0])])
    mask = torch.arange(full.shape[0]) < given.shape[0]
    z, known = known_latents(pipe.model, GivenAudio(full, mask), 240)
    assert int(known.sum()) == 80
    assert torch.equal(decoded[0][0, known], z[known])


def test_inpainting_leaves_audio_outside_the_span_unchanged(tmp_path, pipe):
    video = moving_square(tmp_path / "v.mp4", 2.0, 25.0)
    existing = tone(tmp_path / "a.wav", 2.0, 300.0)
    wav = pipe.generate_clip(video, inpaint=(0.8, 1.3), audio=existing, steps=2)
    ref, _ = read_audio(existing, SR)
    a, b = round(0.8 * SR), round(1.3 * SR)
    assert wav.shape == ref.shape
    assert torch.allclose(wav[:a], ref[:a], atol=1e-6) and torch.allclose(wav[b:], ref[b:], atol=1e-6)
    fade = round(0.02 * SR)
    assert not torch.allclose(wav[a + fade : b - fade], ref[a + fade : b - fade], atol=1e-3)


def test_long_videos_continue_window_by_window_by_default(tmp_path, pipe, monkeypatch):
    import vssflow.continuation as cont

    calls = []
    original = cont.generate_continued
    monkeypatch.setattr(cont, "generate_continued", lambda *a, **k: calls.append(1) or original(*a, **k))
    video = moving_square(tmp_path / "long.mp4", 3.2, 25.0)
    wav = pipe.generate_clip(video, steps=2)
    assert wav.shape == (round(3.2 * SR),) and calls == [1]
    fade = pipe.generate_clip(video, steps=2, long="crossfade")
    assert fade.shape == wav.shape and calls == [1]


def test_cli_trains_the_prompt_route_and_inpaints(tmp_path, prompt_checkpoint):
    video = moving_square(tmp_path / "in.mp4", 2.0, 25.0)
    existing = tone(tmp_path / "a.wav", 2.0, 300.0)
    out = tmp_path / "out"
    done = vssflow("generate", "--checkpoint", str(prompt_checkpoint), "--video", str(video), "--inpaint", "0.5:1.0",
                   "--audio", str(existing), "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    wav, rate = sf.read(str(out / "in.wav"), dtype="float32")
    ref, _ = sf.read(str(existing), dtype="float32")
    assert rate == SR and len(wav) == len(ref)
    a = round(0.5 * SR)
    assert abs(wav[:a] - ref[:a]).max() < 1e-3  # 16-bit wav files: one quantisation step
    done = vssflow("generate", "--checkpoint", str(prompt_checkpoint), "--video", str(video), "--prompt-audio",
                   str(existing), "--long", "crossfade", "--out", str(tmp_path / "out2"))
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("fields, message", [
    ({"inpaint": (0.5, 1.0)}, "--inpaint needs the soundtrack it changes: --audio FILE"),
    ({"audio": "{a}"}, "pass --inpaint START:END with it"),
    ({"inpaint": (5.0, 6.0), "audio": "{a}"}, "starts after the video's end"),
    ({"prompt_audio": "{a}", "inpaint": (0.0, 1.0), "audio": "{a}"}, "pass one of them"),
    ({"voice_prompt": "{a}", "prompt_audio": "{a}"}, "cannot be combined with --prompt-audio or --inpaint"),
    ({"prompt_audio": "{missing}"}, "audio not found"),
])
def test_prompt_mistakes_are_refused_before_generating(tmp_path, pipe, fields, message):
    from vssflow.core.errors import VssflowError
    from vssflow.generation import ClipRequest

    video = moving_square(tmp_path / "in.mp4", 1.0, 25.0)
    a = tone(tmp_path / "a.wav", 1.0)
    values = {k: (v.format(a=a, missing=tmp_path / "no.wav") if isinstance(v, str) else v) for k, v in fields.items()}
    with pytest.raises(VssflowError, match=message):
        pipe.check(ClipRequest(video, **values))


def test_cli_refuses_a_prompt_mistake_in_one_line(tmp_path, prompt_checkpoint):
    video = moving_square(tmp_path / "in.mp4", 1.0, 25.0)
    done = vssflow("generate", "--checkpoint", str(prompt_checkpoint), "--video", str(video), "--out",
                   str(tmp_path / "o"), "--inpaint", "0.5:1.0")
    assert done.returncode != 0 and "--inpaint needs the soundtrack it changes: --audio FILE" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_cli_refuses_continuation_without_the_route(tmp_path, micro_checkpoint):
    video = moving_square(tmp_path / "in.mp4", 2.0, 25.0)
    done = vssflow("generate", "--checkpoint", str(micro_checkpoint), "--video", str(video), "--long",
                   "continuation", "--out", str(tmp_path / "o"))
    assert done.returncode != 0 and "has no audio-prompt route" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = vssflow("generate", "--checkpoint", str(micro_checkpoint), "--video", str(video), "--prompt-audio",
                   str(tone(tmp_path / "a.wav", 0.5)), "--out", str(tmp_path / "o"))
    assert done.returncode != 0 and "--prompt-audio and --inpaint need a checkpoint" in done.stderr


def test_a_voice_prompt_goes_before_the_clip_and_moves_its_conditions(tmp_path, pipe, monkeypatch):
    from vssflow.continuation import prompt_frames

    model = pipe.model
    calls = []
    original = model.generate
    monkeypatch.setattr(model, "generate", lambda conds, **k: calls.append(conds) or original(conds, **k))
    video = moving_square(tmp_path / "v.mp4", 1.6, 25.0)
    ref = tone(tmp_path / "voice.wav", 0.33, 220.0)
    wav = pipe.generate_clip(video, voice_prompt=ref, steps=2)
    assert wav.shape == (round(1.6 * SR),)  # the clip only, not the reference
    r = prompt_frames(model, 0.33)
    assert r == 20  # 0.2 s: whole frames of the 5 and 25 fps video inputs, at most half the 1 s window
    first = calls[0]
    voice, _ = read_audio(ref, SR)
    z = model.codec.encode(voice[None, : r * model.codec.hop_length])
    assert first["prompt"]["known"][0, :r].all() and not first["prompt"]["known"][0, r:].any()
    assert torch.allclose(first["prompt"]["x"][0, :r], z[0, :r])
    assert not first["sync"]["mask"][0, :5].any() and first["sync"]["mask"][0, 5:].all()  # 0.2 s at 25 fps
    assert not first["video"]["mask"][0, :1].any() and first["video"]["mask"][0, 1:].all()  # 0.2 s at 5 fps
    assert len(calls) == 3  # the first window writes 0.8 s of the clip; 0.5 s new per window after it


def test_cli_voice_prompt_generates_the_clip_only_and_records_the_prompt(tmp_path, prompt_checkpoint):
    import json

    video = moving_square(tmp_path / "talk.mp4", 1.6, 25.0)
    voice = tone(tmp_path / "voice.wav", 0.5, 220.0)
    out = tmp_path / "out"
    done = vssflow("generate", "--checkpoint", str(prompt_checkpoint), "--video", str(video), "--voice-prompt",
                   str(voice), "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    wav, rate = sf.read(str(out / "talk.wav"), dtype="float32")
    assert rate == SR and len(wav) == round(1.6 * SR)  # the clip, not the reference before it
    assert abs(wav).max() > 0
    record = json.loads((out / "generated.jsonl").read_text().splitlines()[0])
    assert record["voice_prompt"] == str(voice)
    done = vssflow("generate", "--checkpoint", str(prompt_checkpoint), "--video", str(video), "--voice-prompt",
                   str(tmp_path / "nobody.wav"), "--out", str(tmp_path / "o"))
    assert done.returncode != 0 and "nobody.wav: voice prompt not found" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    done = vssflow("generate", "--checkpoint", str(prompt_checkpoint), "--video", str(video), "--join", "-1",
                   "--out", str(tmp_path / "o"))
    assert done.returncode != 0 and "expected seconds >= 0" in done.stderr and not (tmp_path / "o").exists()
