"""Built-in judges: frozen models that metrics score with. All run offline.

| judge | what | weights |
|---|---|---|
| `aisfx` | 512-d sound-effects embedding, 44.1 kHz (FD/KID default) | inside the aisfx package |
| `resemblyzer` | 256-d speaker embedding, 16 kHz (speaker similarity) | inside the resemblyzer package |
| `logmel-cnn` | small sound classifier trained on your reference audio (class accuracy, KL, IS, in-domain FD) | a local folder from `fit_classifier_judge` |
| `panns-cnn14` | PANNs Cnn14 AudioSet tagger, 16/32 kHz (FD_PANNs, KL_PANNs, IS_PANNs as av-benchmark) | a local checkpoint you provide |

Params models live here (pydantic only); factories import the implementations lazily.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class AisfxParams(_Params):
    """No options: the packaged X-Sequential-CE model."""


class ResemblyzerParams(_Params):
    """Resemblyzer's own preprocessing."""

    trim_silence: bool = True  # webrtcvad trimming of long silences, as resemblyzer.preprocess_wav


class LogMelCNNParams(_Params):
    """A folder written by `fit_classifier_judge` (model.safetensors + judge.json)."""

    path: str = Field(description="folder with model.safetensors and judge.json")
    create_example: bool = False  # write an untrained 3-class checkpoint there if absent (tests only)


class PANNsParams(_Params):
    """A local Cnn14 checkpoint (.pth read with weights_only=True, or .safetensors)."""

    path: str = Field(description="local Cnn14 checkpoint, e.g. Cnn14_16k_mAP=0.438.pth")
    sample_rate: Literal[16000, 32000] = 16000  # 16000: Cnn14_16k (av-benchmark); 32000: the original Cnn14
    min_seconds: float = Field(1.0, gt=0)  # shorter clips are zero-padded to this
    create_example: bool = False  # write a narrow random-weight Cnn14 there if absent (tests only)


def _aisfx(**params: Any):
    from .packaged import AisfxJudge

    return AisfxJudge(**params)


def _resemblyzer(**params: Any):
    from .packaged import ResemblyzerJudge

    return ResemblyzerJudge(**params)


def _logmel_cnn(**params: Any):
    from .classifier import LogMelCNNJudge

    return LogMelCNNJudge(**params)


def _panns(**params: Any):
    from .panns import PANNsCnn14Judge

    return PANNsCnn14Judge(**params)


def fit_classifier_judge(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Train and save a `logmel-cnn` judge; see `vssflow.plugins.judges.classifier.fit_classifier_judge`."""
    from .classifier import fit_classifier_judge as fit

    return fit(*args, **kwargs)


# judge -> importable modules it needs (see `vssflow.plugins.metrics.available`)
REQUIRES: dict[str, tuple[str, ...]] = {
    "aisfx": ("aisfx",),
    "resemblyzer": ("resemblyzer", "webrtcvad", "librosa"),
    "logmel-cnn": (),
    "panns-cnn14": (),
}


def register(register) -> None:
    """Register the built-in judges."""
    register("aisfx", _aisfx, params=AisfxParams, tiny={},
             description="aiSFX 512-d sound-effects embedding at 44.1 kHz (weights inside the aisfx package)")
    register("resemblyzer", _resemblyzer, params=ResemblyzerParams, tiny={},
             description="Resemblyzer 256-d speaker embedding at 16 kHz (weights inside the package)")
    register("logmel-cnn", _logmel_cnn, params=LogMelCNNParams,
             tiny={"path": "{tmp}/logmel-cnn", "create_example": True},
             description="log-mel CNN sound classifier trained on your reference audio (fit_classifier_judge)")
    register("panns-cnn14", _panns, params=PANNsParams,
             tiny={"path": "{tmp}/cnn14.safetensors", "create_example": True},
             description="PANNs Cnn14 AudioSet tagger from a local checkpoint (FD/KL/IS as av-benchmark)")
