"""Synthetic audio-visual benchmark: V2S scenes, VisualTTS talking faces, and their mixtures."""

from __future__ import annotations

from .generate import (
    FAMILIES,
    SPLITS,
    SYNTH_VERSION,
    SynthConfig,
    clip_family,
    clip_id,
    clip_split,
    generate,
    make_clip,
    read_config,
    render_clip,
)

__all__ = [
    "FAMILIES",
    "SPLITS",
    "SYNTH_VERSION",
    "SynthConfig",
    "clip_family",
    "clip_id",
    "clip_split",
    "generate",
    "make_clip",
    "read_config",
    "render_clip",
]
