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


class T5TextParams(_Params):
    """T5 encoder from a local folder (`path`: model + tokenizer), or random init over ByT5 byte tokens."""

    path: str | None = None  # save_pretrained folder, e.g. a snapshot of google/flan-t5-base
    max_length: Annotated[int, Field(gt=0)] = 128
    frozen: bool | None = None  # None: frozen when loaded from `path`, trainable when random
    d_model: Annotated[int, Field(gt=0)] = 512
    d_kv: Annotated[int, Field(gt=0)] = 64
    d_ff: Annotated[int, Field(gt=0)] = 2048
    num_layers: Annotated[int, Field(gt=0)] = 6
    num_heads: Annotated[int, Field(gt=0)] = 8


class ClapTextParams(_Params):
    """CLAP's text tower from a local folder (`path`: a whole CLAP model + tokenizer), or random init."""

    path: str | None = None  # save_pretrained folder, e.g. a snapshot of laion/clap-htsat-unfused
    max_length: Annotated[int, Field(gt=0)] = 77
    frozen: bool | None = None  # None: frozen when loaded from `path`, trainable when random
    output: Literal["pooled", "tokens"] = "pooled"  # projected sentence embedding (1 token) or token states
    hidden_size: Annotated[int, Field(gt=0)] = 768
    num_hidden_layers: Annotated[int, Field(gt=0)] = 12
    num_attention_heads: Annotated[int, Field(gt=0)] = 12
    intermediate_size: Annotated[int, Field(gt=0)] = 3072
    projection_dim: Annotated[int, Field(gt=0)] = 512


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


def _t5_text(**params):
    from .text_models import T5TextEncoder

    return T5TextEncoder(**params)


def _clap_text(**params):
    from .text_models import ClapTextEncoder

    return ClapTextEncoder(**params)


def _precomputed(**params):
    from .precomputed import PrecomputedEncoder

    return PrecomputedEncoder(**params)


class AudioPromptParams(_Params):
    """Known-span draws of the audio-prompt route (the latent size comes from the codec at assembly)."""

    spans: dict[Literal["prefix", "suffix", "middle", "none"], Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: {"prefix": 0.4, "suffix": 0.1, "middle": 0.3, "none": 0.2})
    min_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1
    max_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.7

    @field_validator("spans")
    @classmethod
    def _some_span(cls, value: dict[str, float]) -> dict[str, float]:
        if not any(v > 0 for v in value.values()):
            raise ValueError("give at least one span kind a weight > 0")
        return value

    @field_validator("max_fraction")
    @classmethod
    def _ordered(cls, value: float, info: Any) -> float:
        if value < info.data.get("min_fraction", 0.0):
            raise ValueError("max_fraction must be >= min_fraction")
        return value


def _audio_prompt(**params):
    from .prompt import AudioPromptEncoder

    return AudioPromptEncoder(**params)


_audio_prompt.latent_runtime = True  # assembly passes latent_channels and latent_fps (registry/assemble.py)


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
        "t5-text", _t5_text, params=T5TextParams,
        description="T5 encoder (transformers) from a local folder: one token per text token; frozen when loaded.",
        tiny={"d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 1, "num_heads": 2, "max_length": 32},
    )
    register(
        "clap-text", _clap_text, params=ClapTextParams,
        description="CLAP text tower (transformers) from a local folder: the projected sentence embedding or tokens.",
        tiny={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
              "projection_dim": 8, "max_length": 32},
    )
    register(
        "audio-prompt", _audio_prompt, params=AudioPromptParams,
        description="Known audio latents + known-frame mask (prompts, inpainting, continuation), built by the model.",
        tiny={},
    )
    register(
        "precomputed", _precomputed, params=PrecomputedParams,
        description="Features extracted elsewhere (CLIP, Synchformer, AV-HuBERT, RawNet3), checked for dim and fps.",
        tiny={"dim": 16, "fps": 25.0, "layer_norm": True},
    )
