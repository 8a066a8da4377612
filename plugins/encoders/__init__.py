"""Built-in encoders: raw video, transcript, caption, speaker audio or precomputed features -> Condition.

Params models live here (pydantic only) and each factory imports its implementation, so listing plugins
never imports torch, timm or cv2. A component's params are exactly its constructor arguments.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Size = Annotated[int, Field(gt=0)] | tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]]
Fps = Annotated[float, Field(gt=0)]
Channels = Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=1)]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class TimmVideoParams(_Params):
    """Any timm image model per frame. mean/std default to the model's pretrained_cfg."""

    model: str = "vit_base_patch16_clip_quickgelu_224.openai"
    fps: Fps = 10.0
    size: Size | None = None  # None: the model's pretrained input size
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    pooling: Literal["cls", "mean", "tokens"] = "cls"
    frozen: bool = True
    checkpoint_path: str | None = None  # local .safetensors / .pth (loaded with weights_only=True)
    pretrained: bool = False  # download from the hub: only when asked for, and only with internet
    model_kwargs: dict[str, Any] | None = None  # passed to timm.create_model (depth=..., drop_path_rate=...)
    chunk: Annotated[int, Field(gt=0)] = 256  # frames per forward pass


class ClipViTB16Params(_Params):
    """The paper's video-semantics encoder: CLIP ViT-B/16 CLS before the projection, 768-d, 10 fps, 224 px."""

    fps: Fps = 10.0
    size: Annotated[int, Field(gt=0)] = 224
    frozen: bool = True
    checkpoint_path: str | None = None
    pretrained: bool = False
    chunk: Annotated[int, Field(gt=0)] = 256


class TinyCNNParams(_Params):
    """Per-frame CNN + temporal conv, trained end to end."""

    fps: Fps = 10.0
    size: Size = 64
    dim: Annotated[int, Field(gt=0)] = 128
    channels: Channels = Field(default_factory=lambda: [16, 32, 64])
    temporal_layers: Annotated[int, Field(ge=0)] = 1
    temporal_kernel: Annotated[int, Field(gt=0)] = 3


class MotionParams(_Params):
    """Sync features at 25 fps: a CNN on luma and frame differences, plus Lucas-Kanade motion statistics."""

    fps: Fps = 25.0
    size: Size = 64
    dim: Annotated[int, Field(gt=0)] = 64
    channels: Channels = Field(default_factory=lambda: [16, 32, 64])
    temporal_layers: Annotated[int, Field(ge=0)] = 3
    temporal_kernel: Annotated[int, Field(gt=0)] = 3
    flow_grid: Annotated[int, Field(ge=0, le=16)] = 4  # Lucas-Kanade flow/acceleration per grid cell; 0: off
    flow_window: Annotated[int, Field(ge=3, le=15)] = 5  # LK window (odd), also the flow clamp in px/frame
    flow_cache: Annotated[int, Field(ge=0)] = 4096  # clips whose LK statistics are kept (CPU); 0: recompute

    @field_validator("flow_window")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"flow_window must be odd (a centred window), got {value}")
        return value


class LipParams(_Params):
    """Mouth-region encoder at 25 fps; mouth_box = (top, left, height, width) fractions of the face box."""

    fps: Fps = 25.0
    size: Size = 96
    dim: Annotated[int, Field(gt=0)] = 128
    crop: Literal["centre", "detect"] = "centre"
    detector: Literal["auto", "haar", "skin"] = "auto"
    mouth_box: tuple[float, float, float, float] = (0.55, 0.2, 0.4, 0.6)
    roi: Annotated[int, Field(ge=8)] = 44
    channels: Channels = Field(default_factory=lambda: [32, 64, 96])
    temporal_layers: Annotated[int, Field(ge=0)] = 2
    detect_frames: Annotated[int, Field(gt=0)] = 5


def _phoneme_inventory_size() -> int:
    from vssflow.core.phonemes import PhonemeTokenizer

    return PhonemeTokenizer().vocab_size


class PhonemeParams(_Params):
    """Phoneme ids -> frame-aligned embeddings. vocab_size defaults to the tokenizer's inventory size."""

    vocab_size: Annotated[int, Field(gt=1)] = Field(default_factory=_phoneme_inventory_size)
    dim: Annotated[int, Field(gt=0)] = 32
    fps: Fps = 25.0
    duration_s: Annotated[float, Field(gt=0)] | None = None
    refiner_blocks: Annotated[int, Field(ge=0)] = 0
    refiner_mult: Annotated[int, Field(gt=0)] = 2


