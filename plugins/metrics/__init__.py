"""Built-in metrics. Two shapes (see `vssflow.core.interfaces`): per-clip `Metric`s (one score per clip,
against a reference clip, labels or a transcript) and set-level `SetMetric`s (FD, KID, IS: a generated set
against a reference set, through a judge's features).

| metric | shape | better | needs | module |
|---|---|---|---|---|
| mel-distance, envelope-corr | clip | lower / higher | reference | audio_metrics |
| onset-f1 | clip | higher | labels: events (or reference) | audio_metrics |
| seam | clip | lower (1 = seamless) | - (labels: windows, optional) | seam |
| fd, kid | set | lower | reference set; judge (aisfx default) | distribution |
| is | set | higher | judge with classes (logmel-cnn default) | distribution |
| kl | clip | lower | reference; classifier judge | distribution |
| class-accuracy | clip | higher | labels: class; classifier judge | distribution |
| fd-panns, kl-panns, is-panns | as fd/kl/is | | a local Cnn14 checkpoint | distribution |
| wer | clip | lower | labels: transcript | speech |
| speaker-sim | clip | higher | labels: speaker_reference (or reference) | speech |
| dnsmos, dnsmos-sig, dnsmos-bak, naturalness-mos | clip | higher | - | speech |
| mcd-dtw, mcd-dtw-sl, f0-rmse | clip | lower | reference | speech |
| voicing-agreement, stoi, pesq | clip | higher | reference | speech |
| speech-activity-agreement | clip | higher | reference or labels: speech | speech |
| av-offset, lip-offset | clip | lower | labels: video | sync |
| lip-sync-confidence | clip | higher | labels: video | sync |

Params models live here (pydantic only); each factory imports its implementation. Metrics whose optional
packages are missing stay registered; `available(name)` says so in one line naming the extra.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class MelDistanceParams(_Params):
    """Mel analysis of the distance (the paper's defaults)."""

    sample_rate: Annotated[int, Field(gt=0)] = 16000
    n_fft: Annotated[int, Field(gt=0)] = 1024
    hop_length: Annotated[int, Field(gt=0)] = 160
    n_mels: Annotated[int, Field(gt=0)] = 64


class OnsetParams(_Params):
    """Onset detection and matching tolerance."""

    sample_rate: Annotated[int, Field(gt=0)] = 16000
    tolerance_s: Annotated[float, Field(gt=0)] = 0.1
    hop_length: Annotated[int, Field(gt=0)] = 160
    threshold: Annotated[float, Field(gt=0)] = 1.5  # peaks this many std above the mean flux
    min_gap_s: Annotated[float, Field(gt=0)] = 0.08
    onscreen_only: bool = True  # skip events labelled off-screen (distractors no video model can time)


class EnvelopeParams(_Params):
    """Loudness-envelope frame rate."""

    sample_rate: Annotated[int, Field(gt=0)] = 16000
    frame_s: Annotated[float, Field(gt=0)] = 0.02


class SeamParams(_Params):
    """Window layout of the generator (when clips carry no `windows` label) and the change curve's analysis."""

    sample_rate: Annotated[int, Field(gt=0)] = 16000
    window_s: Annotated[float, Field(gt=0)] = 4.0
    overlap_s: Annotated[float, Field(ge=0)] = 1.0
    context_s: Annotated[float, Field(gt=0)] = 0.1
    n_fft: Annotated[int, Field(gt=0)] = 1024
    hop_length: Annotated[int, Field(gt=0)] = 160
    n_mels: Annotated[int, Field(gt=0)] = 64


class _JudgeParams(_Params):
    judge_path: str | None = None  # the judge's local weights (its `path` param): logmel-cnn folder, Cnn14 file
    judge_params: dict[str, Any] = Field(default_factory=dict)  # any other params of the judge


class FDParams(_JudgeParams):
    """Frechet distance over a judge's embeddings."""

    judge: str = "aisfx"
    batch_size: Annotated[int, Field(gt=0)] = 16


class KIDParams(FDParams):
    """Kernel inception distance over a judge's embeddings."""

    subsets: Annotated[int, Field(gt=0)] = 100
    subset_size: Annotated[int, Field(ge=2)] = 1000
    seed: int = 0


class ISParams(_JudgeParams):
    """Inception score over a classifier judge's logits."""

    judge: str = "logmel-cnn"
    batch_size: Annotated[int, Field(gt=0)] = 16
    splits: Annotated[int, Field(gt=0)] = 10
    seed: int = 2020


class ClassifierParams(_JudgeParams):
    """A classifier judge (KL, class accuracy)."""

    judge: str = "logmel-cnn"


class PANNsMetricParams(_Params):
    """A metric over the PANNs Cnn14 judge."""

    checkpoint: str = Field(description="local Cnn14 checkpoint (.pth or .safetensors)")
    sample_rate: Literal[16000, 32000] = 16000
    create_example: bool = False  # tests only: a random-weight narrow Cnn14 there if absent


class WERParams(_Params):
    """ASR decoding."""

    grammar: str | None = None  # None: open vocabulary; "grid": the GRID grammar ("grid-talk": 1+ sentences); or a JSGF file
    vocabulary: list[str] | None = None  # a closed word list (word-loop grammar)
    trim_db: float = -35.0  # closed grammars: cut the clip to frames within this many dB of its loudest
    fillers: bool | None = None  # silence/noise words between grammar words; None: off for "grid", else on
    noise_snr_db: float | None = 30.0  # a floor of white noise this far below the speech level; None: off


class SpeakerSimParams(_JudgeParams):
    """A speaker-embedding judge (resemblyzer's params: trim_silence, default true)."""

    judge: str = "resemblyzer"


class NoParams(_Params):
    """No options."""


class MCDParams(_Params):
    """Cepstral order."""

    order: Annotated[int, Field(gt=0, le=39)] = 13


class PitchParams(_Params):
    """torchcrepe tracking."""

    voicing_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5
    fmin: Annotated[float, Field(gt=0)] = 50.0
    fmax: Annotated[float, Field(gt=0)] = 550.0


class VADParams(_Params):
    """Silero-VAD decision threshold."""

    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5


class STOIParams(_Params):
    """Classic or extended STOI."""

    extended: bool = False


class AVOffsetParams(_Params):
    """Offset search."""

    sample_rate: Annotated[int, Field(gt=0)] = 16000
    max_offset_s: Annotated[float, Field(gt=0, le=5)] = 1.0
    signed: bool = False  # keep the sign (positive: audio late) instead of |offset|
    size: Annotated[int, Field(ge=16)] = 64  # frames are read at size x size


class LipParams(_Params):
    """Mouth crop (as the `lip` encoder) and offset search."""

    sample_rate: Annotated[int, Field(gt=0)] = 16000
    max_offset_s: Annotated[float, Field(gt=0, le=5)] = 1.0
    signed: bool = False
    crop: Literal["centre", "detect"] = "centre"
    mouth_box: tuple[float, float, float, float] = (0.55, 0.2, 0.4, 0.6)
    size: Annotated[int, Field(ge=16)] = 96
    roi: Annotated[int, Field(ge=4)] = 32


def _lazy(module: str, cls: str, **fixed: Any):
    def build(**params: Any):
        import importlib

        return getattr(importlib.import_module(f"vssflow.plugins.metrics.{module}"), cls)(**fixed, **params)

    build.__name__ = f"build_{cls}"
    return build


def _panns(module: str, cls: str):
    def build(checkpoint: str, sample_rate: int = 16000, create_example: bool = False):
        import importlib

        klass = getattr(importlib.import_module(f"vssflow.plugins.metrics.{module}"), cls)
        return klass(judge="panns-cnn14", judge_path=checkpoint,
                     judge_params={"sample_rate": sample_rate, "create_example": create_example})

    return build


_TINY_JUDGE = {"judge": "logmel-cnn", "judge_path": "{tmp}/judge", "judge_params": {"create_example": True}}
_TINY_PANNS = {"checkpoint": "{tmp}/cnn14.safetensors", "create_example": True}

# name -> (module, class, params, fixed kwargs, tiny, description)
_METRICS: dict[str, tuple[str, str, type[BaseModel], dict[str, Any], dict[str, Any] | None, str]] = {
    "mel-distance": ("audio_metrics", "MelDistance", MelDistanceParams, {}, None,
                     "Mean absolute log-mel difference to the reference (lower is better)."),
    "onset-f1": ("audio_metrics", "OnsetTiming", OnsetParams, {}, None,
                 "F1 of detected onsets against labelled event times within a tolerance (higher is better)."),
    "envelope-corr": ("audio_metrics", "EnvelopeCorrelation", EnvelopeParams, {}, None,
                      "Correlation of loudness envelopes with the reference (higher is better)."),
    "seam": ("seam", "SeamDiscontinuity", SeamParams, {}, None,
             "Spectral change at the joins of generation windows over the same inside windows (lower is better, 1 = seamless)."),
    "fd": ("distribution", "FrechetDistance", FDParams, {}, _TINY_JUDGE,
           "Frechet distance between judge embeddings of generated and reference sets (lower is better)."),
    "kid": ("distribution", "KernelDistance", KIDParams, {}, _TINY_JUDGE,
            "Kernel inception distance (cubic polynomial MMD^2) between judge embeddings (lower is better)."),
    "is": ("distribution", "InceptionScore", ISParams, {}, _TINY_JUDGE,
           "Inception score of the generated set from a classifier judge (higher is better)."),
    "kl": ("distribution", "KLDivergence", ClassifierParams, {}, _TINY_JUDGE,
           "Per-clip KL of classifier posteriors, reference || generated (lower is better)."),
    "class-accuracy": ("distribution", "ClassAccuracy", ClassifierParams, {}, _TINY_JUDGE,
                       "Whether the classifier judge's top class is a labelled class of the clip (higher is better)."),
    "wer": ("speech", "WordErrorRate", WERParams, {}, None,
            "Word error rate of pocketsphinx's transcript against the clip's transcript (lower is better)."),
    "speaker-sim": ("speech", "SpeakerSimilarity", SpeakerSimParams, {}, None,
                    "Cosine similarity of resemblyzer speaker embeddings to the speaker reference (higher is better)."),
    "dnsmos": ("speech", "DNSMOS", NoParams, {"score": "ovrl"}, None, "DNSMOS P.835 overall quality (higher is better)."),
    "dnsmos-sig": ("speech", "DNSMOS", NoParams, {"score": "sig"}, None, "DNSMOS P.835 speech signal quality."),
    "dnsmos-bak": ("speech", "DNSMOS", NoParams, {"score": "bak"}, None, "DNSMOS P.835 background quality."),
    "naturalness-mos": ("speech", "NaturalnessMOS", NoParams, {}, None,
                        "Speech-naturalness MOS predicted by DistillMOS (higher is better; not UTMOS)."),
    "mcd-dtw": ("speech", "MelCepstralDistortion", MCDParams, {"length_penalty": False}, None,
                "Mel-cepstral distortion after DTW alignment, dB (lower is better)."),
    "mcd-dtw-sl": ("speech", "MelCepstralDistortion", MCDParams, {"length_penalty": True}, None,
                   "MCD-DTW times the max/min length ratio (lower is better)."),
    "f0-rmse": ("speech", "F0RMSE", PitchParams, {}, None,
                "F0 RMSE in Hz over frames voiced in both clips, torchcrepe tiny (lower is better)."),
    "voicing-agreement": ("speech", "VoicingAgreement", PitchParams, {}, None,
                          "Fraction of frames with the reference's voiced/unvoiced decision (higher is better)."),
    "speech-activity-agreement": ("speech", "SpeechActivityAgreement", VADParams, {}, None,
                                  "Fraction of frames with the reference's silero-vad speech decision (higher is better)."),
    "stoi": ("speech", "STOI", STOIParams, {}, None, "Short-time objective intelligibility (higher is better)."),
    "pesq": ("speech", "PESQ", NoParams, {}, None, "Wide-band PESQ against the reference (higher is better)."),
    "av-offset": ("sync", "AVOffset", AVOffsetParams, {}, None,
                  "|Audio-visual offset| in ms from motion energy vs onsets, DeSync-style (lower is better)."),
    "lip-offset": ("sync", "LipOffset", LipParams, {}, None,
                   "|Lip-speech offset| in ms from mouth opening vs loudness, LSE-D-style proxy (lower is better)."),
    "lip-sync-confidence": ("sync", "LipSyncConfidence", LipParams, {}, None,
                            "Peak minus median lip-speech correlation, LSE-C-style proxy (higher is better)."),
}

_PANNS_METRICS = {
    "fd-panns": ("FrechetDistance", "FD of PANNs Cnn14 2048-d embeddings, as av-benchmark's FD-PANN (lower is better)."),
    "kl-panns": ("KLDivergence", "Paired KL of PANNs Cnn14 softmax posteriors, as av-benchmark (lower is better)."),
    "is-panns": ("InceptionScore", "Inception score of PANNs Cnn14 logits, as av-benchmark (higher is better)."),
}

# metric -> importable modules it needs (beyond the base install)
REQUIRES: dict[str, tuple[str, ...]] = {
    "wer": ("pocketsphinx", "jiwer"),
    "dnsmos": ("speechmos", "onnxruntime", "librosa"),
    "dnsmos-sig": ("speechmos", "onnxruntime", "librosa"),
    "dnsmos-bak": ("speechmos", "onnxruntime", "librosa"),
    "naturalness-mos": ("distillmos", "transformers"),
    "mcd-dtw": ("librosa",),
    "mcd-dtw-sl": ("librosa",),
    "f0-rmse": ("torchcrepe", "librosa"),
    "voicing-agreement": ("torchcrepe", "librosa"),
    "speech-activity-agreement": ("silero_vad",),
    "stoi": ("pystoi",),
    "pesq": ("pesq",),
}
_JUDGE_METRICS = {"fd", "kid", "is", "kl", "class-accuracy", "speaker-sim"}
_DEFAULT_JUDGE = {"fd": "aisfx", "kid": "aisfx", "is": "logmel-cnn", "kl": "logmel-cnn", "class-accuracy": "logmel-cnn",
                  "speaker-sim": "resemblyzer"}


def available(name: str, params: dict[str, Any] | None = None) -> tuple[bool, str]:
    """Whether metric `name` can run here: (True, "") or (False, one line naming the missing packages and
    the install command). For judge-based metrics the judge in `params` (or the default) decides."""
    from vssflow.plugins.judges import REQUIRES as JUDGE_REQUIRES
    from vssflow.plugins.judges.deps import hint, missing

    params = params or {}
    modules = REQUIRES.get(name, ())
    if name in _JUDGE_METRICS:
        from .distribution import _LOCAL_WEIGHTS

        judge = params.get("judge", _DEFAULT_JUDGE[name])
        modules = JUDGE_REQUIRES.get(judge, ())
        has_path = params.get("judge_path") or (params.get("judge_params") or {}).get("path")
        if judge in _LOCAL_WEIGHTS and not has_path:
            return False, (f"metric {name!r} skipped: its judge {judge!r} needs local weights, judge_path: "
                           f"{_LOCAL_WEIGHTS[judge]}")
    absent = missing(modules)
    if absent:
        return False, f"metric {name!r} skipped: needs {', '.join(absent)} ({hint(tuple(absent))})"
    return True, ""


def register(register) -> None:
    """Register the built-in metrics."""
    for name, (module, cls, params, fixed, tiny, description) in _METRICS.items():
        register(name, _lazy(module, cls, **fixed), params=params, description=description, tiny=tiny)
    for name, (cls, description) in _PANNS_METRICS.items():
        register(name, _panns("distribution", cls), params=PANNsMetricParams, description=description,
                 tiny=_TINY_PANNS)
