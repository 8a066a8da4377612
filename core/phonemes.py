"""Phonemes: the espeak-ng binding (offline, via espeakng-loader and ctypes) and the PhonemeTokenizer.

The tokenizer maps text to ids of a fixed, versioned inventory of IPA symbols as espeak-ng writes them.
The inventory is saved with every checkpoint (`to_dict`) and restored verbatim (`from_dict`), so ids never
shift when the code's default inventory grows. Symbols outside it become `<unk>` (counted, logged once).

Token stream of "Bin blue, now!":  b ˈ ɪ n <sp> b l ˈ uː , n ˈ aʊ !
  - stress marks (ˈ primary, ˌ secondary) are tokens of their own, before the syllable's vowel;
  - `<sp>` separates words inside a clause; a punctuation token (, . ? !) ends a clause and is a pause.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------
# espeak-ng binding

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_PHONEME_IPA = 0x0002
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PHONEMES_IPA = 0x02
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_END, _EVENT_PHONEME = 0, 1, 5, 7
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class PhonemeEvent:
    """One phoneme espeak-ng spoke: IPA name (stress marks included), start sample, word index."""

    symbol: str
    sample: int
    word: int


@dataclass(frozen=True)
class Clause:
    """One clause of phonemised text: words as lists of IPA phonemes, and the punctuation ending it ('' if none)."""

    words: list[list[str]]
    punctuation: str


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Set the ctypes signatures of the espeak-ng functions used here."""
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    return lib


