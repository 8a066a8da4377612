"""`audio-prompt`: known audio latents and their mask as a frame-aligned condition (docs/continuation.md).

Features are [x * known, known] (B, T, C + 1) at the latent frame rate, so a `channel-concat` aggregator
puts them next to the noisy latent frame they describe (F5-TTS's infilling input). Training spans are drawn
per sample by `draw_known`: prefix, suffix, middle gap or none, with the weights and sizes of the recipe.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vssflow.core.interfaces import Condition, InputContract, PromptEncoder
from vssflow.core.prompt import draw_known_spans


class AudioPromptEncoder(PromptEncoder):
    """Known latents (B, T, C) with known (B, T) -> Condition (B, T, C + 1) at `fps` (the latent frame rate).

    `latent_channels` and `latent_fps` come from the codec at assembly; `spans` weighs the span kinds drawn
    in training and `min_fraction`/`max_fraction` bound the share of frames given (or, for `middle`, left to
    generate).
    """

    frozen = False  # built from the target latents by the model: never cached

    def __init__(
        self, latent_channels: int = 8, latent_fps: float = 100.0, spans: dict[str, float] | None = None,
        min_fraction: float = 0.1, max_fraction: float = 0.7,
    ) -> None:
        super().__init__()
        self.latent_channels, self.fps = int(latent_channels), float(latent_fps)
        self.dim = self.latent_channels + 1
        self.spans = dict(spans if spans is not None else {"prefix": 0.4, "suffix": 0.1, "middle": 0.3, "none": 0.2})
        self.min_fraction, self.max_fraction = float(min_fraction), float(max_fraction)

    @property
    def contract(self) -> InputContract:
        """Latents of the codec at the latent frame rate (the model builds them; no file is read)."""
        return InputContract("prompt", fps=self.fps, dim=self.latent_channels)

    def draw_known(self, valid: Tensor, generators: list[torch.Generator | None]) -> Tensor:
        """Known frames (B, T) for valid frames (B, T), one span per sample (core/prompt.py)."""
        return draw_known_spans(valid, generators, self.spans, self.min_fraction, self.max_fraction)

    def forward(self, x: Tensor, mask: Tensor | None = None, known: Tensor | None = None, **extras: Any) -> Condition:
        """x (B, T, C) latents, known (B, T) bool -> Condition (B, T, C + 1); unknown frames carry zeros."""
        if x.dim() != 3 or x.shape[-1] != self.latent_channels:
            raise ValueError(f"audio-prompt: expected latents (B, T, {self.latent_channels}), got {tuple(x.shape)}")
        if known is None:
            known = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        k = known.to(x.device, x.dtype)[..., None]  # (B, T, 1)
        return Condition(torch.cat([x * k, k], dim=-1), mask, self.fps)

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Twenty frames of random latents with a known prefix."""
        x = torch.randn(batch_size, 20, self.latent_channels, generator=generator)
        known = torch.zeros(batch_size, 20, dtype=torch.bool)
        known[:, :8] = True
        return {"x": x, "known": known}

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """One feature row per latent frame."""
        b, t = inputs["x"].shape[:2]
        return {"features": (b, t, self.dim)}
