"""Known-span masks for audio prompts (the F5-TTS infilling objective, generalised to four span kinds).

A span kind says which frames of a clip's latent sequence are given to the model:
  prefix   the first k frames (continuation: the model writes what follows)
  suffix   the last k frames (a lead-in to given audio)
  middle   everything but a gap of k frames somewhere inside (inpainting: the model fills the gap)
  none     nothing (the prompt condition is absent for that sample and takes its null embedding)
k is a fraction U(min_fraction, max_fraction) of the clip's valid frames, at least one frame, and at least
one valid frame always stays unknown, so every sample contributes to the loss.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

SPAN_KINDS = ("prefix", "suffix", "middle", "none")
PROMPT_STREAM = 0x50524F4D  # mixes a sample's seed into the prompt's own stream (t, noise, dropout keep theirs)


def span_kind(weights: Mapping[str, float], generator: torch.Generator | None) -> str:
    """One span kind drawn with probabilities proportional to `weights` (kinds missing there never occur)."""
    kinds = [k for k in SPAN_KINDS if weights.get(k, 0.0) > 0]
    if not kinds:
        return "none"
    w = torch.tensor([float(weights[k]) for k in kinds], dtype=torch.float64)
    return kinds[int(torch.multinomial(w, 1, generator=generator))]


def known_span(
    valid: int, total: int, kind: str, fraction: float, position: float
) -> Tensor:
    """(total,) bool: the frames of `kind` given among the first `valid` ones.

    fraction in (0, 1): the share of the valid frames that is given (prefix, suffix) or left to generate
    (middle); position in [0, 1]: where the middle gap starts among the places it can.
    """
    known = torch.zeros(total, dtype=torch.bool)
    if kind == "none" or valid < 2:
        return known
    k = min(valid - 1, max(1, round(fraction * valid)))
    if kind == "prefix":
        known[:k] = True
    elif kind == "suffix":
        known[valid - k : valid] = True
    elif kind == "middle":
        gap = k
        first = 1 if valid - gap >= 2 else 0  # keep given frames on both sides when there is room
        last = max(first, valid - gap - first)
        start = first + round(position * (last - first))
        known[:valid] = True
        known[start : start + gap] = False
    else:
        raise ValueError(f"unknown span kind {kind!r}; expected one of {SPAN_KINDS}")
    return known


def draw_known_spans(
    valid: Tensor,
    generators: list[torch.Generator | None],
    weights: Mapping[str, float],
    min_fraction: float,
    max_fraction: float,
) -> Tensor:
    """Known frames (B, T) bool for valid frames (B, T): a span kind and its size per sample, each sample
    from its own generator (None: the global generator)."""
    b, total = valid.shape
    lengths = valid.sum(1).tolist()
    rows = []
    for i in range(b):
        g = generators[i] if i < len(generators) else None
        kind = span_kind(weights, g)
        u = torch.rand(2, generator=g).tolist()
        fraction = min_fraction + (max_fraction - min_fraction) * u[0]
        rows.append(known_span(int(lengths[i]), total, kind, fraction, u[1]))
    return torch.stack(rows).to(valid.device) & valid


def prompt_generators(seeds: Tensor | None, batch_size: int, generator: torch.Generator | None) -> list:
    """One generator per sample for the prompt draws: from each sample's seed (its own stream, so the other
    draws of a seeded sample are unchanged by adding a prompt route), else the shared `generator`."""
    if seeds is None:
        return [generator] * batch_size
    return [torch.Generator().manual_seed((int(s) * 1_000_003 + PROMPT_STREAM) % (2**63 - 1)) for s in seeds.tolist()]