class Espeak:
    """The espeak-ng library bundled by espeakng-loader, loaded once per process (thread-safe calls).

    Synthesis runs in a fresh instance of the library each time: espeak-ng keeps process-wide state between
    utterances (the pitch-flutter phase), so the same call would otherwise give slightly different audio and
    timings depending on what was spoken before, and generated data would depend on the worker layout.
    """

    _instance: Espeak | None = None
    _create_lock = threading.Lock()

    def __init__(self) -> None:
        import espeakng_loader

        from .errors import VssflowError

        self._library_path = espeakng_loader.get_library_path()
        self._data = espeakng_loader.get_data_path().encode()
        try:
            self.lib = _declare(ctypes.CDLL(self._library_path))
        except OSError as exc:
            raise VssflowError(f"cannot load espeak-ng from espeakng-loader: {exc}") from None
        options = _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA
        self.sample_rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data, options)
        if self.sample_rate <= 0:
            raise VssflowError("espeak-ng failed to initialise with the data bundled by espeakng-loader")
        self._lock = threading.Lock()
        self._voice: str | None = None
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, str]] = []
        self._callback = _SynthCallback(self._collect)  # keep a reference: C holds only the pointer
        self._private_copy: str | None = None

    @classmethod
    def get(cls) -> Espeak:
        """The process-wide instance."""
        with cls._create_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _collect(self, wav: Any, num_samples: int, events: Any) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                self._events.append((_EVENT_PHONEME, ev.sample, ev.id.string.decode("utf-8", "replace")))
            elif ev.type in (_EVENT_WORD, _EVENT_END):
                self._events.append((ev.type, ev.sample, ""))
            i += 1
        return 0

    def _set_voice(self, voice: str) -> None:
        if voice != self._voice:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                from .errors import VssflowError

                raise VssflowError(f"espeak-ng has no voice {voice!r} (e.g. 'en-us', 'en-us+f3', 'en')")
            self._voice = voice

    def phonemize(self, text: str, voice: str = "en-us") -> list[Clause]:
        """IPA phonemes of `text`, clause by clause, as espeak-ng's `espeak_TextToPhonemes` gives them."""
        raw = text.encode("utf-8")
        buf = ctypes.create_string_buffer(raw)
        base = ctypes.addressof(buf)
        ptr = ctypes.c_void_p(base)
        clauses: list[Clause] = []
        mode = _PHONEMES_IPA | (ord("_") << 8)  # '_' between phonemes, ' ' between words
        with self._lock:
            self._set_voice(voice)
            while ptr.value:
                before = ptr.value - base
                out = self.lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, mode)
                after = (ptr.value - base) if ptr.value else len(raw)
                phon = (out or b"").decode("utf-8", "replace")
                words = [[p for p in w.split("_") if p] for w in phon.split()]
                words = [w for w in words if w]
                consumed = raw[before:after].decode("utf-8", "replace")
                clauses.append(Clause(words, _clause_punctuation(consumed)))
        return clauses

    def _fresh_library(self) -> ctypes.CDLL:
        """A newly loaded instance of espeak-ng (a private copy of the .so, so no other handle shares it)."""
        import atexit
        import shutil
        import tempfile

        if self._private_copy is None or not os.path.exists(self._private_copy):
            folder = tempfile.mkdtemp(prefix="vssflow-espeak-")
            self._private_copy = os.path.join(folder, "libespeak-ng-synth.so")
            shutil.copyfile(self._library_path, self._private_copy)
            atexit.register(shutil.rmtree, folder, True)
        return _declare(ctypes.CDLL(self._private_copy))

    def synthesize(
        self, text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50, pitch_range: int = 50
    ) -> tuple[np.ndarray, int, list[PhonemeEvent]]:
        """Speak `text`: int16 waveform (S,), its sample rate, and the phonemes with their start samples.

        Deterministic: the same arguments give the same samples in any process, whatever was spoken before.
        """
        import _ctypes

        from .errors import VssflowError

        raw = text.encode("utf-8") + b"\0"
        with self._lock:
            lib = self._fresh_library()
            try:
                rate_hz = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data,
                                                _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA)
                lib.espeak_SetSynthCallback(self._callback)
                _seed_noise(lib)
                if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                    raise VssflowError(f"espeak-ng has no voice {voice!r} (e.g. 'en-us', 'en-us+f3', 'en')")
                for param, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch), (_PARAM_RANGE, pitch_range),
                                     (_PARAM_VOLUME, 100)):
                    lib.espeak_SetParameter(param, int(value), 0)
                self._chunks, self._events = [], []
                err = lib.espeak_Synth(raw, len(raw), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
                chunks, events = self._chunks, self._events
                self._chunks, self._events = [], []
                lib.espeak_Terminate()
            finally:
                _ctypes.dlclose(lib._handle)  # unloads it: the next call starts from a clean state
        if err != 0:
            raise VssflowError(f"espeak-ng failed to synthesise {text!r} (error {err})")
        wav = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        phonemes: list[PhonemeEvent] = []
        word = -1
        for kind, sample, name in events:
            if kind == _EVENT_WORD:
                word += 1
            elif kind == _EVENT_PHONEME and name.strip("_ "):
                phonemes.append(PhonemeEvent(name, sample, max(word, 0)))
        # the end of the last phoneme: the end event, or the end of the audio
        end = max((s for k, s, _ in events if k == _EVENT_END), default=len(wav))
        phonemes.append(PhonemeEvent("", min(end, len(wav)), word))
        return wav, rate_hz, phonemes


def _seed_noise(lib: ctypes.CDLL) -> None:
    """Fix the noise espeak-ng mixes into unvoiced sounds (its own seed where it has one, else libc's rand)."""
    if hasattr(lib, "espeak_ng_SetRandSeed"):
        lib.espeak_ng_SetRandSeed(ctypes.c_long(0))
    ctypes.CDLL(None).srand(ctypes.c_uint(0))


_PUNCTUATION = {",": ",", ";": ",", ":": ",", "—": ",", "–": ",", ".": ".", "…": ".", "?": "?", "!": "!"}
_CLAUSE_END = re.compile(r"([,;:—–.…?!])[\s\"'”’)\]]*\S*$")


def _clause_punctuation(segment: str) -> str:
    """The pause token ending a clause: its final punctuation mark, normalised to one of , . ? !

    espeak-ng reads one character past the clause, so the segment may end with the next word's start.
    """
    match = _CLAUSE_END.search(segment.rstrip())
    return _PUNCTUATION[match.group(1)] if match else ""


# ----------------------------------------------------------------------------------------------------------
# tokenizer

PAD, UNK, WORD_BOUNDARY = "<pad>", "<unk>", "<sp>"
PAUSES = (",", ".", "?", "!")
STRESS = ("ˈ", "ˌ")
# Inventory v1: English IPA as espeak-ng writes it (en-us, en-gb, RP, Scottish, Caribbean voices). Longer
# espeak units not listed here (r-coloured vowels such as ɔːɹ, triphthongs such as aɪə) split greedily into
# listed ones, so every English voice is covered without <unk>. Append only: ids must never shift.
CONSONANTS = (
    "p", "b", "t", "d", "k", "ɡ", "m", "n", "ŋ", "f", "v", "θ", "ð", "s", "z", "ʃ", "ʒ", "h", "tʃ", "dʒ",
    "l", "ɹ", "r", "w", "j", "ɾ", "ʔ", "ʍ", "x", "n̩", "əl",
)  # fmt: skip
VOWELS = (
    "ɪ", "ə", "ɛ", "ɚ", "ᵻ", "æ", "a", "ɑ", "ɒ", "ɔ", "ʌ", "ʊ", "u", "i", "e", "o", "ɜ", "ɐ", "ʉ",
    "iː", "uː", "ɑː", "ɔː", "ɜː", "aː", "eː", "oː", "ʉː",
    "eɪ", "aɪ", "oʊ", "aʊ", "ɔɪ", "əʊ", "iə", "eə", "ʊə",
    "ː",
)  # fmt: skip
SYMBOLS_V1: tuple[str, ...] = (PAD, UNK, WORD_BOUNDARY, *PAUSES, *STRESS, *CONSONANTS, *VOWELS)
_ASCII_FIXES = {":": "ː", "g": "ɡ", "'": "ˈ", ",": "ˌ"}  # espeak's ascii stand-ins inside phoneme names


_SENTENCE_START = re.compile(r"(^|[.?!…]\s+)([^\W\d_])")


def _sentence_case(text: str) -> str:
    """Lower case with each sentence capitalised: all-caps transcripts (LRS) are not read as acronyms, and
    espeak-ng still sees where sentences end (it does not break a clause before a lower-case word)."""
    return _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), text.lower().strip())


