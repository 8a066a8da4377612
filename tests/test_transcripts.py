"""Transcript checks at generation: nothing speakable, too many phonemes for the span, control characters,
another script than the voice's, and a video within one frame of the window."""

from __future__ import annotations

import pytest

from vssflow.core.errors import ContractError
from vssflow.core.phonemes import PhonemeTokenizer, check_transcript, strip_control


@pytest.fixture(scope="module")
def tok() -> PhonemeTokenizer:
    return PhonemeTokenizer()


@pytest.mark.parametrize("text", ["", "   ", "?!...", " , ; "])
def test_nothing_to_speak_is_an_error(tok, text):
    with pytest.raises(ContractError, match="nothing to speak"):
        check_transcript(text, 2.0, tok, "clip.mp4")


def test_more_phonemes_than_the_span_can_hold_is_an_error_naming_rate_and_span(tok):
    assert check_transcript("bin blue at f two now", 2.0, tok, "clip.mp4") == "bin blue at f two now"
    with pytest.raises(ContractError, match=r"clip.mp4: the transcript has \d+ phonemes for 2.00 s of speech "
                                            r"\(\d+ per second, more than 25\)"):
        check_transcript("word " * 2000, 2.0, tok, "clip.mp4")


def test_control_characters_and_terminal_escapes_are_stripped_with_a_warning(tok, caplog):
    assert strip_control("bin\x1b[31m blue\x07\tnow") == ("bin blue now", True)
    with caplog.at_level("WARNING"):
        cleaned = check_transcript("bin \x1b[1mblue\x1b[0m at\x00 f", 2.0, tok, "clip.mp4")
    assert cleaned == "bin blue at f"
    assert any("control characters" in r.getMessage() for r in caplog.records)


def test_text_outside_the_voice_language_warns(tok, caplog):
    with caplog.at_level("WARNING"):
        check_transcript("hello привет", 2.0, tok, "clip.mp4")
    assert any("outside the voice's language (en-us)" in r.getMessage() for r in caplog.records)


@pytest.fixture(scope="module")
def unified():
    from vssflow.generation import Pipeline
    from vssflow.registry.recipe import load_recipe

    return Pipeline.untrained(load_recipe("unified-tiny"), device="cpu")


def test_a_video_within_one_frame_of_the_window_is_accepted(tmp_path, unified):
    from tests.main_job.test_generate import moving_square
    from vssflow.generation import ClipRequest

    video = moving_square(tmp_path / "face.mp4", 4.004, 30000 / 1001)  # 120 frames at 29.97 fps: 4.004 s
    seconds = unified.check(ClipRequest(video, transcript="bin blue at f two now"))
    assert seconds == pytest.approx(4.004, abs=1e-3)
    longer = moving_square(tmp_path / "long.mp4", 4.2, 25.0)  # longer speech is split per window
    assert unified.check(ClipRequest(longer, transcript="bin blue at f two now")) == pytest.approx(4.2, abs=1e-3)
    with pytest.raises(ContractError, match="phonemes for 0.50 s of speech"):  # the rate still counts
        unified.check(ClipRequest(longer, transcript="bin blue at f two now please", speech_span=(1.0, 1.5)))


def test_an_explicitly_empty_transcript_on_a_unified_checkpoint_means_sound_only(tmp_path, unified, caplog):
    from tests.main_job.test_generate import moving_square
    from vssflow.generation import ClipRequest

    request = ClipRequest(moving_square(tmp_path / "v.mp4", 1.0, 25.0), transcript="")
    with caplog.at_level("INFO", logger="vssflow.generate"):
        unified.check(request)
    assert request.transcript is None
    assert any("no transcript: generating sound only" in r.getMessage() for r in caplog.records)
    with pytest.raises(ContractError, match="nothing to speak"):
        unified.check(ClipRequest(request.video, transcript="..."))
