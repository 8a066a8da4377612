"""Recipe -> objects. Every size is resolved first, then every component is constructed exactly once
through `vssflow.registry.create`, with its recipe params plus the sizes it needs (`runtime`):

    codec, vocoder                 -> SequenceSpec(audio.sample_rate, codec.hop_length, audio.duration_s)
    backbone params (validated)    -> width, context_dim (default: width)
    per condition: encoder         -> dim, fps   (an audio-prompt encoder <- latent channels and frame rate)
                   aggregator      <- AggregatorDims(encoder dim, encoder fps, width, context_dim)
    backbone                       <- latent_channels = codec channels, cond_channels = sum of the
                                      aggregators' channels, cross_attention = any aggregator uses context
    sampler, flow objective        -> FlowModel

`count_parameters(recipe)` builds the same objects on the meta device (no memory, no init cost).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vssflow.core.conditioning import Aggregator, AggregatorDims
from vssflow.core.errors import RecipeError, VssflowError
from vssflow.core.flow import FlowMatching
from vssflow.core.interfaces import Vocoder
from vssflow.core.model import FlowModel
from vssflow.core.sampling import Sampler
from vssflow.core.sequence import SequenceSpec

from .catalog import validate_params
from .manager import get_registry
from .recipe import Recipe, load_recipe


@dataclass
class Assembly:
    """A built recipe: the model (codec, encoders, aggregators, backbone), vocoder, sampler and grid."""

    recipe: Recipe
    model: FlowModel
    vocoder: Vocoder | None  # None: the codec decodes straight to a waveform
    sampler: Sampler
    spec: SequenceSpec


def _create(kind: str, key: str, ref: Any, runtime: dict[str, Any] | None = None) -> Any:
    """create() with the recipe key in the error message."""
    try:
        return get_registry().create(kind, ref.name, runtime, **ref.params)
    except VssflowError as exc:
        raise RecipeError(f"{key}: {exc}") from None


def _create_meta_first(kind: str, key: str, ref: Any, runtime: dict[str, Any] | None = None) -> Any:
    """create() on the meta device; a component that computes at init (mel filterbanks, loaded weights)
    is built on the CPU instead."""
    try:
        return _create(kind, key, ref, runtime)
    except VssflowError:
        raise
    except Exception:  # noqa: BLE001 - meta tensors cannot run data-dependent init code
        with torch.device("cpu"):
            return _create(kind, key, ref, runtime)


def backbone_sizes(ref: Any) -> tuple[int, int]:
    """(width, context_dim) of a backbone reference, from its validated params, before it is constructed."""
    params = validate_params(get_registry().catalog.get("backbone", ref.name), ref.params, where="backbone.params")
    width = getattr(params, "width", None)
    if not isinstance(width, int):
        raise RecipeError(f"backbone: {ref.name!r} has no integer `width` param, which aggregators are sized by")
    context_dim = getattr(params, "context_dim", None)
    return width, context_dim if context_dim is not None else width


@contextmanager
def _where(key: str):
    """Re-raise a component's contract error as a recipe error naming `key`."""
    try:
        yield
    except VssflowError as exc:
        raise RecipeError(f"{key}: {exc}") from None


def _resolve(recipe: Recipe | str | Path, overrides: Iterable[str] = ()) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    return load_recipe(recipe, overrides)


def build(
    recipe: Recipe | str | Path,
    device: torch.device | str | None = None,
    seed: int | None = None,
    overrides: Iterable[str] = (),
) -> Assembly:
    """Build a recipe (object, path or built-in name) into an Assembly; parameters initialised from `seed`
    (default: the recipe's train.seed) without touching the global RNG.

    device="meta" builds shapes only (instant, no memory): components that must compute at init (mel
    filterbanks, loaded weights) are then built on the CPU.
    """
    recipe = _resolve(recipe, overrides)
    if device is not None and torch.device(device).type == "meta":
        with torch.device("meta"):
            return _assemble(recipe, _create_meta_first)
    seed = recipe.train.seed if seed is None else seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        assembly = _assemble(recipe)
    if device is not None:
        assembly.model.to(device)
    return assembly


def _vocoder_for(recipe: Recipe, codec: Any, create: Callable[..., Any]) -> Vocoder | None:
    """The recipe's vocoder, checked against the codec's mel and channels; None for a waveform codec."""
    channels = getattr(codec, "audio_channels", 1)
    if channels != recipe.audio.channels:
        raise RecipeError(
            f"audio.codec: codec {recipe.audio.codec.name!r} makes {channels}-channel audio but audio.channels is "
            f"{recipe.audio.channels} (set one to match the other)"
        )
    ref = recipe.audio.vocoder
    if getattr(codec, "output", "mel") == "wav":
        if ref is not None and ref.name != "griffin-lim":  # griffin-lim: the schema's default, not a choice
            raise RecipeError(
                f"audio.vocoder: codec {recipe.audio.codec.name!r} decodes straight to a waveform and takes no "
                "vocoder (write `vocoder: null`)"
            )
        return None
    if ref is None:
        raise RecipeError(f"audio.vocoder: codec {recipe.audio.codec.name!r} decodes to a mel and needs a vocoder "
                          "(e.g. `vocoder: {name: griffin-lim}`)")
    vocoder = create("vocoder", "audio.vocoder", ref)
    with _where("audio.vocoder"):
        vocoder.check_mel(codec.mel)
    return vocoder