class SpeakerParams(_Params):
    """Speaker token from a reference waveform (`input: waveform`) or a precomputed vector (`input: vector`)."""

    input: Literal["waveform", "vector"] = "waveform"
    dim: Annotated[int, Field(gt=0)] = 256
    sample_rate: Annotated[int, Field(gt=0)] = 16000
    n_mels: Annotated[int, Field(gt=0)] = 64
    channels: Annotated[int, Field(gt=0)] = 128
    layers: Annotated[int, Field(ge=0)] = 3
    layer_norm: bool = False  # vector input only


class ByteTextParams(_Params):
    """Caption encoder on UTF-8 bytes: token + learned position embeddings, `layers` pre-norm transformer blocks."""

    dim: Annotated[int, Field(gt=0)] = 64
    layers: Annotated[int, Field(ge=0)] = 2
    heads: Annotated[int, Field(gt=0)] = 4
    mlp_ratio: Annotated[float, Field(gt=0)] = 2.0
    max_length: Annotated[int, Field(gt=0)] = 128


class PrecomputedParams(_Params):
    """Features extracted elsewhere: their dim (required) and fps (None: tokens without a frame rate)."""

    dim: Annotated[int, Field(gt=0)]
    fps: Fps | None = None
    layer_norm: bool = False


def _timm_video(**params):
    from .timm_video import TimmVideoEncoder

    return TimmVideoEncoder(**params)


def _clip_vit_b16(**params):
    from .timm_video import CLIP_VIT_B16, TimmVideoEncoder

    return TimmVideoEncoder(model=CLIP_VIT_B16, pooling="cls", **params)


def _tiny_cnn(**params):
    from .video import TinyCNNEncoder

    return TinyCNNEncoder(**params)


def _motion(**params):
    from .video import MotionEncoder

    return MotionEncoder(**params)


def _lip(**params):
    from .lip import LipEncoder

    return LipEncoder(**params)


def _phoneme(**params):
    from .phoneme import PhonemeEncoder

    return PhonemeEncoder(**params)


def _speaker(input: str, dim: int, layer_norm: bool, **waveform):
    from .speaker import SpeakerEncoder, SpeakerVectorEncoder

    if input == "vector":
        return SpeakerVectorEncoder(dim=dim, layer_norm=layer_norm)
    return SpeakerEncoder(dim=dim, **waveform)


def _byte_text(**params):
    from .caption import ByteTextEncoder

    return ByteTextEncoder(**params)


def _precomputed(**params):
    from .precomputed import PrecomputedEncoder

    return PrecomputedEncoder(**params)


def register(register) -> None:
    """Register the built-in encoders."""
    register(
        "timm-video", _timm_video, params=TimmVideoParams,
        description="Any timm image model as a per-frame video encoder (cls/mean/tokens pooling, frozen or trainable).",
        tiny={"model": "test_vit", "size": 32, "frozen": False},
    )
    register(
        "clip-vit-b16", _clip_vit_b16, params=ClipViTB16Params,
        description="CLIP ViT-B/16 CLS features before the projection (768-d, 10 fps, 224 px), as in the paper.",
        tiny={"size": 32},
    )
    register(
        "tiny-cnn", _tiny_cnn, params=TinyCNNParams,
        description="Small per-frame CNN with a temporal conv, trained end to end (CPU-sized).",
        tiny={"size": 32, "dim": 16, "channels": [4, 8]},
    )
    register(
        "motion", _motion, params=MotionParams,
        description="Sync features from frame differences and dilated temporal convs at 25 fps.",
        tiny={"size": 32, "dim": 16, "channels": [4, 8], "temporal_layers": 1},
    )
    register(
        "lip", _lip, params=LipParams,
        description="Mouth-region (centre crop or detected face) 3D/2D-conv lip features at 25 fps.",
        tiny={"size": 48, "dim": 16, "roi": 16, "channels": [4, 8], "temporal_layers": 1},
    )
    register(
        "phoneme", _phoneme, params=PhonemeParams,
        description="Phoneme ids stretched over the speech span (or placed by times), embedded, at 25 fps.",
        tiny={"dim": 8, "refiner_blocks": 1},
    )
    register(
        "speaker", _speaker, params=SpeakerParams,
        description="One speaker token from a reference waveform (log-mel statistics net) or a precomputed vector.",
        tiny={"dim": 16, "channels": 16, "layers": 1},
    )
    register(
        "byte-text", _byte_text, params=ByteTextParams,
        description="Caption encoder on UTF-8 bytes (no vocabulary, no download): a few transformer layers, trainable.",
        tiny={"dim": 16, "layers": 1, "heads": 2, "max_length": 32},
    )
    register(
        "precomputed", _precomputed, params=PrecomputedParams,
        description="Features extracted elsewhere (CLIP, Synchformer, AV-HuBERT, RawNet3), checked for dim and fps.",
        tiny={"dim": 16, "fps": 25.0, "layer_norm": True},
    )
