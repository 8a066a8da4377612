"""Speech metrics with offline judges (the `eval` extra). Waveforms (B, S) mono at 16 kHz.

| metric | definition | judge / tool | labels read |
|---|---|---|---|
| wer | word error rate of the ASR hypothesis against `transcript`, both normalised (lower case, no punctuation, single spaces) | pocketsphinx en-us (optionally a JSGF grammar), jiwer | transcript |
| speaker-sim | cosine of speaker embeddings of the clip and a speaker reference | resemblyzer (or any embedding judge) | speaker_reference (path or (S,) tensor; else the reference audio) |
| dnsmos / dnsmos-sig / dnsmos-bak | DNSMOS P.835 OVRL / SIG / BAK (non-personalised polynomial fit) | speechmos (packaged ONNX) | - |
| naturalness-mos | DistillMOS speech-naturalness MOS (1..5); a naturalness predictor, not UTMOS | distillmos | - |
| mcd-dtw / mcd-dtw-sl | mel-cepstral distortion after DTW alignment (-SL: times max/min length ratio) | own DSP + librosa DTW | - |
| f0-rmse | RMSE (Hz) of F0 over frames voiced in both clips, time-aligned | torchcrepe `tiny` | - |
| voicing-agreement | fraction of frames whose voiced/unvoiced decision agrees | torchcrepe `tiny` | - |
| speech-activity-agreement | fraction of 32 ms frames whose speech/non-speech decision agrees | silero-vad | speech ([start, end] s, when no reference) |
| stoi | short-time objective intelligibility against the reference | pystoi | - |
| pesq | wide-band PESQ against the reference | pesq (not in the extra: it builds from source) | - |
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from vssflow.core.errors import PluginError
from vssflow.core.interfaces import Metric
from vssflow.plugins.judges.deps import require

from .audio_metrics import _valid
from .distribution import JudgeUser

SR = 16000


def _clip(wav: Tensor, lengths: Tensor | None, b: int) -> Tensor:
    return wav[b, : _valid(lengths, b, wav.shape[-1])].detach().float().cpu()


def _tone(seconds: float, f0: float, generator: torch.Generator | None, vibrato: float = 0.0) -> Tensor:
    """A voiced-like harmonic tone with a little noise (conformance inputs for pitch/speech metrics)."""
    t = torch.arange(int(seconds * SR)) / SR
    f = f0 * (1 + vibrato * torch.sin(2 * math.pi * 3 * t))
    phase = 2 * math.pi * torch.cumsum(f, 0) / SR
    wav = sum(torch.sin(k * phase) / k for k in range(1, 6)) * 0.2
    return wav + 0.005 * torch.randn(wav.shape, generator=generator)


def _wav_label(value: Any, what: str) -> Tensor:
    """A label that names audio: a path (read and resampled to 16 kHz mono) or a 1-D tensor at 16 kHz."""
    if isinstance(value, Tensor):
        return value.detach().float().cpu().flatten()
    from vssflow.core.media import read_audio

    wav, _ = read_audio(str(value), sample_rate=SR, mono=True)
    return torch.as_tensor(wav).float().flatten()


# ---------------------------------------------------------------- WER


def grid_jsgf(repeat: bool = False) -> str:
    """The GRID sentence grammar (command colour preposition letter digit adverb) as JSGF; `repeat`: one or
    more sentences (a talk several windows long, `vssflow data synth --sentences N`)."""
    from vssflow.plugins.datasets.synth.speech import GRAMMAR

    slots = " ".join(f"( {' | '.join(words)} )" for words in GRAMMAR)
    if repeat:
        return f"#JSGF V1.0;\ngrammar grid;\npublic <talk> = ( {slots} )+;\n"
    return f"#JSGF V1.0;\ngrammar grid;\npublic <sentence> = {slots};\n"


def vocabulary_jsgf(words: list[str]) -> str:
    """A word-loop JSGF grammar over a closed vocabulary."""
    return f"#JSGF V1.0;\ngrammar words;\npublic <sentence> = ( {' | '.join(sorted(set(words)))} )+;\n"


def normalise_text(text: str) -> str:
    """jiwer normalisation: lower case, punctuation removed, whitespace collapsed."""
    import jiwer

    t = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip()])
    return t(text)


def _decoder(grammar: str | None, fillers: bool = False):
    """A fresh decoder: pocketsphinx carries feature normalisation across utterances, so a shared one would
    make a clip's transcript depend on the clips decoded before it (measured: 1 of 24 sentences changed).

    Under a closed grammar for one sentence the filler (silence, breath, noise) words are best off: with them
    the search often ends inside a filler loop short of the grammar's final state and returns a truncated
    sentence or none (measured on 24 espeak GRID sentences: WER 0.23 with fillers, 0.14 without). Without
    fillers there is no silence to absorb, so `speech_region` trims the clip to its speech first; pauses
    inside the speech (a talk of several sentences) need the fillers back."""
    from pocketsphinx import Decoder

    if grammar is None:
        return Decoder(samprate=SR, loglevel="FATAL")
    decoder = Decoder(samprate=SR, loglevel="FATAL", fsgusefiller=fillers)
    decoder.add_jsgf_string("closed", grammar)
    decoder.activate_search("closed")
    return decoder


def speech_region(wav: Tensor, floor_db: float = -35.0, margin: float = 0.02, frame: float = 0.01) -> Tensor:
    """`wav` cut to the span from the first to the last 10 ms frame whose energy is within `floor_db` of the
    loudest frame, plus `margin` seconds each side. Silence, or a clip shorter than a frame, is returned as is."""
    n = int(frame * SR)
    frames = wav.numel() // n
    if frames == 0:
        return wav
    energy = 10 * torch.log10(wav[: frames * n].reshape(frames, n).double().pow(2).mean(1) + 1e-12)
    if float(energy.max()) <= -100:
        return wav
    loud = torch.nonzero(energy > energy.max() + floor_db).flatten()
    pad = int(margin * SR)
    return wav[max(0, int(loud[0]) * n - pad): min(wav.numel(), (int(loud[-1]) + 1) * n + pad)]


def comfort_noise(wav: Tensor, snr_db: float = 30.0, seed: int = 0) -> Tensor:
    """`wav` plus white noise `snr_db` dB below the RMS of its speech frames (10 ms frames within 35 dB of the
    loudest), from a fixed seed so a transcript is reproducible. Synthetic and generated speech can hold
    digital silence (exact or near zeros in pauses and stop closures), whose log-mel cepstra lie far outside
    what the acoustic model saw in recorded speech; a floor of noise like a recording's makes those frames
    look like the silence it knows."""
    n = int(0.01 * SR)
    frames = wav.numel() // n
    if frames == 0:
        return wav
    power = wav[: frames * n].reshape(frames, n).double().pow(2).mean(1)
    if float(power.max()) <= 1e-10:
        return wav
    speech = power[power > power.max() * 10 ** (-35 / 10)]
    level = float(speech.mean().sqrt()) * 10 ** (-snr_db / 20)
    return wav + level * torch.randn(wav.shape, generator=torch.Generator().manual_seed(seed))


class WordErrorRate(Metric):
    """Per-clip WER of pocketsphinx's transcript of the generated clip against `labels["transcript"]`.

    `grammar`: None (en-us language model, open vocabulary), "grid" (the GRID sentence grammar the
    synthetic benchmark speaks), "grid-talk" (one or more GRID sentences), or a path to a JSGF file;
    `vocabulary`: a word list for a word-loop grammar. A closed grammar makes the ASR far more reliable on
    small vocabularies; numbers are then not comparable with open-vocabulary (Whisper) WER. Under a closed
    grammar the clip is first cut to its speech region (`speech_region`, energy within `trim_db` dB of the
    loudest 10 ms frame). `fillers`: let silence and noise words sit between grammar words; default off for
    "grid" (one sentence, no pauses) and on for every other closed grammar (a talk pauses between sentences:
    without fillers a 0.6 s pause makes the whole talk unrecognised). `noise_snr_db`: the clip gets a floor
    of white noise this far below its speech level before decoding (`comfort_noise`; None: off).

    Measured on 24 GRID sentences read by the synthetic benchmark's 12 espeak speakers at their own rates
    (150-193 words per minute), `python benchmarks/wer_espeak_grid.py`: WER 0.069 under the grid grammar
    (0.14 without the noise floor); every error is a substitution, most in the letter slot (letter names
    that differ by one consonant). At 130 words per minute it is 0.049. Noise scores 1.0.
    """

    higher_is_better: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = True
    needs_transcript: ClassVar[bool] = True
    label_keys: ClassVar[tuple[str, ...]] = ("transcript",)

    def __init__(self, grammar: str | None = None, vocabulary: list[str] | None = None, trim_db: float = -35.0,
                 fillers: bool | None = None, noise_snr_db: float | None = 30.0):
        require("metric wer", ("pocketsphinx", "jiwer"))
        self.sample_rate = SR
        self.trim_db = trim_db
        self.noise_snr_db = noise_snr_db
        self.fillers = (grammar != "grid" or bool(vocabulary)) if fillers is None else fillers
        if vocabulary:
            self.grammar = vocabulary_jsgf(vocabulary)
        elif grammar in ("grid", "grid-talk"):
            self.grammar = grid_jsgf(repeat=grammar == "grid-talk")
        elif grammar is not None:
            path = Path(grammar).expanduser()
            if not path.is_file():
                raise PluginError(f"metric wer: grammar must be 'grid', 'grid-talk' or a JSGF file; {path} does not "
                                  "exist")
            self.grammar = path.read_text()
        else:
            self.grammar = None
        try:
            _decoder(self.grammar, self.fillers)
        except ValueError as exc:
            raise PluginError(f"metric wer: pocketsphinx cannot use the grammar ({exc}); check its JSGF syntax "
                              "and that every word is in the en-us dictionary") from exc

    def transcribe(self, wav: Tensor) -> str:
        """The ASR hypothesis for one 16 kHz clip."""
        decoder = _decoder(self.grammar, self.fillers)
        if self.grammar is not None:
            wav = speech_region(wav, self.trim_db)
        if self.noise_snr_db is not None:
            wav = comfort_noise(wav, self.noise_snr_db)
        pcm = (wav.clamp(-1, 1) * 32767).to(torch.int16).numpy().tobytes()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return "" if hyp is None else hyp.hypstr

    def __call__(self, generated, reference=None, labels=None, lengths=None) -> Tensor:  # noqa: D102
        import jiwer

        out = []
        for b in range(generated.shape[0]):
            text = (labels[b] or {}).get("transcript") if labels else None
            if not text:
                raise ValueError("wer needs labels with 'transcript' for every clip")
            ref = normalise_text(text)
            hyp = normalise_text(self.transcribe(_clip(generated, lengths, b)))
            out.append(1.0 if not hyp else jiwer.process_words(ref, hyp).wer)
        return torch.tensor(out)

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Tones with GRID transcripts."""
        gen = torch.stack([_tone(0.6, 120 + 20 * b, generator) for b in range(batch_size)])
        return {"generated": gen, "labels": [{"transcript": "bin blue at a one now"}] * batch_size}