def _encoder_runtime(ref: Any, codec: Any, spec: SequenceSpec) -> dict[str, Any] | None:
    """Sizes for encoders that read the latent itself (an audio prompt): their factory has `latent_runtime`."""
    try:
        factory = get_registry().catalog.get("encoder", ref.name).factory
    except VssflowError:
        return None  # create() reports the unknown name with the recipe key
    if getattr(factory, "latent_runtime", False):
        return {"latent_channels": codec.channels, "latent_fps": spec.latent_fps}
    return None


def _assemble(recipe: Recipe, create: Callable[..., Any] = _create) -> Assembly:
    codec = create("codec", "audio.codec", recipe.audio.codec)
    with _where("audio.codec"):
        codec.check_sample_rate(recipe.audio.sample_rate)
    vocoder = _vocoder_for(recipe, codec, create)
    spec = SequenceSpec(recipe.audio.sample_rate, codec.hop_length, recipe.audio.duration_s,
                        getattr(codec, "audio_channels", 1))
    width, context_dim = backbone_sizes(recipe.backbone)

    encoders, aggregators = {}, {}
    for name, cond in recipe.conditions.items():
        encoder = create("encoder", f"conditions.{name}.encoder", cond.encoder, _encoder_runtime(cond.encoder, codec, spec))
        dims = AggregatorDims(encoder.dim, encoder.fps, width, context_dim)
        aggregator: Aggregator = create("aggregator", f"conditions.{name}.aggregator", cond.aggregator, {"dims": dims})
        encoders[name], aggregators[name] = encoder, aggregator
    backbone = create("backbone", "backbone", recipe.backbone, {
        "latent_channels": codec.channels,
        "cond_channels": sum(a.channels for a in aggregators.values()),
        "cross_attention": any(a.uses_context for a in aggregators.values()),
    })

    sampler = create("sampler", "sampler", recipe.sampler)
    for cname in sampler.condition_guidance:
        if cname not in recipe.conditions:
            raise RecipeError(
                f"sampler.params.condition_guidance.{cname}: no condition named {cname!r} "
                f"(conditions: {', '.join(recipe.conditions) or 'none'})"
            )
    flow = FlowMatching(
        recipe.flow.t_sampling, recipe.flow.t_mean, recipe.flow.t_std, recipe.flow.t_shift, recipe.flow.loss_mask
    )
    model = FlowModel(
        codec=codec,
        backbone=backbone,
        encoders=encoders,
        aggregators=aggregators,
        spec=spec,
        flow=flow,
        dropout={name: cond.dropout for name, cond in recipe.conditions.items()},
        cond_dropout=recipe.flow.cond_dropout,
        dropout_mode=recipe.flow.dropout_mode,
        sampler=sampler,
        vocoder=vocoder,
    )
    return Assembly(recipe, model, vocoder, sampler, spec)


def _count(module: torch.nn.Module | None, trainable: bool) -> int:
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad == trainable)


def count_parameters(recipe: Recipe | str | Path, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Parameter counts of a recipe's model, built on the meta device (instant, no memory).

    trainable: what the optimiser updates (backbone, aggregators incl. condition projections and null
    embeddings, trainable encoders); frozen: codec, vocoder and frozen feature extractors; by_part: trainable
    parameters per part ("backbone", "aggregator.<name>", "encoder.<name>").
    """
    model = build(recipe, device="meta", overrides=overrides).model
    by_part = {"backbone": _count(model.backbone, True)}
    for name in model.names:
        by_part[f"aggregator.{name}"] = _count(model.aggregators[name], True)
        by_part[f"encoder.{name}"] = _count(model.encoders[name], True)
    trainable = _count(model, True)
    frozen = _count(model, False)  # the vocoder is a submodule of the model
    spec, codec = model.spec, model.codec
    audio = {"sample_rate": spec.sample_rate, "channels": spec.channels, "hop_length": spec.hop_length,
             "latent_fps": spec.latent_fps, "latent_channels": codec.channels, "frames": spec.num_frames,
             "codec": sum(p.numel() for p in codec.parameters())}
    return {"trainable": trainable, "frozen": frozen, "total": trainable + frozen, "by_part": by_part,
            "audio": audio}
