"""`phoneme`: transcript encoder. Phoneme ids -> embeddings placed on a frame grid over the audio window.

Input: ids (B, N) long from vssflow.core.phonemes.PhonemeTokenizer, 0 = padding, and one of
  span  (B, 2) seconds: the utterance's start and end in the window; the N valid phonemes are stretched
        uniformly over it (the paper's route: no aligner needed);
  times (B, N, 2) seconds: each phoneme's start and end (from a forced aligner or espeak's events);
neither: the phonemes are stretched over the whole window.
Window length: extras `num_frames` or `duration` (seconds), else the `duration_s` param, else up to the end
of the latest span/phoneme plus one frame (which the aggregator's clamp then extends as silence).
Output: Condition(features (B, L, dim), mask all True, fps). Frames outside the speech (before, after, and
between timed phonemes) carry a learned silence embedding: "no speech here" is information, not padding.
Optional ConvNeXt-V2 refiner blocks (F5-TTS's text refiner) then mix neighbouring frames.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from vssflow.core.errors import ContractError
from vssflow.core.interfaces import Condition, Encoder, InputContract

from .layers import ConvNeXtV2Block, check_fps, component_label

PAD_ID = 0


class PhonemeEncoder(Encoder):
    """Phoneme ids stretched over the speech span (or placed by phoneme times) at `fps`, embedded to `dim`."""

    modality = "transcript"

    def __init__(
        self,
        vocab_size: int,
        dim: int = 32,
        fps: float = 25.0,
        duration_s: float | None = None,
        refiner_blocks: int = 0,
        refiner_mult: int = 2,
    ):
        super().__init__()
        self.vocab_size, self.dim, self.fps = int(vocab_size), int(dim), float(fps)
        self.duration_s = duration_s
        self.embed = nn.Embedding(self.vocab_size, self.dim, padding_idx=PAD_ID)
        self.silence = nn.Parameter(torch.randn(self.dim))  # same scale as nn.Embedding's N(0, 1) rows
        self.refiner = nn.ModuleList(ConvNeXtV2Block(self.dim, self.dim * refiner_mult) for _ in range(refiner_blocks))

    @property
    def contract(self) -> InputContract:
        """Ids in [1, vocab_size), 0 = padding; the output frame rate is `fps`."""
        return InputContract(
            "transcript",
            extra={"vocab_size": self.vocab_size, "pad_id": PAD_ID, "output_fps": self.fps, "extras": ("span", "times")},
        )

    def num_frames(self, extras: dict[str, Any], span: Tensor | None, times: Tensor | None, valid: Tensor) -> int:
        """Frames L of the output grid (see the module docstring for the order of sources)."""
        if extras.get("num_frames") is not None:
            return int(extras["num_frames"])
        duration = extras.get("duration", self.duration_s)
        if duration is not None:
            return max(1, math.ceil(float(duration) * self.fps - 1e-6))
        if times is not None and valid.any():
            end = float(times[..., 1][valid].max())
        elif span is not None:
            end = float(span[:, 1].max())
        else:
            raise ContractError(
                f"{component_label(self)}: cannot tell the window length; set duration_s, or pass num_frames, "
                "duration, span or times with the ids"
            )
        return math.ceil(end * self.fps - 1e-6) + 1

    def positions(self, ids: Tensor, valid: Tensor, length: int, span: Tensor | None, times: Tensor | None) -> tuple[Tensor, Tensor]:
        """Which phoneme id each frame shows (B, L), and whether it shows one at all (B, L) (else silence)."""
        b = ids.shape[0]
        centres = (torch.arange(length, device=ids.device, dtype=torch.float32) + 0.5) / self.fps  # (L,)
        if times is not None:
            t = times.to(device=ids.device, dtype=torch.float32)
            inside = (centres[None, :, None] >= t[:, None, :, 0]) & (centres[None, :, None] < t[:, None, :, 1])
            inside = inside & valid[:, None, :]  # (B, L, N)
            speech = inside.any(dim=-1)
            index = inside.to(torch.int8).argmax(dim=-1)  # first phoneme covering the frame
            return ids.gather(1, index), speech
        if span is None:
            span = torch.tensor([[0.0, length / self.fps]], device=ids.device).expand(b, 2)
        start, end = span.to(device=ids.device, dtype=torch.float32).unbind(-1)  # (B,)
        count = valid.sum(dim=1)  # (B,)
        rel = (centres[None, :] - start[:, None]) / (end - start).clamp_min(1e-6)[:, None]  # (B, L) in [0, 1)
        speech = (rel >= 0) & (rel < 1) & (count[:, None] > 0)
        k = (rel.clamp(0, 1 - 1e-6) * count[:, None]).floor().long().clamp_max((count - 1).clamp_min(0)[:, None])
        # valid positions in order, wherever the padding sits: a stable sort puts them first
        order = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices  # (B, N)
        return ids.gather(1, order.gather(1, k)), speech

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        span: Tensor | None = None,
        times: Tensor | None = None,
        **extras: Any,
    ) -> Condition:
        """ids (B, N) -> Condition (B, L, dim) at `fps`."""
        label = component_label(self)
        if x.dim() != 2 or x.dtype not in (torch.int64, torch.int32):
            raise ContractError(f"{label}: expected phoneme ids (B, N) of integers, got {x.dtype} {tuple(x.shape)}")
        if x.numel() and (int(x.max()) >= self.vocab_size or int(x.min()) < 0):
            raise ContractError(
                f"{label}: expected ids in [0, {self.vocab_size}) (vocab_size), got an id {int(x.max())}; "
                "was the transcript tokenized with another phoneme inventory?"
            )
        check_fps(self, self.fps, extras.get("fps"))
        ids = x.long()
        valid = ids != PAD_ID
        if mask is not None:
            valid = valid & mask.to(device=ids.device, dtype=torch.bool)
        length = self.num_frames(extras, span, times, valid)
        phonemes, speech = self.positions(ids, valid, length, span, times)  # (B, L), (B, L)
        h = torch.where(speech[..., None], self.embed(phonemes), self.silence.to(self.embed.weight.dtype))  # (B, L, D)
        for block in self.refiner:
            h = block(h)
        return Condition(h, torch.ones(h.shape[:2], dtype=torch.bool, device=h.device), self.fps)

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Random ids (the last sample padded), a speech span inside a 1 s window, 25 output frames at 25 fps."""
        ids = torch.randint(1, self.vocab_size, (batch_size, 8), generator=generator)
        ids[-1, -3:] = PAD_ID
        starts = 0.3 * torch.rand(batch_size, generator=generator)
        span = torch.stack([starts, starts + 0.6], dim=-1)
        return {"x": ids, "span": span, "num_frames": max(1, round(self.fps))}

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """(B, num_frames, dim)."""
        return {"features": (inputs["x"].shape[0], inputs["num_frames"], self.dim)}
