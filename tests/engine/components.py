"""Test-local components for the engine tests: a pass-through latent codec and two tiny encoders."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vssflow.core.conditioning import AggregatorDims
from vssflow.core.dit import DiT
from vssflow.core.flow import FlowMatching
from vssflow.core.interfaces import Codec, Condition, Encoder, InputContract, MelSpec
from vssflow.core.model import FlowModel
from vssflow.core.sampling import Sampler
from vssflow.core.sequence import SequenceSpec
from vssflow.registry import create


class LatentCodec(Codec):
    """A codec whose latent is the waveform cut into frames (tests mostly pass latents directly)."""

    def __init__(self, channels: int = 2, hop_length: int = 100, sample_rate: int = 100) -> None:
        super().__init__()
        self.channels, self.hop_length, self.sample_rate = channels, hop_length, sample_rate
        self.mel = MelSpec(sample_rate=sample_rate, hop_length=hop_length, n_mels=channels)

    def encode(self, wav: Tensor) -> Tensor:
        """(B, S) -> (B, S // hop, C): each frame's first C samples."""
        b, s = wav.shape
        return wav[:, : s // self.hop_length * self.hop_length].view(b, -1, self.hop_length)[..., : self.channels]

    def decode(self, latent: Tensor) -> Tensor:
        """(B, T, C) -> (B, C, T)."""
        return latent.transpose(1, 2)


class ClassEncoder(Encoder):
    """Class ids (B,) -> one learned token (B, 1, dim), no fps."""

    modality = "features"

    def __init__(self, classes: int, dim: int) -> None:
        super().__init__()
        self.dim, self.fps = dim, None
        self.embed = nn.Embedding(classes, dim)

    @property
    def contract(self) -> InputContract:
        return InputContract("features")

    def forward(self, x: Tensor, mask: Tensor | None = None, **extras: Any) -> Condition:
        return Condition(self.embed(x.long())[:, None], None, None)


class FeatureEncoder(Encoder):
    """Features (B, L, dim) at `fps`, passed through; counts its calls."""

    modality = "features"
    frozen = True

    def __init__(self, dim: int, fps: float | None) -> None:
        super().__init__()
        self.dim, self.fps, self.calls = dim, fps, 0

    @property
    def contract(self) -> InputContract:
        return InputContract("features", fps=self.fps, dim=self.dim)

    def forward(self, x: Tensor, mask: Tensor | None = None, **extras: Any) -> Condition:
        self.calls += 1
        return Condition(x, mask, self.fps)


SMALL_DIT: dict[str, Any] = dict(depth=2, width=32, heads=4, ffn_hidden=64, time_dim=32, attention="sdpa")


def small_dit(latent_channels: int = 3, cond_channels: int = 0, cross_attention: bool = True, **overrides: Any) -> DiT:
    """A CPU-sized DiT with its final sizes."""
    return DiT(**{**SMALL_DIT, **overrides}, latent_channels=latent_channels, cond_channels=cond_channels,
               cross_attention=cross_attention)


def make_model(
    conditions: dict[str, tuple[Encoder, str, dict[str, Any]]],
    spec: SequenceSpec,
    backbone: dict[str, Any] | None = None,
    channels: int = 4,
    sampler: Sampler | None = None,
    **model_kwargs: Any,
) -> FlowModel:
    """Construct aggregators and backbone once, with final sizes, the way registry.assemble does.

    conditions: {name: (encoder, aggregator name, aggregator params)}; backbone: DiT params over SMALL_DIT.
    """
    params = {**SMALL_DIT, **(backbone or {})}
    width = params["width"]
    context_dim = params.get("context_dim") or width
    aggregators = {
        name: create("aggregator", agg, {"dims": AggregatorDims(enc.dim, enc.fps, width, context_dim)}, **agg_params)
        for name, (enc, agg, agg_params) in conditions.items()
    }
    dit = DiT(
        **params, latent_channels=channels, cond_channels=sum(a.channels for a in aggregators.values()),
        cross_attention=any(a.uses_context for a in aggregators.values()),
    )
    codec = LatentCodec(channels, spec.hop_length, spec.sample_rate)
    return FlowModel(
        codec, dit, {n: e for n, (e, _, _) in conditions.items()}, aggregators,
        spec, model_kwargs.pop("flow", FlowMatching()), sampler=sampler, **model_kwargs,
    )


def raw_conditions(assembly, b: int = 2, seed: int = 0) -> dict:
    """Random raw inputs for every condition of a tiny recipe, from each encoder's contract."""
    g = torch.Generator().manual_seed(seed)
    spec, out = assembly.spec, {}
    present = torch.ones(b, dtype=torch.bool)
    for name, encoder in assembly.model.encoders.items():
        contract = encoder.contract
        if contract.modality == "video":
            length = spec.condition_frames(contract.fps)
            x = torch.rand(b, length, 3, *contract.size, generator=g)
            out[name] = {"x": x, "mask": torch.ones(b, length, dtype=torch.bool)}
        elif contract.modality == "transcript":
            ids = torch.randint(1, 30, (b, 12), generator=g)
            out[name] = {"x": ids, "mask": ids > 0, "span": torch.tensor([[0.3, 2.5]] * b)}
        elif contract.modality == "speaker":
            out[name] = {"x": 0.1 * torch.randn(b, contract.sample_rate, generator=g)}
        else:
            x = torch.randn(b, spec.condition_frames(contract.fps or 1.0), contract.dim, generator=g)
            out[name] = {"x": x, "mask": torch.ones(x.shape[:2], dtype=torch.bool)}
        out[name]["present"] = present
    return out