# ---------------------------------------------------------------- speaker similarity


class SpeakerSimilarity(JudgeUser, Metric):
    """Cosine similarity of speaker embeddings (a judge's `embed`; resemblyzer by default) of the clip and
    `labels["speaker_reference"]`.

    The speaker reference is a path (any audio file, read at 16 kHz) or a 1-D 16 kHz tensor; without one,
    the paired reference audio is the speaker reference. Any registered embedding judge works (`judge`,
    `judge_path`, `judge_params`), e.g. a WavLM-ECAPA plugin for the SIM numbers papers report.
    """

    higher_is_better: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = False
    label_keys: ClassVar[tuple[str, ...]] = ("speaker_reference",)

    def __init__(self, judge: str = "resemblyzer", judge_path: str | None = None, judge_params: dict | None = None):
        if judge == "resemblyzer":
            require("metric speaker-sim", ("resemblyzer", "webrtcvad", "librosa"))
        self._setup_judge(judge, judge_path, judge_params)

    @property
    def sample_rate(self) -> int:
        """16 kHz, whatever the judge: the speaker reference is read at this rate."""
        return SR

    @property
    def judge(self):
        """The embedding judge (built on first use; it must work at 16 kHz)."""
        judge = JudgeUser.judge.fget(self)
        if judge.sample_rate != SR:
            raise PluginError(f"speaker-sim works at 16 kHz; judge {self.judge_name!r} wants {judge.sample_rate} Hz")
        return judge

    def __call__(self, generated, reference=None, labels=None, lengths=None) -> Tensor:  # noqa: D102
        out = []
        for b in range(generated.shape[0]):
            spk = (labels[b] or {}).get("speaker_reference") if labels else None
            if spk is not None:
                ref = _wav_label(spk, "speaker_reference")
            elif reference is not None:
                ref = _clip(reference, lengths if reference.shape[-1] == generated.shape[-1] else None, b)
            else:
                raise ValueError("speaker-sim needs labels with 'speaker_reference' or reference audio")
            wavs, lens = _pad2(_clip(generated, lengths, b), ref)
            e = self.judge.embed(torch.stack(wavs), lens)
            out.append(torch.nn.functional.cosine_similarity(e[0], e[1], dim=0))
        return torch.stack(out).float()

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Tones against tones."""
        gen = torch.stack([_tone(1.0, 110 + 30 * b, generator, 0.05) for b in range(batch_size)])
        ref = torch.stack([_tone(1.0, 115 + 30 * b, generator, 0.05) for b in range(batch_size)])
        return {"generated": gen, "reference": ref}


def _pad2(a: Tensor, b: Tensor) -> tuple[list[Tensor], Tensor]:
    n = max(a.numel(), b.numel())
    return [torch.nn.functional.pad(a, (0, n - a.numel())), torch.nn.functional.pad(b, (0, n - b.numel()))], \
        torch.tensor([a.numel(), b.numel()])


# ---------------------------------------------------------------- MOS predictors


@functools.lru_cache(maxsize=1)
def _dnsmos():
    import onnxruntime as ort
    from speechmos.dnsmos import DNSMOS

    folder = Path(require_path("speechmos")) / "dnsmos_models"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    model = DNSMOS.__new__(DNSMOS)
    model.onnx_sess = ort.InferenceSession(str(folder / "sig_bak_ovr.onnx"), opts, providers=["CPUExecutionProvider"])
    model.p808_onnx_sess = ort.InferenceSession(str(folder / "model_v8.onnx"), opts, providers=["CPUExecutionProvider"])
    return model


def require_path(module: str) -> str:
    """Folder of an installed package."""
    import importlib.util

    return str(Path(importlib.util.find_spec(module).origin).parent)


class DNSMOS(Metric):
    """DNSMOS P.835 (Reddy et al. 2022) from speechmos's packaged ONNX models: OVRL, SIG or BAK, 1..5.

    Clips shorter than the model's 9.01 s input are tiled to exactly one input (the reference script tiles
    too); longer clips are scored in 9.01 s windows at 1 s hops and averaged, as the reference does.
    """

    higher_is_better: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = False
    KEYS = {"ovrl": "ovrl_mos", "sig": "sig_mos", "bak": "bak_mos", "p808": "p808_mos"}

    def __init__(self, score: str = "ovrl"):
        require("metric dnsmos", ("speechmos", "onnxruntime", "librosa"))
        self.sample_rate, self.key = SR, self.KEYS[score]

    def __call__(self, generated, reference=None, labels=None, lengths=None) -> Tensor:  # noqa: D102
        model = _dnsmos()
        out = []
        for b in range(generated.shape[0]):
            clip = _clip(generated, lengths, b).clamp(-1, 1).double().numpy()
            if not np.any(clip):
                clip = clip + 1e-6
            need = int(9.01 * SR)
            if clip.size < need:  # tile to one 9.01 s segment (speechmos would double past it: several segments)
                clip = np.tile(clip, -(-need // clip.size))[:need]
            out.append(float(model(clip, SR, False)[self.key]))
        return torch.tensor(out)


@functools.lru_cache(maxsize=1)
def _distillmos():
    import distillmos

    with contextlib.redirect_stdout(io.StringIO()):
        model = distillmos.ConvTransformerSQAModel()
    return model.eval()


class NaturalnessMOS(Metric):
    """Speech-naturalness MOS (1..5) predicted by DistillMOS (Stahl & Gamper 2025, distilled from XLS-R SQA).

    A naturalness predictor trained on listening tests; it is not UTMOS and its numbers are not UTMOS numbers.
    """

    higher_is_better: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = False

    def __init__(self):
        require("metric naturalness-mos", ("distillmos", "transformers"))
        self.sample_rate = SR

    def __call__(self, generated, reference=None, labels=None, lengths=None) -> Tensor:  # noqa: D102
        model = _distillmos()
        out = []
        with torch.no_grad():
            for b in range(generated.shape[0]):
                out.append(model(_clip(generated, lengths, b)[None]).flatten()[0])
        return torch.stack(out).float()


# ---------------------------------------------------------------- MCD


def mel_cepstrum(wav: Tensor, order: int = 13, n_fft: int = 512, hop: int = 80, n_mels: int = 40) -> np.ndarray:
    """(F, order) mel-cepstra c1..c_order of log-amplitude mel spectra (orthonormal DCT-II, power floored at
    1e-8, i.e. -80 dB full scale), 5 ms hop at 16 kHz."""
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(SR, n_fft=n_fft, hop_length=hop, n_mels=n_mels, f_min=0.0,
                                               f_max=SR / 2, power=2.0)(wav.float())
    log_amp = 0.5 * torch.log(mel.clamp_min(1e-8))  # (M, F) natural-log amplitude, floor -80 dB full scale
    dct = torchaudio.functional.create_dct(order + 1, n_mels, norm="ortho")  # (M, order + 1)
    # sqrt(2 / M) turns the orthonormal DCT into cepstral-series coefficients: ln|H(w)| = c0 + 2 sum_d c_d cos(d w)
    # on the mel axis, the scale SPTK's mel-cepstra (and so pymcd's dB values) have
    return ((log_amp.T @ dct) * math.sqrt(2.0 / n_mels))[:, 1:].double().numpy()


def mcd_dtw(gen: np.ndarray, ref: np.ndarray, length_penalty: bool = False) -> float:
    """Mean MCD (dB) along the DTW path of two (F, D) cepstra; x max/min length ratio with `length_penalty`."""
    import librosa

    diff = gen[:, None, :] - ref[None, :, :]
    cost = np.sqrt((diff**2).sum(-1))  # (Fg, Fr) Euclidean frame distance
    _, path = librosa.sequence.dtw(C=cost)
    mean = float(cost[path[:, 0], path[:, 1]].mean())
    mcd = 10.0 / math.log(10.0) * math.sqrt(2.0) * mean
    if length_penalty:
        mcd *= max(len(gen), len(ref)) / min(len(gen), len(ref))
    return mcd


class MelCepstralDistortion(Metric):
    """MCD-DTW (dB) against the reference, and MCD-DTW-SL (x the max/min frame-count ratio), as pymcd defines.

    Cepstra here are an orthonormal DCT of 40-band log-amplitude mel spectra (5 ms hop), not pymcd's
    WORLD + SPTK all-pass mel-cepstra, so values are close in behaviour but not numerically pymcd's.
    """

    higher_is_better: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = True

    def __init__(self, length_penalty: bool = False, order: int = 13):
        require("metric mcd-dtw", ("librosa",))
        self.sample_rate, self.length_penalty, self.order = SR, length_penalty, order

    def __call__(self, generated, reference=None, labels=None, lengths=None) -> Tensor:  # noqa: D102
        if reference is None:
            raise ValueError("mcd-dtw needs reference audio")
        out = []
        for b in range(generated.shape[0]):
            ref = reference[b].detach().float().cpu()
            if reference.shape[-1] == generated.shape[-1]:
                ref = _clip(reference, lengths, b)
            g = mel_cepstrum(_clip(generated, lengths, b), self.order)
            r = mel_cepstrum(ref, self.order)
            out.append(mcd_dtw(g, r, self.length_penalty))
        return torch.tensor(out, dtype=torch.float32)


# ---------------------------------------------------------------- pitch and voicing


def crepe_track(wav: Tensor, threshold: float, fmin: float = 50.0, fmax: float = 550.0) -> tuple[Tensor, Tensor]:
    """F0 (F,) in Hz and voiced (F,) bool at 10 ms frames from torchcrepe's `tiny` model."""
    import torchcrepe

    f0, periodicity = torchcrepe.predict(wav.float()[None], SR, hop_length=160, fmin=fmin, fmax=fmax, model="tiny",
                                         return_periodicity=True, batch_size=512, device="cpu",
                                         decoder=torchcrepe.decode.weighted_argmax)
    periodicity = torchcrepe.filter.median(periodicity, 3)
    return f0[0], periodicity[0] > threshold


