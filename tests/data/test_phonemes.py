"""PhonemeTokenizer: fixed versioned inventory, espeak-ng IPA, pauses, <unk>, persistence, timed ids."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from vssflow.core.phonemes import SYMBOLS_V1, Espeak, PhonemeTokenizer


@pytest.fixture(scope="module")
def tok():
    return PhonemeTokenizer()


def test_inventory_is_fixed_and_versioned(tok):
    assert tok.VERSION == 1 and tok.version == 1
    assert tok.symbols == SYMBOLS_V1 and 70 <= tok.vocab_size <= 90
    assert (tok.pad_id, tok.unk_id, tok.word_boundary_id) == (0, 1, 2)
    assert tok.symbols[:3] == ("<pad>", "<unk>", "<sp>")
    # ids pinned: a change here breaks every checkpoint, so it must be a new VERSION instead
    assert [tok.symbols.index(s) for s in (",", ".", "?", "!", "ˈ", "ˌ", "p", "aʊ")] == [3, 4, 5, 6, 7, 8, 9, 71]


def test_encode_text_offline_through_espeak(tok):
    tokens = tok.phonemize("Bin blue at F two now!")
    assert tokens == ["b", "ˈ", "ɪ", "n", "<sp>", "b", "l", "ˈ", "uː", "<sp>", "æ", "ɾ", "<sp>", "ˈ", "ɛ", "f",
                      "<sp>", "t", "ˈ", "uː", "<sp>", "n", "ˈ", "aʊ", "!"]
    ids = tok.encode("Bin blue at F two now!")
    assert ids == [tok.symbols.index(t) for t in tokens] and 0 not in ids
    assert tok.decode(ids + [0, 0]) == tokens  # padding dropped


def test_punctuation_becomes_pause_tokens(tok):
    tokens = tok.phonemize("Hello, world. Really? Yes!")
    assert [t for t in tokens if t in (",", ".", "?", "!")] == [",", ".", "?", "!"]
    assert tok.phonemize("hello world") == tok.phonemize("HELLO   WORLD")  # case and spacing do not matter


def test_empty_transcripts_give_no_ids(tok):
    assert tok.encode("") == [] and tok.encode("   \n") == [] and tok.phonemize("") == []


def test_unknown_symbols_map_to_unk_counted_and_logged_once(caplog):
    tok = PhonemeTokenizer()
    with caplog.at_level(logging.WARNING, logger="vssflow.core.phonemes"):
        first = tok.split_phoneme("ʀ")  # uvular trill: not in the English inventory
        ids = [tok.id_of(t) for t in first] + [tok.id_of("ʀ")]
    assert ids == [tok.unk_id, tok.unk_id]
    assert tok.unknown["ʀ"] == 2
    assert sum("ʀ" in r.message for r in caplog.records) == 1


def test_longer_espeak_units_split_into_inventory_symbols(tok):
    assert tok.split_phoneme("ˈɔːɹ") == ["ˈ", "ɔː", "ɹ"]
    assert tok.split_phoneme("aɪɚ") == ["aɪ", "ɚ"]
    assert tok.split_phoneme("t̪") == ["t"]  # a diacritic on a known unit keeps the unit
    assert tok.split_phoneme("a:") == ["aː"]  # espeak's ascii length mark
    for voice in ("en", "en-gb-scotland", "en-029"):  # other English accents need no <unk>
        other = PhonemeTokenizer(voice=voice)
        other.encode("The fire truck arrived in Loch Ness at four thirty; wonderful.")
        assert not other.unknown, (voice, other.unknown)


def test_to_dict_from_dict_keeps_ids_even_when_the_default_inventory_changes(tok, monkeypatch):
    saved = tok.to_dict()
    assert saved["version"] == 1 and saved["symbols"] == list(SYMBOLS_V1) and saved["voice"] == "en-us"
    import vssflow.core.phonemes as phonemes

    monkeypatch.setattr(phonemes, "SYMBOLS_V1", ("<pad>", "<unk>", "<sp>", "ʀ", *SYMBOLS_V1[3:]))
    restored = PhonemeTokenizer.from_dict(saved)
    assert restored.symbols == tok.symbols
    assert restored.encode("place green by k seven again") == tok.encode("place green by k seven again")
    with pytest.raises(ValueError, match="must start with"):
        PhonemeTokenizer(symbols=["a", "b"])


def test_timed_ids_match_text_ids_for_spoken_sentences(tok):
    """Ids from espeak's spoken phoneme events equal ids from the text, so label times line up with ids."""
    es = Espeak.get()
    for text, voice in [("set white by z two now", "en-us+f2"), ("lay red with y zero again", "en-us+m3")]:
        wav, sr, events = es.synthesize(text, voice)
        spoken = [(e.symbol, e.sample / sr, n.sample / sr, e.word) for e, n in zip(events[:-1], events[1:], strict=True)]
        ids, times = tok.encode_timed(spoken)
        assert ids == tok.encode(text)
        starts = np.array([t[0] for t in times])
        ends = np.array([t[1] for t in times])
        assert np.all(np.diff(starts) >= 0) and np.all(ends >= starts)  # ordered, never overlapping
        assert np.all(starts[1:] >= ends[:-1] - 1e-9)
        assert ends[-1] <= len(wav) / sr + 1e-6


def test_synthesis_is_deterministic_whatever_was_spoken_before():
    es = Espeak.get()
    first = es.synthesize("place green by k seven again", "en-us+f4", 170, 60, 50)
    es.synthesize("bin blue at f two now", "en-us+m1", 140, 30, 70)
    again = es.synthesize("place green by k seven again", "en-us+f4", 170, 60, 50)
    assert np.array_equal(first[0], again[0]) and first[2] == again[2]
