"""`speaker`: one speaker token (B, 1, dim), fps None, from a reference waveform or a precomputed vector.

waveform  a small trainable network on log-mel frames (per-utterance mean removed, as speaker systems do),
          dilated residual 1D convs, then masked mean + standard-deviation pooling over valid frames and a
          projection to `dim` (256 by default, RawNet3's size, so the two are interchangeable in a recipe).
vector    a precomputed embedding (B, dim) or (B, 1, dim), e.g. RawNet3's, validated and passed through
          (optionally layer-normalised).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vssflow.core.audio import LogMel
from vssflow.core.errors import ContractError
from vssflow.core.interfaces import Condition, Encoder, InputContract, MelSpec

from .layers import component_label


class SpeakerEncoder(Encoder):
    """Reference waveform (B, S) -> speaker embedding (B, 1, dim) from pooled log-mel statistics."""

    modality = "speaker"
    fps = None

    def __init__(self, dim: int = 256, sample_rate: int = 16000, n_mels: int = 64, channels: int = 128, layers: int = 3):
        super().__init__()
        self.dim, self.sample_rate = int(dim), int(sample_rate)
        hop = sample_rate // 100  # 10 ms hop, 40 ms window: the usual speaker-verification analysis
        n_fft = 4 * hop + hop % 2  # n_fft - hop must be even on the shared framing
        self.mel = LogMel(MelSpec(sample_rate, n_fft, n_fft, hop, n_mels, 0.0, sample_rate / 2))
        self.inp = nn.Conv1d(n_mels, channels, 5, padding=2)
        self.blocks = nn.ModuleList(
            nn.Conv1d(channels, channels, 3, padding=d, dilation=d) for d in range(2, 2 + layers)
        )
        # per-frame norms: statistics over time would let padding change the valid frames
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(layers))
        self.proj = nn.Linear(2 * channels, self.dim)

    @property
    def contract(self) -> InputContract:
        """Mono waveform at `sample_rate`."""
        return InputContract("speaker", sample_rate=self.sample_rate, extra={"output": "one token, fps None"})

    def forward(self, x: Tensor, mask: Tensor | None = None, **extras: Any) -> Condition:
        """waveform (B, S), sample mask (B, S) -> Condition (B, 1, dim)."""
        label = component_label(self)
        if x.dim() != 2:
            raise ContractError(f"{label}: expected a waveform (B, S), got shape {tuple(x.shape)}")
        rate = extras.get("sample_rate")
        if rate is not None and int(rate) != self.sample_rate:
            raise ContractError(f"{label}: expected audio at {self.sample_rate} Hz, got {int(rate)} Hz (resample first)")
        spec = self.mel.spec
        logmel = self.mel(x)  # (B, M, F)
        frames = logmel.shape[-1]
        lengths = torch.full((x.shape[0],), x.shape[1], device=x.device) if mask is None else mask.sum(dim=1)
        # a frame is valid when its whole window lies inside the valid samples, so padding never enters
        last = (lengths - (spec.n_fft + spec.hop_length) // 2) // spec.hop_length  # (B,)
        valid = torch.arange(frames, device=x.device)[None] <= last.clamp_min(0)[:, None]  # (B, F)
        w = valid[:, None, :].to(logmel.dtype)
        count = w.sum(dim=-1, keepdim=True)
        logmel = (logmel - (logmel * w).sum(-1, keepdim=True) / count) * w  # remove the channel (mic) colour
        h = F.silu(self.inp(logmel)) * w  # (B, C, F)
        for conv, norm in zip(self.blocks, self.norms, strict=True):
            h = h + conv(F.silu(norm(h.transpose(1, 2))).transpose(1, 2) * w) * w
        mean = (h * w).sum(-1) / count[..., 0]  # (B, C)
        std = (((h - mean[..., None]) ** 2 * w).sum(-1) / count[..., 0] + 1e-5).sqrt()
        emb = self.proj(torch.cat([mean, std], dim=-1))  # (B, dim)
        return Condition(emb[:, None], torch.ones(x.shape[0], 1, dtype=torch.bool, device=x.device), None)

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Half a second of noise; the last sample is only 0.3 s long."""
        n = self.sample_rate // 2
        mask = torch.ones(batch_size, n, dtype=torch.bool)
        mask[-1, int(0.3 * self.sample_rate) :] = False
        return {"x": 0.1 * torch.randn(batch_size, n, generator=generator), "mask": mask}

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """One token."""
        return {"features": (inputs["x"].shape[0], 1, self.dim)}


class SpeakerVectorEncoder(Encoder):
    """A precomputed speaker vector (B, dim) or (B, 1, dim) (RawNet3, ECAPA, ...) as one token."""

    modality = "features"
    fps = None

    def __init__(self, dim: int = 256, layer_norm: bool = False):
        super().__init__()
        self.dim = int(dim)
        self.norm = nn.LayerNorm(self.dim) if layer_norm else nn.Identity()
        self.frozen = not layer_norm

    @property
    def contract(self) -> InputContract:
        """A vector of `dim` values per clip."""
        return InputContract("features", dim=self.dim, extra={"shape": "(dim,) or (1, dim) per clip"})

    def forward(self, x: Tensor, mask: Tensor | None = None, **extras: Any) -> Condition:
        """(B, dim) or (B, 1, dim) -> Condition (B, 1, dim)."""
        label = component_label(self)
        if x.dim() == 2:
            x = x[:, None]
        if x.dim() != 3 or x.shape[1] != 1:
            raise ContractError(f"{label}: expected a speaker vector (B, dim) or (B, 1, dim), got {tuple(x.shape)}")
        if x.shape[-1] != self.dim:
            raise ContractError(f"{label}: expected speaker vectors of dim {self.dim}, got dim {x.shape[-1]}")
        out = self.norm(x.float())
        return Condition(out, torch.ones(x.shape[0], 1, dtype=torch.bool, device=x.device), None)

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Random vectors."""
        return {"x": torch.randn(batch_size, self.dim, generator=generator)}

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """One token."""
        return {"features": (inputs["x"].shape[0], 1, self.dim)}