class _Pitch(Metric):
    needs_reference: ClassVar[bool] = True

    def __init__(self, voicing_threshold: float = 0.5, fmin: float = 50.0, fmax: float = 550.0):
        require(f"metric {self.metric_name}", ("torchcrepe", "librosa"))
        self.sample_rate, self.threshold, self.fmin, self.fmax = SR, voicing_threshold, fmin, fmax

    metric_name = "f0"

    def _tracks(self, generated, reference, lengths, b):
        if reference is None:
            raise ValueError(f"{self.metric_name} needs reference audio")
        n = min(_valid(lengths, b, generated.shape[-1]), reference.shape[-1])
        g = crepe_track(generated[b, :n].detach().cpu(), self.threshold, self.fmin, self.fmax)
        r = crepe_track(reference[b, :n].detach().cpu(), self.threshold, self.fmin, self.fmax)
        return g, r

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Harmonic tones (voiced) against slightly detuned ones."""
        gen = torch.stack([_tone(0.5, 150 + 20 * b, generator) for b in range(batch_size)])
        ref = torch.stack([_tone(0.5, 155 + 20 * b, generator) for b in range(batch_size)])
        return {"generated": gen, "reference": ref}


class F0RMSE(_Pitch):
    """RMSE (Hz) of F0 over frames voiced in both the clip and its time-aligned reference (torchcrepe tiny).

    Clips with no frame voiced in both score the RMSE of the reference's voiced F0 against 0 (a total miss),
    so the number stays finite and bad.
    """

    higher_is_better: ClassVar[bool] = False
    metric_name = "f0-rmse"

    def __call__(self, generated, reference=None, labels=None, lengths=None) -> Tensor:  # noqa: D102
        out = []
        for b in range(generated.shape[0]):
            (fg, vg), (fr, vr) = self._tracks(generated, reference, lengths, b)
            both = vg & vr
            if both.any():
                out.append(float(((fg[both] - fr[both]) ** 2).mean().sqrt()))
            else:
                out.append(float((fr[vr] ** 2).mean().sqrt()) if vr.any() else 0.0)
        return torch.tensor(out)


class VoicingAgreement(_Pitch):
    """Fraction of 10 ms frames whose voiced/unvoiced decision (torchcrepe periodicity) matches the reference."""

    higher_is_better: ClassVar[bool] = True
    metric_name = "voicing-agreement"

    def __call__(self, generated, reference=None, labels=None, lengths=None) -> Tensor:  # noqa: D102
        out = []
        for b in range(generated.shape[0]):
            (_, vg), (_, vr) = self._tracks(generated, reference, lengths, b)
            n = min(len(vg), len(vr))
            out.append(float((vg[:n] == vr[:n]).float().mean()))
        return torch.tensor(out)


# ---------------------------------------------------------------- speech activity


@functools.lru_cache(maxsize=1)
def _silero():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the package's own importlib.resources / torch.jit deprecations
        from silero_vad import load_silero_vad

        return load_silero_vad()


def speech_probabilities(wav: Tensor) -> Tensor:
    """Silero-VAD speech probability per 512-sample (32 ms) frame of a 16 kHz clip."""
    model = _silero()
    model.reset_states()
    with torch.no_grad():
        probs = model.audio_forward(wav.float()[None], SR)[0]
    model.reset_states()
    return probs


class SpeechActivityAgreement(Metric):
    """Fraction of 32 ms frames whose speech/non-speech decision (silero-vad) matches the reference audio's, or
    `labels["speech"]` ([start, end] seconds of speech in the clip) when there is no reference.
    """

    higher_is_better: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = False
    label_keys: ClassVar[tuple[str, ...]] = ("speech",)

    def __init__(self, threshold: float = 0.5):
        require("metric speech-activity-agreement", ("silero_vad",))
        self.sample_rate, self.threshold = SR, threshold

    def __call__(self, generated, reference=None, labels=None, lengths=None) -> Tensor:  # noqa: D102
        out = []
        for b in range(generated.shape[0]):
            g = speech_probabilities(_clip(generated, lengths, b)) > self.threshold
            span = (labels[b] or {}).get("speech") if labels else None
            if reference is not None:
                r = speech_probabilities(_clip(reference, lengths, b) if reference.shape[-1] == generated.shape[-1]
                                         else reference[b].detach().float().cpu()) > self.threshold
            elif span is not None:
                t = (torch.arange(len(g)) + 0.5) * 512 / SR
                r = (t >= float(span[0])) & (t < float(span[1]))
            else:
                raise ValueError("speech-activity-agreement needs reference audio or labels with 'speech'")
            n = min(len(g), len(r))
            out.append(float((g[:n] == r[:n]).float().mean()) if n else 1.0)
        return torch.tensor(out)


# ---------------------------------------------------------------- intelligibility / quality vs reference


class STOI(Metric):
    """Short-time objective intelligibility (Taal et al. 2011) against the time-aligned reference (pystoi)."""

    higher_is_better: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = True

    def __init__(self, extended: bool = False):
        require("metric stoi", ("pystoi",))
        self.sample_rate, self.extended = SR, extended

    def __call__(self, generated, reference=None, labels=None, lengths=None) -> Tensor:  # noqa: D102
        from pystoi import stoi

        if reference is None:
            raise ValueError("stoi needs reference audio")
        out = []
        for b in range(generated.shape[0]):
            n = min(_valid(lengths, b, generated.shape[-1]), reference.shape[-1])
            out.append(float(stoi(reference[b, :n].double().cpu().numpy(), generated[b, :n].double().cpu().numpy(),
                                  SR, extended=self.extended)))
        return torch.tensor(out)

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Two seconds of tones (STOI needs more than 30 frames of 25.6 ms)."""
        ref = torch.stack([_tone(2.0, 150 + 20 * b, generator, 0.1) for b in range(batch_size)])
        return {"generated": ref + 0.05 * torch.randn(ref.shape, generator=generator), "reference": ref}


class PESQ(Metric):
    """Wide-band PESQ (ITU-T P.862.2) against the time-aligned reference (the `pesq` package)."""

    higher_is_better: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = True

    def __init__(self):
        require("metric pesq (pip install pesq; it builds from source)", ("pesq",))
        self.sample_rate = SR

    def __call__(self, generated, reference=None, labels=None, lengths=None) -> Tensor:  # noqa: D102
        from pesq import pesq

        if reference is None:
            raise ValueError("pesq needs reference audio")
        out = []
        for b in range(generated.shape[0]):
            n = min(_valid(lengths, b, generated.shape[-1]), reference.shape[-1])
            out.append(float(pesq(SR, reference[b, :n].double().cpu().numpy(), generated[b, :n].double().cpu().numpy(),
                                  "wb")))
        return torch.tensor(out)

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Two seconds of tones."""
        return STOI.example_inputs(self, batch_size, generator)
