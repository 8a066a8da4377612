"""Interfaces every component kind implements. Core and plugins meet here; core never imports a plugin.

Shapes: B batch, L condition frames/tokens, D feature dim, T latent frames, C latent channels,
S waveform samples, M mel bins, F mel frames. Masks are bool, True = valid position.

Conformance: every neural component is callable as `component(**component.example_inputs(batch, gen))`
and reports the tensors to check with `output_tensors(output)`; `vssflow.testing` relies only on that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .errors import ContractError


@dataclass
class Condition:
    """An encoded condition: features (B, L, D), mask (B, L), and fps when time-aligned (None: tokens)."""

    features: Tensor
    mask: Tensor | None = None
    fps: float | None = None

    def __post_init__(self) -> None:
        if self.features.dim() != 3:
            raise ValueError(f"Condition.features must be (B, L, D), got shape {tuple(self.features.shape)}")
        if self.mask is not None and self.mask.shape != self.features.shape[:2]:
            raise ValueError(
                f"Condition.mask must be (B, L) = {tuple(self.features.shape[:2])}, got {tuple(self.mask.shape)}"
            )

    @property
    def valid(self) -> Tensor:
        """The mask, or all-True when none was given. (B, L)"""
        if self.mask is not None:
            return self.mask
        return torch.ones(self.features.shape[:2], dtype=torch.bool, device=self.features.device)


@dataclass(frozen=True)
class MelSpec:
    """Mel analysis shared by codecs and vocoders. Values are natural-log magnitudes clamped at `log_floor`."""

    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 160
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float = 8000.0
    log_floor: float = 1e-5

    @property
    def frames_per_second(self) -> float:
        """Mel frames per second."""
        return self.sample_rate / self.hop_length


@dataclass(frozen=True)
class InputContract:
    """What a component expects of its raw input (like timm's pretrained configs)."""

    modality: str  # "video" | "transcript" | "speaker" | "audio" | "features" | "mel" | "latent"
    fps: float | None = None  # frames per second of time-aligned input
    size: tuple[int, int] | None = None  # (H, W) of video frames
    sample_rate: int | None = None  # waveform input
    dim: int | None = None  # feature dim of precomputed input
    mean: tuple[float, ...] | None = None  # per-channel normalisation applied inside the component
    std: tuple[float, ...] | None = None
    value_range: tuple[float, float] | None = None  # e.g. (0, 1) for frames
    extra: dict[str, Any] = field(default_factory=dict)

    def require(self, component: str, what: str, expected: Any, actual: Any) -> None:
        """Raise ContractError naming the component when `actual` differs from `expected`."""
        if expected is not None and actual != expected:
            raise ContractError(f"{component}: expected {what} {expected}, got {actual}")


class Conformable:
    """Mixin: example inputs and output tensors for the conformance check in `vssflow.testing`."""

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Keyword arguments for one call of this component on random valid input."""
        raise NotImplementedError(f"{type(self).__name__} does not provide example_inputs()")

    def output_tensors(self, output: Any) -> dict[str, Tensor]:
        """Named tensors of an output, for finiteness, shape and gradient checks."""
        if isinstance(output, Tensor):
            return {"output": output}
        if isinstance(output, Condition):
            return {"features": output.features}
        if isinstance(output, dict):
            return {k: v for k, v in output.items() if isinstance(v, Tensor)}
        if isinstance(output, (tuple, list)):
            return {f"output[{i}]": v for i, v in enumerate(output) if isinstance(v, Tensor)}
        raise TypeError(f"{type(self).__name__}.output_tensors cannot read a {type(output).__name__}")

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """Shapes `output_tensors` must have for `inputs` (names missing here are not shape-checked)."""
        return {}


def _randn(shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    return torch.randn(shape, generator=generator)


def lengths_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, max_len) bool mask, True = valid."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class Encoder(nn.Module, Conformable):
    """Raw modality -> Condition. Subclasses set `modality`, `dim`, `fps` and implement `forward`.

    Inputs by modality:
      video:      frames (B, L, 3, H, W) float in [0, 1] at `contract.fps`, `contract.size`
      transcript: phoneme ids (B, N) long, 0 = padding; extras `span` (B, 2) seconds, `times` (B, N, 2)
      speaker:    waveform (B, S) at `contract.sample_rate`
      audio:      waveform (B, S) at `contract.sample_rate`
      features:   precomputed (B, L, contract.dim) at `contract.fps`
    """

    modality: ClassVar[str] = "features"
    dim: int
    fps: float | None = None
    frozen: bool = False  # True: no trainable parameters, so its outputs may be cached on disk

    @property
    def contract(self) -> InputContract:
        """The input this encoder expects."""
        raise NotImplementedError

    def forward(self, x: Tensor, mask: Tensor | None = None, **extras: Any) -> Condition:  # noqa: D102
        raise NotImplementedError


class PromptEncoder(Encoder):
    """Known audio as a condition: latents (B, T, C) of the audio being generated, with a mask of the frames
    that are given (B, T), on the latent grid (`fps` = the latent frame rate). Docs: docs/continuation.md.

    The model builds this condition itself: in training from the target latents and the known spans that
    `draw_known` picks per sample (the loss then counts only the unknown frames); at generation from the
    codec's encoding of given audio, or from the window before (continuation). Generated latents keep the
    given frames exactly. `forward(x (B, T, C), mask (B, T), known=(B, T) bool) -> Condition`.
    """

    modality: ClassVar[str] = "prompt"
    latent_channels: int

    def draw_known(self, valid: Tensor, generators: list[torch.Generator | None]) -> Tensor:
        """Which frames are given, per sample: valid (B, T) bool, one generator per sample -> (B, T) bool
        (a subset of `valid`, never all of it; all False means no prompt for that sample)."""
        raise NotImplementedError


class Codec(nn.Module, Conformable):
    """Waveform <-> latent the flow is trained on. encode: (B, S) -> (B, T, C); decode: (B, T, C) -> mel (B, M, F).

    `hop_length` is waveform samples per latent frame, so SequenceSpec(sample_rate, hop_length, d) owns lengths.
    `channels` is C, the latent channels; `audio_channels` the waveform channels: with more than one, encode
    takes (B, audio_channels, S) and a mel codec decodes to (B, audio_channels, M, F) (the vocoder runs per
    channel). `output` says what decode gives: "mel" for a vocoder, or "wav": the waveform itself
    ((B, S) mono, (B, audio_channels, S) otherwise), and then `mel` is None and the model needs no vocoder.
    """

    sample_rate: int
    hop_length: int
    channels: int
    mel: MelSpec | None
    audio_channels: int = 1
    output: ClassVar[str] = "mel"  # "mel" | "wav"

    def encode(self, wav: Tensor) -> Tensor:  # noqa: D102
        raise NotImplementedError

    def decode(self, latent: Tensor) -> Tensor:  # noqa: D102
        raise NotImplementedError

    def forward(self, wav: Tensor) -> Tensor:
        """Round trip for conformance: encode then decode."""
        return self.decode(self.encode(wav))

    def check_sample_rate(self, actual: int) -> None:
        """ContractError when audio at another rate is given to this codec."""
        if actual != self.sample_rate:
            raise ContractError(
                f"codec {type(self).__name__}: expected audio at {self.sample_rate} Hz, got {actual} Hz "
                f"(resample first, or set audio.sample_rate to {actual} in the recipe)"
            )

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Half a second of random audio: (B, S) mono, (B, audio_channels, S) otherwise."""
        channels = () if self.audio_channels == 1 else (self.audio_channels,)
        return {"wav": 0.1 * _randn((batch_size, *channels, self.sample_rate // 2), generator)}


class Vocoder(nn.Module, Conformable):
    """Mel (B, M, F), natural-log magnitudes as in `mel`, -> waveform (B, F * mel.hop_length)."""

    mel: MelSpec

    @property
    def sample_rate(self) -> int:
        """Output sample rate."""
        return self.mel.sample_rate

    @property
    def contract(self) -> InputContract:
        """Natural-log mel as `mel` describes."""
        return InputContract("mel", fps=self.mel.frames_per_second, dim=self.mel.n_mels, extra={"mel": self.mel})

    def check_mel(self, mel: MelSpec, source: str = "codec") -> None:
        """ContractError when the incoming mel analysis differs from the one this vocoder expects."""
        for key in ("sample_rate", "hop_length", "n_mels"):
            want, got = getattr(self.mel, key), getattr(mel, key)
            if want != got:
                raise ContractError(f"vocoder {type(self).__name__}: expected {key}={want} from the {source}, got {got}")

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Twenty frames of plausible log-mel."""
        return {"mel": _randn((batch_size, self.mel.n_mels, 20), generator) - 4.0}

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """One hop of samples per mel frame."""
        mel = inputs["mel"]
        return {"output": (mel.shape[0], mel.shape[-1] * self.mel.hop_length)}


class Metric(Conformable):
    """Scores generated audio against references and/or labels: one value per clip, shape (B,).

    Call as `metric(generated=(B, S), reference=(B, S) or None, labels=[dict] or None, lengths=(B,) or None)`
    with waveforms at `sample_rate`; `lengths` are valid samples. `higher_is_better` says which way is good.
    """

    higher_is_better: ClassVar[bool] = False
    sample_rate: int = 16000
    needs_reference: ClassVar[bool] = True
    needs_labels: ClassVar[bool] = False
    # the `labels` keys the metric reads (the evaluator fills them from manifest rows): "events",
    # "transcript", "video" (a path), "speaker_reference" (a path), "class"; documented per metric
    label_keys: ClassVar[tuple[str, ...]] = ()
    needs_transcript: ClassVar[bool] = False
    needs_video: ClassVar[bool] = False
    reference_replaces_labels: ClassVar[bool] = False  # without labels it scores against the reference audio

    def __call__(
        self,
        generated: Tensor,
        reference: Tensor | None = None,
        labels: list[dict[str, Any]] | None = None,
        lengths: Tensor | None = None,
    ) -> Tensor:  # noqa: D102
        raise NotImplementedError

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Half a second of clicks and noise, with matching labels."""
        n = self.sample_rate // 2
        ref = 0.01 * _randn((batch_size, n), generator)
        labels = []
        for b in range(batch_size):
            times = [0.1 + 0.1 * b, 0.3]
            for t in times:
                i = int(t * self.sample_rate)
                ref[b, i : i + 400] += torch.linspace(1.0, 0.0, 400) * torch.sin(torch.arange(400) * 0.3)
            labels.append({"events": [{"time": t} for t in times]})
        gen = ref + 0.05 * _randn((batch_size, n), generator)
        return {"generated": gen, "reference": ref, "labels": labels}

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """One score per clip."""
        return {"output": (inputs["generated"].shape[0],)}


class SetMetric(Conformable):
    """Scores a set of generated clips against a set of references (FD, KID, IS): one number per set.

    Two steps, so reference features can be cached and confidence intervals bootstrapped cheaply:
    `features(wavs)` maps mono waveforms at `sample_rate` (a list of 1-D tensors of any lengths) to one
    row per clip, (N, D); `score(generated, reference)` maps two such feature matrices to a float
    (`reference` is None when `needs_reference` is False, as for IS). `feature_key()` names everything the
    features depend on (judge name, version, sample rate, weights hash); the evaluator caches reference
    features under it.
    """

    higher_is_better: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = True
    min_clips: ClassVar[int] = 2  # fewer clips on either side and the score is undefined
    sample_rate: int = 16000

    def features(self, wavs: list[Tensor]) -> Tensor:  # noqa: D102
        raise NotImplementedError

    def score(self, generated: Tensor, reference: Tensor | None) -> float:  # noqa: D102
        raise NotImplementedError

    def feature_key(self) -> str:  # noqa: D102
        raise NotImplementedError

    def __call__(self, generated: Tensor, reference: Tensor | None = None) -> float:
        """`score` on two feature matrices (what the conformance check calls)."""
        return self.score(generated, reference)

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Features of two small random sets."""
        return {"generated": _randn((max(batch_size, 4), 8), generator),
                "reference": _randn((max(batch_size, 4), 8), generator)}


class Judge(nn.Module, Conformable):
    """A frozen model that metrics use: an embedding (speaker, sound), a classifier, an ASR, a MOS predictor.

    `embed(wav (B, S), lengths (B,) or None)` returns (B, D) at the judge's `sample_rate` (mono). A judge
    that classifies also returns logits from `classify(wav, lengths)` (B, K) with `labels` naming the K
    classes. `name`, `version` and `weights_hash()` identify its outputs for caching; weights come from the
    installed package or a local path, never from the network.
    """

    sample_rate: int = 16000
    name: str = "judge"
    version: str = "0"
    labels: tuple[str, ...] = ()
    embed_dim: int = 0  # D of `embed`; 0 = not declared (the conformance kit then fails the judge)

    def embed(self, wav: Tensor, lengths: Tensor | None = None) -> Tensor:  # noqa: D102
        raise NotImplementedError

    def classify(self, wav: Tensor, lengths: Tensor | None = None) -> Tensor:  # noqa: D102
        raise NotImplementedError(f"judge {self.name!r} is not a classifier")

    def weights_hash(self) -> str:
        """A short hash of the weights (sha256 over parameters and buffers in name order)."""
        import hashlib

        h = hashlib.sha256()
        for key, tensor in sorted(self.state_dict().items()):
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The embedding."""
        return self.embed(wav, lengths)

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """One `embed_dim` row per clip."""
        return {"output": (inputs["wav"].shape[0], self.embed_dim)} if self.embed_dim else {}

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """One second of noise at the judge's rate."""
        return {"wav": 0.1 * _randn((batch_size, self.sample_rate), generator)}


class Adapter:
    """Trainable additions to a built model (LoRA, ...); everything else of the model stays frozen.

    An adapter is attached under a `slot` name (several adapters can share one model, each in its own slot).
    Its tensors are stored under slot-free names (`file_key`), so an adapter file does not depend on the slot
    it was trained in. `merge` folds every attached adapter into the weights it adapts and removes the
    adapter layers: the model is then plain again, with its original parameter names.
    """

    name: str = "adapter"

    def attach(self, model: nn.Module, slot: str) -> list[str]:
        """Add this adapter's layers to `model` under `slot`; returns the names of the modules adapted."""
        raise NotImplementedError

    def file_key(self, param_name: str, slot: str) -> str | None:
        """The name a parameter of `slot` has in an adapter file, or None when it is not one of `slot`'s."""
        raise NotImplementedError

    def param_name(self, file_key: str, slot: str) -> str:
        """Inverse of `file_key`: the parameter of `slot` that an adapter file's tensor loads into."""
        raise NotImplementedError

    def set_scale(self, model: nn.Module, slot: str, scale: float) -> None:
        """Multiply the contribution of `slot` by `scale` (1: as trained)."""
        raise NotImplementedError

    def merge(self, model: nn.Module) -> None:
        """Fold every attached adapter (at its scale) into the adapted weights and remove the adapter layers."""
        raise NotImplementedError