class PhonemeTokenizer:
    """Text -> phoneme ids through espeak-ng (IPA), over a fixed inventory; 0 is padding, 1 is `<unk>`."""

    VERSION = 1

    def __init__(
        self,
        symbols: Sequence[str] | None = None,
        voice: str = "en-us",
        stress: bool = True,
        lowercase: bool = True,
        version: int = VERSION,
    ) -> None:
        self.symbols: tuple[str, ...] = tuple(symbols) if symbols is not None else SYMBOLS_V1
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("phoneme inventory has duplicate symbols")
        if self.symbols[:3] != (PAD, UNK, WORD_BOUNDARY):
            raise ValueError(f"phoneme inventory must start with {PAD}, {UNK}, {WORD_BOUNDARY}")
        self.voice, self.stress, self.lowercase, self.version = voice, stress, lowercase, int(version)
        self._ids = {s: i for i, s in enumerate(self.symbols)}
        self._units = sorted((s for s in self.symbols if not s.startswith("<")), key=len, reverse=True)
        self.unknown: Counter[str] = Counter()
        self._cache: dict[str, list[int]] = {}

    # ids -------------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids, padding included."""
        return len(self.symbols)

    @property
    def pad_id(self) -> int:
        """Id of padding (0)."""
        return 0

    @property
    def unk_id(self) -> int:
        """Id of `<unk>` (1)."""
        return 1

    @property
    def word_boundary_id(self) -> int:
        """Id of `<sp>`, between words."""
        return 2

    def id_of(self, token: str) -> int:
        """Id of one inventory token; `<unk>` (counted, logged once per symbol) when absent."""
        found = self._ids.get(token)
        if found is not None:
            return found
        if self.unknown[token] == 0:
            logger.warning("phoneme %r is not in inventory v%d; it maps to %s", token, self.version, UNK)
        self.unknown[token] += 1
        return self.unk_id

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of ids (padding dropped)."""
        return [self.symbols[i] for i in ids if i != self.pad_id]

    # phonemes -> tokens ----------------------------------------------------------------------------------
    def split_phoneme(self, phoneme: str) -> list[str]:
        """One espeak phoneme name -> inventory tokens: stress marks first, then the longest known units."""
        name = unicodedata.normalize("NFC", phoneme)
        out: list[str] = []
        stress = [c for c in name if c in STRESS]
        name = "".join(_ASCII_FIXES.get(c, c) if c not in STRESS else "" for c in name)
        if self.stress:
            out += stress[:1]
        i = 0
        while i < len(name):
            for unit in self._units:
                if name.startswith(unit, i):
                    out.append(unit)
                    i += len(unit)
                    break
            else:
                ch = name[i]
                i += 1
                if unicodedata.category(ch) in ("Mn", "Lm") and out:
                    continue  # a diacritic or modifier (t̪, eʲ) on a known unit: keep the unit
                out.append(ch)  # unknown: id_of() maps it to <unk> and counts it
        return out

    def phonemize(self, text: str) -> list[str]:
        """Tokens of `text`: phonemes, stress marks, `<sp>` between words, a pause token per punctuation."""
        if not text or not text.strip():
            return []
        text = _sentence_case(text) if self.lowercase else text
        tokens: list[str] = []
        for clause in Espeak.get().phonemize(text, self.voice):
            for w, word in enumerate(clause.words):
                if w:
                    tokens.append(WORD_BOUNDARY)
                for phoneme in word:
                    tokens += self.split_phoneme(phoneme)
            if clause.punctuation and tokens:
                tokens.append(clause.punctuation)
            elif clause.words and tokens and tokens[-1] not in PAUSES:
                tokens.append(WORD_BOUNDARY)  # a clause break espeak made without punctuation
        while tokens and tokens[-1] == WORD_BOUNDARY:
            tokens.pop()
        return tokens

    def encode(self, text: str) -> list[int]:
        """Ids of `text` (empty list for an empty transcript)."""
        cached = self._cache.get(text)
        if cached is None:
            cached = [self.id_of(t) for t in self.phonemize(text)]
            if len(self._cache) < 100_000:
                self._cache[text] = cached
        return list(cached)

    def encode_timed(
        self, phonemes: Sequence[tuple[str, float, float, int]]
    ) -> tuple[list[int], list[tuple[float, float]]]:
        """(symbol, start_s, end_s, word index) per spoken phoneme -> ids and (start, end) per id.

        Stress marks get a zero-length span at their phoneme's start, `<sp>` spans the gap between words, and a
        phoneme that splits into several units shares its span evenly, so spans never overlap.
        """
        ids: list[int] = []
        times: list[tuple[float, float]] = []
        last_word: int | None = None
        last_end = 0.0
        for symbol, start, end, word in phonemes:
            if last_word is not None and word != last_word:
                ids.append(self.word_boundary_id)
                times.append((last_end, max(last_end, start)))
            last_word = word
            tokens = self.split_phoneme(symbol)
            units = [t for t in tokens if t not in STRESS]
            step = (end - start) / max(len(units), 1)
            k = 0
            for token in tokens:
                ids.append(self.id_of(token))
                if token in STRESS:
                    times.append((start, start))
                else:
                    times.append((start + k * step, start + (k + 1) * step))
                    k += 1
            last_end = end
        return ids, times

    # persistence -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild exactly this tokenizer (saved with each checkpoint)."""
        return {
            "version": self.version,
            "symbols": list(self.symbols),
            "voice": self.voice,
            "stress": self.stress,
            "lowercase": self.lowercase,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhonemeTokenizer:
        """Rebuild a saved tokenizer; its own symbol list is used verbatim, whatever this code's default."""
        return cls(
            symbols=data["symbols"],
            voice=data.get("voice", "en-us"),
            stress=data.get("stress", True),
            lowercase=data.get("lowercase", True),
            version=data.get("version", cls.VERSION),
        )

    def __repr__(self) -> str:
        return f"PhonemeTokenizer(v{self.version}, {self.vocab_size} symbols, voice={self.voice!r})"


# ----------------------------------------------------------------------------------------------------------
# transcript checks (generation input)

MAX_PHONEMES_PER_S = 25.0  # fast speech is about 15 phonemes per second; above 25 no span can hold the text
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")


def strip_control(text: str) -> tuple[str, bool]:
    """`text` without terminal escapes and control characters (tabs and newlines become spaces);
    True when anything was removed. espeak would otherwise speak them as numbers."""
    cleaned = _ANSI.sub("", text)
    cleaned = "".join(" " if ch in "\t\n\r" else ch for ch in cleaned
                      if ch in "\t\n\r" or unicodedata.category(ch) not in ("Cc", "Cf"))
    return cleaned, cleaned != text.replace("\t", " ").replace("\n", " ").replace("\r", " ")


def _outside_voice(text: str, voice: str) -> bool:
    """Letters outside the Latin script for a voice of a Latin-script language (English and its kin)."""
    if voice.split("+")[0].split("-")[0] not in ("en", "de", "fr", "es", "it", "nl", "pt", "pl", "sv", "da"):
        return False
    letters = [ch for ch in text if ch.isalpha()]
    return any(not unicodedata.name(ch, "").startswith("LATIN") for ch in letters)


def spoken_phonemes(tokenizer: PhonemeTokenizer, text: str) -> int:
    """Phonemes of `text` a speaker pronounces (no stress marks, word boundaries or pauses)."""
    return sum(1 for t in tokenizer.phonemize(text) if not t.startswith("<") and t not in STRESS and t not in PAUSES)


def check_transcript(text: str, span_s: float, tokenizer: PhonemeTokenizer, where: str) -> str:
    """The transcript to speak over `span_s` seconds, cleaned; ContractError when it cannot be right.

    Errors: nothing speakable (empty, whitespace or punctuation only), or more phonemes than the span holds
    at MAX_PHONEMES_PER_S. Warnings: control characters stripped, letters outside the voice's language."""
    from .errors import ContractError

    cleaned, stripped = strip_control(text)
    if stripped:
        logger.warning("%s: control characters and terminal escapes removed from the transcript", where)
    if not any(ch.isalnum() for ch in cleaned):
        raise ContractError(
            f"{where}: the transcript {text!r} has nothing to speak (empty, whitespace or punctuation only); "
            "pass the words spoken"
        )
    if _outside_voice(cleaned, tokenizer.voice):
        logger.warning("%s: the transcript has letters outside the voice's language (%s); they may be spelled "
                       "out or skipped", where, tokenizer.voice)
    count = spoken_phonemes(tokenizer, cleaned)
    if count == 0:
        raise ContractError(f"{where}: the transcript {text!r} gives no phonemes; pass the words spoken")
    rate = count / max(span_s, 1e-9)
    if rate > MAX_PHONEMES_PER_S:
        raise ContractError(
            f"{where}: the transcript has {count} phonemes for {span_s:.2f} s of speech ({rate:.0f} per second, "
            f"more than {MAX_PHONEMES_PER_S:.0f}); shorten it, or give a longer --speech-span or video"
        )
    return cleaned.strip()
