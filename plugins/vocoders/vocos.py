"""`vocos`: a Vocos-style vocoder (ConvNeXt backbone + iSTFT head), trained with `vssflow train-vocoder`.

    mel (B, M, F) --conv k7, LN--> (B, F, D) --ConvNeXt blocks, LN--> --linear--> (B, F, n_fft + 2)
    --split--> log-magnitude, phase --exp, polar--> complex spectrum (B, n_fft/2+1, F) --istft_same--> (B, F * hop)
The iSTFT runs on core.audio's framing (the mel's own), so output sample k * hop lines up with mel frame k
and the output is exactly F * hop long. All computation stays at the frame rate, which makes it much faster
than a HiFi-GAN of similar quality on CPU.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vssflow.core.audio import istft_same
from vssflow.core.errors import ContractError
from vssflow.core.interfaces import MelSpec, Vocoder

from ..mel import MelParams, mel_params, split_mel
from .base import check_mel_input, load_strict, read_folder, write_folder


class ConvNeXtBlock(nn.Module):
    """Depthwise conv k7, LayerNorm, pointwise MLP, layer scale, residual. (B, D, F) -> (B, D, F)."""

    def __init__(self, dim: int, intermediate_dim: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, intermediate_dim)
        self.down = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, x: Tensor) -> Tensor:
        """(B, D, F) -> (B, D, F)."""
        h = self.dwconv(x).transpose(1, 2)  # (B, F, D)
        h = self.down(nn.functional.gelu(self.up(self.norm(h)))) * self.gamma
        return x + h.transpose(1, 2)


class VocosVocoder(Vocoder):
    """ConvNeXt backbone + iSTFT head: natural-log mel (B, M, F) -> waveform (B, F * hop)."""

    def __init__(
        self,
        mel: MelSpec = MelSpec(),
        dim: int = 512,
        intermediate_dim: int = 1536,
        layers: int = 8,
        head_n_fft: int | None = None,
    ):
        super().__init__()
        self.mel = mel
        hop = mel.hop_length
        # the head's STFT: 4 hops per window (Vocos' ratio) unless told otherwise
        self.head_n_fft = int(head_n_fft or 4 * hop)
        if (self.head_n_fft - hop) % 2 or self.head_n_fft < hop:
            raise ContractError(f"vocos: head_n_fft - hop_length must be even and >= 0, got {self.head_n_fft}")
        self.config = {  # config.json: the flat params (the mel analysis as MelParams fields)
            **mel_params(mel), "dim": dim, "intermediate_dim": intermediate_dim, "layers": layers,
            "head_n_fft": self.head_n_fft,
        }
        self.embed = nn.Conv1d(mel.n_mels, dim, 7, padding=3)
        self.norm = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(ConvNeXtBlock(dim, intermediate_dim, 1.0 / max(layers, 1)) for _ in range(layers))
        self.final_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, self.head_n_fft + 2)

    @classmethod
    def from_pretrained(cls, path: str | Path, **params: Any) -> VocosVocoder:
        """Load a folder written by `save_pretrained` / train-vocoder; params must agree with its config.json."""
        config, state = read_folder(path, "vocoder 'vocos'")
        own = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k not in ("self", "mel")}
        defaults = {**MelParams().model_dump(), **own}
        for key, value in params.items():
            if key in config and value != defaults.get(key) and value != config[key]:
                raise ContractError(
                    f"vocoder 'vocos': params ask for {key}={value}, {path}/config.json has {key}={config[key]}"
                )
        unknown = sorted(set(config) - set(defaults))
        if unknown:
            raise ContractError(f"vocoder 'vocos': {path}/config.json has unknown keys {unknown}")
        mel, rest = split_mel(config)
        vocoder = cls(mel, **rest)
        load_strict(vocoder, state, f"vocoder 'vocos' from {path}")
        return vocoder

    def save_pretrained(self, path: str | Path) -> Path:
        """Write config.json (the constructor arguments) and model.safetensors."""
        return write_folder(path, self.config, self.state_dict())


    def forward(self, mel: Tensor) -> Tensor:
        """(B, M, F) natural-log mel -> (B, F * hop)."""
        check_mel_input(self, mel)
        h = self.norm(self.embed(mel).transpose(1, 2)).transpose(1, 2)  # (B, D, F)
        for block in self.blocks:
            h = block(h)
        out = self.head(self.final_norm(h.transpose(1, 2))).transpose(1, 2)  # (B, n_fft + 2, F)
        log_mag, phase = out.float().chunk(2, dim=1)  # (B, n_fft/2 + 1, F) each
        magnitude = torch.exp(log_mag).clamp_max(1e2)  # the clamp keeps early training from exploding
        spec = torch.polar(magnitude, phase)
        return istft_same(spec, self.head_n_fft, self.mel.hop_length)
