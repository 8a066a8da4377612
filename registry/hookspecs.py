"""Hook specifications: one per component kind, each receiving a `register` callback.

A plugin implements any of these with `@vssflow.registry.hookimpl` and calls
`register(name, factory, params=ParamsModel, description="...")` once per component.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("vssflow")
hookimpl = pluggy.HookimplMarker("vssflow")


@hookspec
def register_encoders(register):
    """Register encoders: raw video, transcript, speaker or precomputed features -> Condition."""


@hookspec
def register_aggregators(register):
    """Register aggregators: how a Condition enters the backbone (cross-attention, concatenation, ...)."""


@hookspec
def register_backbones(register):
    """Register backbones: the velocity network v(x_t, t, conditioning)."""


@hookspec
def register_samplers(register):
    """Register samplers: ODE integrators from noise (t=0) to data (t=1), with guidance."""


@hookspec
def register_codecs(register):
    """Register codecs: waveform <-> the latent the flow is trained on."""


@hookspec
def register_vocoders(register):
    """Register vocoders: mel spectrogram -> waveform."""


@hookspec
def register_datasets(register):
    """Register datasets: sources of training and evaluation clips."""


@hookspec
def register_metrics(register):
    """Register metrics: scores of generated audio against references and labels."""


@hookspec
def register_judges(register):
    """Register judges: frozen embedding, classifier, ASR or MOS models that metrics score with."""


@hookspec
def register_adapters(register):
    """Register adapters: trainable additions (LoRA, ...) to a built model for fine-tuning, base frozen."""


# kind (singular, as used by create/list_components and recipes) -> hook name
HOOKS: dict[str, str] = {
    "encoder": "register_encoders",
    "aggregator": "register_aggregators",
    "backbone": "register_backbones",
    "sampler": "register_samplers",
    "codec": "register_codecs",
    "vocoder": "register_vocoders",
    "dataset": "register_datasets",
    "metric": "register_metrics",
    "judge": "register_judges",
    "adapter": "register_adapters",
}
KINDS: tuple[str, ...] = tuple(HOOKS)
