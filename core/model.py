"""FlowModel: codec + one encoder/aggregator branch per condition + backbone, under the flow objective.

    batch["wav"] (B, S) --codec.encode (frozen)--> x1 (B, T, C)          (or batch["latent"] directly)
    batch["conditions"][name] --encoder--> Condition (B, L, D) --aggregator (drop/null)--> Conditioning
    loss:      FlowMatching.loss(fn(t, x) = backbone(x, t, conditioning, mask), x1, mask)
    generate:  encode conditions ONCE, aggregate each guidance variant once, then every sampler step is
               one backbone call over all variants (core/sampling.py), x1 --codec.decode--> mel --vocoder--> wav

Batch format: docs/architecture.md "Samples and batches". A condition missing from the batch, or with
`present` False for a sample, uses that condition's learned null embedding, exactly as a CFG drop does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .conditioning import Aggregator, Backbone, Conditioning, condition_keep
from .errors import ContractError
from .flow import FlowLoss, FlowMatching
from .interfaces import Codec, Condition, Encoder, PromptEncoder, Vocoder, lengths_mask
from .prompt import prompt_generators
from .sampling import GuidedVelocity, Sampler
from .sequence import SequenceSpec

DROPOUT_MODES = ("per-sample", "per-batch")


@dataclass
class EncodedCondition:
    """One condition after its encoder: features (B, L, D) with mask and fps, and which samples have it (B,)."""

    condition: Condition
    present: Tensor


@dataclass
class Generation:
    """What `generate` returns: latents (B, T, C), their mask, mel (B, M, F) and wav (B, S) when decoded
    (multi-channel audio: mel (B, A, M, F), wav (B, A, S); a waveform codec gives no mel)."""

    latent: Tensor
    mask: Tensor
    mel: Tensor | None = None
    wav: Tensor | None = None
    nfe: int = 0


def component_name(module: nn.Module) -> str:
    """The name a component was registered under (its `name` attribute, or its class, when built directly)."""
    info = getattr(module, "vssflow_component", None)
    return info.name if info is not None else getattr(module, "name", None) or type(module).__name__


def _freeze(module: nn.Module | None) -> None:
    if module is not None:
        module.requires_grad_(False)
        module.eval()


class FlowModel(nn.Module):
    """Codec + per-condition encoder/aggregator branches + backbone, trained and sampled by flow matching."""

    def __init__(
        self,
        codec: Codec,
        backbone: Backbone,
        encoders: Mapping[str, Encoder],
        aggregators: Mapping[str, Aggregator],
        spec: SequenceSpec,
        flow: FlowMatching | None = None,
        dropout: Mapping[str, float] | None = None,
        cond_dropout: float = 0.0,
        dropout_mode: str = "per-sample",
        sampler: Sampler | None = None,
        vocoder: Vocoder | None = None,
    ) -> None:
        super().__init__()
        if set(encoders) != set(aggregators):
            raise ContractError(f"every condition needs an encoder and an aggregator: {sorted(encoders)} vs {sorted(aggregators)}")
        if dropout_mode not in DROPOUT_MODES:
            raise ValueError(f"dropout_mode must be one of {DROPOUT_MODES}, got {dropout_mode!r}")
        self.codec, self.backbone, self.vocoder = codec, backbone, vocoder
        self.encoders = nn.ModuleDict(dict(encoders))
        self.aggregators = nn.ModuleDict(dict(aggregators))
        self.names = list(encoders)  # recipe order: channel order, guidance chain order
        # audio-prompt conditions (known latents + mask): built by the model itself, kept in every guidance
        # variant, outside the joint dropout (docs/continuation.md)
        self.prompt_names = [n for n in self.names if isinstance(encoders[n], PromptEncoder)]
        self.spec = spec
        self.flow = flow or FlowMatching()
        self.dropout = {name: float((dropout or {}).get(name, 0.0)) for name in self.names}
        self.cond_dropout, self.dropout_mode = float(cond_dropout), dropout_mode
        self.sampler = sampler
        _freeze(codec)
        _freeze(vocoder)
        for enc in self.encoders.values():
            if getattr(enc, "frozen", False):
                _freeze(enc)

    def train(self, mode: bool = True) -> FlowModel:
        """Train mode for trainable parts; frozen codec, vocoder and frozen encoders stay in eval."""
        super().train(mode)
        for module in (self.codec, self.vocoder, *[e for e in self.encoders.values() if getattr(e, "frozen", False)]):
            if module is not None:
                module.eval()
        return self

    @property
    def latent_channels(self) -> int:
        """C, the codec's latent channels."""
        return self.codec.channels

    # ---------------------------------------------------------------------------------------------------------
    # preprocessing: latents and conditions (once per sample)

    @torch.no_grad()
    def encode_latent(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        """Target latents x1 (B, T, C) and their mask (B, T): batch["latent"] if given, else codec.encode(wav)."""
        if "latent" in batch:
            x1 = batch["latent"]  # (B, T, C)
            lengths = batch.get("latent_lengths")
            mask = lengths_mask(lengths.to(x1.device), x1.shape[1]) if lengths is not None else torch.ones(
                x1.shape[:2], dtype=torch.bool, device=x1.device
            )
            return x1, mask
        wav = batch["wav"]  # (B, S)
        x1 = self.codec.encode(wav)  # (B, T, C)
        hop = self.codec.hop_length
        lengths = batch.get("wav_lengths")
        if lengths is None:
            return x1, torch.ones(x1.shape[:2], dtype=torch.bool, device=x1.device)
        frames = (lengths.to(x1.device) + hop - 1) // hop  # a frame is valid if it holds any valid sample
        return x1, lengths_mask(frames, x1.shape[1])

    def encode_conditions(self, conditions: Mapping[str, Any], batch_size: int) -> dict[str, EncodedCondition]:
        """Run each condition's encoder once. conditions: {name: {"x", "mask", "present", **extras}}.

        A condition missing from `conditions` is absent for every sample (its encoder does not run).
        """
        unknown = sorted(set(conditions) - set(self.names))
        if unknown:
            raise ContractError(f"conditions {unknown} are not in this model (it has: {', '.join(self.names) or 'none'})")
        out: dict[str, EncodedCondition] = {}
        for name in self.names:
            if name not in conditions:
                continue
            entry = conditions[name]
            if not isinstance(entry, Condition) and entry.get("present") is not None and not bool(entry["present"].any()):
                continue  # no sample carries it (a V2S-only batch has no voice): absent, its encoder never sees padding
            if isinstance(entry, Condition):
                cond, present = entry, None
            elif entry.get("encoded"):  # features from the cache of a frozen encoder: skip the encoder
                cond, present = Condition(entry["x"], entry.get("mask"), self.encoders[name].fps), entry.get("present")
            else:
                extras = {k: v for k, v in entry.items() if k not in ("x", "mask", "present", "encoded")}
                encoder = self.encoders[name]
                with torch.set_grad_enabled(torch.is_grad_enabled() and not getattr(encoder, "frozen", False)):
                    cond = encoder(entry["x"], entry.get("mask"), **extras)
                present = entry.get("present")
            device = cond.features.device
            present = torch.ones(batch_size, dtype=torch.bool, device=device) if present is None else present.to(device)
            out[name] = EncodedCondition(cond, present.bool())
        return out

    def aggregate(
        self,
        encoded: Mapping[str, EncodedCondition],
        batch_size: int,
        num_frames: int,
        drop: Mapping[str, Tensor] | None = None,
        device: torch.device | None = None,
    ) -> Conditioning:
        """Every branch's Conditioning on a grid of `num_frames` latent frames, merged (recipe order).

        A condition is kept for a sample when present, not in `drop` (B,) and with a valid frame; otherwise
        its aggregator puts the null embedding there. A condition missing from `encoded` is absent for the
        whole batch: its aggregator sees one zero frame per sample, all not kept.
        """
        spec = self.spec.for_frames(num_frames)
        parts = []
        for name in self.names:
            aggregator, encoder = self.aggregators[name], self.encoders[name]
            enc = encoded.get(name)
            if enc is None:
                condition = Condition(torch.zeros(batch_size, 1, aggregator.dims.in_dim, device=device), None, encoder.fps)
                keep = torch.zeros(batch_size, dtype=torch.bool, device=device)
            else:
                condition = enc.condition
                self._check_dim(name, condition)
                keep = condition_keep(condition, enc.present, None if drop is None else drop.get(name))
            parts.append(aggregator(condition, keep, spec))
        return Conditioning.merge(parts)

    def _check_dim(self, name: str, condition: Condition) -> None:
        """ContractError naming the condition, its encoder and its aggregator when the feature dim is wrong."""
        got, want = condition.features.shape[-1], self.aggregators[name].dims.in_dim
        if got != want:
            raise ContractError(
                f"condition {name!r}: encoder {component_name(self.encoders[name])!r} gave features of dim {got}, "
                f"but aggregator {component_name(self.aggregators[name])!r} was built for dim {want} "
                f"(fix the encoder's output, or rebuild a feature cache made with another encoder)"
            )

    def sample_dropout(
        self, batch_size: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Classifier-free dropout (B,) bool per condition: its own `dropout` OR the joint `cond_dropout`."""
        u = torch.rand(batch_size, len(self.names) + 1, generator=generator, device=device)
        return self.dropout_from_uniforms(u)

    def dropout_from_uniforms(self, u: Tensor) -> dict[str, Tensor]:
        """Dropout decisions from uniforms u (B, 1 + N): column 0 decides the joint drop, column 1 + i
        condition i. per-sample: every sample decides for itself; per-batch: the first row decides for the
        whole batch (the public VSSFlow code's behaviour)."""
        if self.dropout_mode == "per-batch":
            u = u[:1].expand_as(u)
        joint = u[:, 0] < self.cond_dropout  # (B,)
        return {name: (u[:, 1 + i] < self.dropout[name]) | (joint if name not in self.prompt_names else False)
                for i, name in enumerate(self.names)}

    def draw_noise(
        self,
        x1: Tensor,
        seeds: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Training randomness: times t (B,), noise x0 like x1, dropout uniforms (B, 1 + N).

        With `seeds` (B,) each sample draws from its own generator (the trainer derives them from the step
        and the sample's global position), so the draws do not depend on batch split or world size; noise is
        drawn for the whole window and cut to T, so it does not depend on how far the batch is padded either.
        """
        b, n, device = x1.shape[0], len(self.names) + 1, x1.device
        if seeds is None:
            t = self.flow.sample_time(b, device, generator)
            x0 = torch.randn(x1.shape, generator=generator, device=device, dtype=x1.dtype)
            return t, x0, torch.rand(b, n, generator=generator, device=device)
        ts, x0s, us = [], [], []
        frames, rest = x1.shape[1], x1.shape[2:]
        for seed in seeds.tolist():
            g = torch.Generator().manual_seed(int(seed))
            ts.append(self.flow.sample_time(1, "cpu", g))
            us.append(torch.rand(n, generator=g))
            x0s.append(torch.randn(max(frames, self.spec.num_frames), *rest, generator=g)[:frames])
        return torch.cat(ts).to(device), torch.stack(x0s).to(device, x1.dtype), torch.stack(us).to(device)

    # ---------------------------------------------------------------------------------------------------------
    # the network as fn(t, x)

    def velocity(self, x: Tensor, t: Tensor, conditioning: Conditioning, mask: Tensor | None = None) -> Tensor:
        """Predicted velocity (B, T, C) for noisy latents x (B, T, C) at times t (B,)."""
        return self.backbone(x, t, conditioning, mask)

    # ---------------------------------------------------------------------------------------------------------
    # training

    def loss_terms(
        self, batch: Mapping[str, Any], generator: torch.Generator | None = None
    ) -> tuple[FlowLoss, dict[str, Tensor]]:
        """The flow loss on a batch (with per-sample terms and times) and the dropout that was drawn.

        Randomness comes from batch["seeds"] when present (one generator per sample), else `generator`.
        """
        x1, mask = self.encode_latent(batch)  # (B, T, C), (B, T)
        b, frames = x1.shape[:2]
        t, x0, u = self.draw_noise(x1, batch.get("seeds"), generator)
        conditions, loss_mask = self.training_prompts(batch, x1, mask, generator)
        encoded = self.encode_conditions(conditions, b)
        drop = self.dropout_from_uniforms(u) if self.training else {}
        conditioning = self.aggregate(encoded, b, frames, drop, device=x1.device)
        result = self.flow.loss(lambda t, x: self.velocity(x, t, conditioning, mask), x1, loss_mask, t=t, x0=x0)
        return result, drop

    def training_prompts(
        self, batch: Mapping[str, Any], x1: Tensor, mask: Tensor, generator: torch.Generator | None = None
    ) -> tuple[dict[str, Any], Tensor]:
        """The batch's conditions plus each audio-prompt condition drawn from the targets, and the loss mask.

        Each prompt encoder picks known spans per sample (`PromptEncoder.draw_known`, from the sample's seed
        when the batch has seeds); the condition carries x1 with those frames known, and the loss counts only
        frames that are valid and not given (a sample with no known frame has no prompt: null embedding).
        """
        conditions = dict(batch.get("conditions", {}))
        if not self.prompt_names:
            return conditions, mask
        gens = prompt_generators(batch.get("seeds"), x1.shape[0], generator)
        unknown = mask
        for name in self.prompt_names:
            entry = conditions.get(name)
            if isinstance(entry, Mapping) and "known" in entry:  # given by the caller (a test, a fixed evaluation)
                known = entry["known"].to(mask.device)
            else:
                known = self.encoders[name].draw_known(mask, gens)  # (B, T)
                conditions[name] = {"x": x1, "known": known, "present": known.any(1)}
            unknown = unknown & ~known
        return conditions, unknown

    def loss(self, batch: Mapping[str, Any], generator: torch.Generator | None = None) -> Tensor:
        """Scalar flow-matching loss of a batch (masked MSE on the latent channels)."""
        return self.loss_terms(batch, generator)[0].loss

    def forward(self, batch: Mapping[str, Any]) -> Tensor:
        """The training loss (so DDP and hooks see a normal forward)."""
        return self.loss(batch)

    # ---------------------------------------------------------------------------------------------------------
    # generation

    def guided_velocity(
        self,
        conditions: Mapping[str, Any],
        batch_size: int,
        num_frames: int,
        sampler: Sampler | None = None,
        negative: Mapping[str, Any] | None = None,
    ) -> GuidedVelocity:
        """Encode conditions once, aggregate each guidance variant once, and return fn(t, x) that evaluates
        every variant in ONE backbone call and combines them (the sampler's guidance settings).

        negative: batch-format values for some conditions. Where a guidance variant leaves a condition out,
        it takes that condition's negative value instead of its null embedding, so for one condition
        v = v(neg) + w (v(pos) - v(neg)), and in the per-condition chain the negative stands for "without
        this condition" (core/sampling.py). A sample whose negative is not `present` uses the null there.
        """
        sampler = sampler or self.sampler
        device = next(self.backbone.parameters()).device
        encoded = self.encode_conditions(conditions, batch_size)  # once per sample
        negative = dict(negative or {})
        unknown = sorted(set(negative) - set(self.names))
        if unknown:
            raise ContractError(
                f"negative values for {unknown}, which are not conditions of this model "
                f"(it has: {', '.join(self.names) or 'none'})"
            )
        encoded_negative = self.encode_conditions(negative, batch_size)  # absent where no sample has one
        for name, neg in encoded_negative.items():  # every variant of a condition: one token/frame count
            encoded[name], encoded_negative[name] = _common_length(encoded.get(name), neg)
        plan = sampler.guidance_plan([n for n in self.names if n not in self.prompt_names])
        variants = []
        for term in plan:
            chosen, drop = dict(encoded), {}
            for n in self.names:
                if n in term.keep or n in self.prompt_names:  # given audio is context in every variant
                    drop[n] = torch.zeros(batch_size, dtype=torch.bool, device=device)
                elif n in encoded_negative:  # the negative replaces the null branch of this condition
                    chosen[n] = encoded_negative[n]
                    drop[n] = torch.zeros(batch_size, dtype=torch.bool, device=device)
                else:
                    drop[n] = torch.ones(batch_size, dtype=torch.bool, device=device)
            variants.append(self.aggregate(chosen, batch_size, num_frames, drop, device))
        conditioning = Conditioning.stack(variants)  # (K*B, ...), reused at every step
        return GuidedVelocity(lambda t, x: self.velocity(x, t, conditioning), [term.weight for term in plan])

    @torch.no_grad()
    def generate(
        self,
        conditions: Mapping[str, Any] | None = None,
        *,
        batch_size: int | None = None,
        duration: float | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        condition_guidance: Mapping[str, float] | None = None,
        sampler: Sampler | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
        decode: bool = True,
        negative: Mapping[str, Any] | None = None,
    ) -> Generation:
        """Sample latents for `duration` seconds (default: the recipe's window) and decode them to audio.

        conditions: batch-format {name: {"x", "mask", "present", **extras}} (a missing name is dropped).
        steps / guidance / condition_guidance override the sampler's params (validated by its params model).
        negative: batch-format negative values of some conditions; guidance contrasts with them instead of
        the null embedding (`guided_velocity`).
        Noise: `seeds` (one per sample) gives each sample its own, independent of the batch it is in;
        else `generator`, else `seed` seeds one generator for the whole batch.
        """
        conditions = dict(conditions or {})
        sampler = sampler or self.sampler
        if sampler is None:
            raise ContractError("generate needs a sampler (pass sampler=..., or build the model from a recipe)")
        changes = {"steps": steps, "guidance": guidance, "condition_guidance": condition_guidance}
        if any(v is not None for v in changes.values()):
            sampler = sampler.replace(**changes)
        b = batch_size if batch_size is not None else _batch_size(conditions)
        device = next(self.backbone.parameters()).device
        frames = self.spec.frames_for(duration) if duration is not None else self.spec.num_frames
        if generator is None and seed is not None:
            generator = torch.Generator(device=device).manual_seed(seed)

        field = self.guided_velocity(conditions, b, frames, sampler, negative)
        if seeds is not None:
            if len(seeds) != b:
                raise ValueError(f"generate: {len(seeds)} seeds for a batch of {b}")
            x0 = torch.stack([
                torch.randn(frames, self.latent_channels, generator=torch.Generator().manual_seed(int(s)))
                for s in seeds
            ]).to(device)  # (B, T, C), each sample's own CPU stream: the same on any device and batch
        else:
            x0 = torch.randn(b, frames, self.latent_channels, generator=generator, device=device)  # (B, T, C)
        result = sampler(field, x0)
        latent = self.keep_known(result.x, conditions)  # (B, T, C)
        mask = torch.ones(b, frames, dtype=torch.bool, device=device)
        out = Generation(latent, mask, nfe=result.nfe)
        if decode:
            out.mel, out.wav = decode_latent(self.codec, self.vocoder, latent)
        return out

    def keep_known(self, latent: Tensor, conditions: Mapping[str, Any]) -> Tensor:
        """Latents (B, T, C) with every frame an audio-prompt condition gives replaced by the given one."""
        for name in self.prompt_names:
            entry = conditions.get(name)
            if entry is None or isinstance(entry, Condition) or "known" not in entry:
                continue
            known = entry["known"].to(latent.device)[..., None]  # (B, T, 1)
            if entry.get("present") is not None:
                known = known & entry["present"].to(latent.device).bool()[:, None, None]
            given = entry["x"].to(latent.device, latent.dtype)[:, : latent.shape[1]]
            latent = torch.where(known[:, : latent.shape[1]], given, latent)
        return latent


def decode_latent(codec: Codec, vocoder: Vocoder | None, latent: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """Latents (B, T, C) -> (mel, wav). A mel codec gives mel (B, M, F), or (B, A, M, F) for A audio channels,
    and the vocoder turns each channel's mel into (B, S) or (B, A, S) (wav None without a vocoder); a
    waveform codec (`codec.output == "wav"`) decodes straight to (B, S) or (B, A, S) and mel is None."""
    decoded = codec.decode(latent)
    if getattr(codec, "output", "mel") == "wav":
        return None, decoded
    if vocoder is None:
        return decoded, None
    if decoded.dim() == 4:  # one mel per audio channel: the vocoder is mono, so channels ride in the batch
        b, a = decoded.shape[:2]
        return decoded, vocoder(decoded.flatten(0, 1)).unflatten(0, (b, a))
    return decoded, vocoder(decoded)


def _pad_condition(enc: EncodedCondition, length: int) -> EncodedCondition:
    """The condition padded (masked, zero features) to `length` frames or tokens."""
    cond = enc.condition
    feats = cond.features  # (B, L, D)
    b, have = feats.shape[:2]
    mask = cond.mask if cond.mask is not None else torch.ones(b, have, dtype=torch.bool, device=feats.device)
    if have < length:
        feats = torch.cat([feats, feats.new_zeros(b, length - have, *feats.shape[2:])], dim=1)
        mask = torch.cat([mask, mask.new_zeros(b, length - have)], dim=1)
    return EncodedCondition(Condition(feats, mask, cond.fps), enc.present)


def _common_length(
    positive: EncodedCondition | None, negative: EncodedCondition
) -> tuple[EncodedCondition, EncodedCondition]:
    """A condition's positive and negative values padded to one length, so the guidance variants stack
    (a caption and its negative prompt have different token counts). A missing positive becomes an absent
    one (present False everywhere) of that length, which its aggregator turns into the null embedding."""
    if positive is None:
        feats = negative.condition.features
        positive = EncodedCondition(
            Condition(torch.zeros_like(feats), torch.zeros(feats.shape[:2], dtype=torch.bool, device=feats.device),
                      negative.condition.fps),
            torch.zeros_like(negative.present),
        )
    length = max(positive.condition.features.shape[1], negative.condition.features.shape[1])
    return _pad_condition(positive, length), _pad_condition(negative, length)


def _batch_size(conditions: Mapping[str, Any]) -> int:
    for entry in conditions.values():
        x = entry.features if isinstance(entry, Condition) else entry["x"]
        return x.shape[0]
    raise ContractError("generate without conditions needs batch_size=")
