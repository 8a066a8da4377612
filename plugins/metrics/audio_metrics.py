"""Metric implementations. Waveforms (B, S) at `sample_rate`; every metric returns one score per clip (B,)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vssflow.core.interfaces import Metric


def _valid(lengths: Tensor | None, b: int, n: int) -> int:
    return n if lengths is None else int(min(lengths[b].item(), n))


def event_times(labels: dict[str, Any], onscreen_only: bool = True) -> list[float]:
    """Event onset times (seconds) from a clip's labels: `events` as floats or dicts with `time`.

    Events marked `onscreen: false` (off-screen distractors, which no video model can time) are skipped
    unless `onscreen_only` is False.
    """
    times = []
    for event in labels.get("events") or []:
        if isinstance(event, dict):
            if onscreen_only and event.get("onscreen") is False:
                continue
            times.append(float(event["time"]))
        else:
            times.append(float(event))
    return sorted(times)


class MelDistance(Metric):
    """Mean absolute natural-log-mel difference between generated and reference audio."""

    higher_is_better = False

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int):
        import torchaudio

        self.sample_rate = sample_rate
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, f_max=sample_rate / 2, power=1.0
        )
        self.hop = hop_length

    def __call__(self, generated, reference=None, labels=None, lengths=None) -> Tensor:  # noqa: D102
        if reference is None:
            raise ValueError("mel-distance needs reference audio")
        n = min(generated.shape[-1], reference.shape[-1])
        g = torch.log(self.mel(generated[..., :n].float()).clamp_min(1e-5))  # (B, M, F)
        r = torch.log(self.mel(reference[..., :n].float()).clamp_min(1e-5))
        scores = []
        for b in range(g.shape[0]):
            frames = max(1, _valid(lengths, b, n) // self.hop)
            scores.append((g[b, :, :frames] - r[b, :, :frames]).abs().mean())
        return torch.stack(scores)


def spectral_flux(wav: Tensor, sample_rate: int, hop_length: int) -> Tensor:
    """Onset strength (F,) of one waveform: positive log-mel differences summed over bins."""
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate, n_fft=4 * hop_length, hop_length=hop_length, n_mels=40, power=1.0
    )(wav.float())
    logmel = torch.log(mel.clamp_min(1e-4))  # (M, F)
    flux = (logmel[:, 1:] - logmel[:, :-1]).clamp_min(0).sum(0)
    return torch.cat([flux.new_zeros(1), flux])


def detect_onsets(wav: Tensor, sample_rate: int, hop_length: int, threshold: float, min_gap_s: float) -> list[float]:
    """Onset times (seconds) by peak-picking the spectral flux above mean + threshold * std."""
    flux = spectral_flux(wav, sample_rate, hop_length)
    if flux.numel() < 3 or flux.max() <= 0:
        return []
    level = flux.mean() + threshold * flux.std()
    gap = max(1, round(min_gap_s * sample_rate / hop_length))
    peaks: list[int] = []
    for i in range(1, flux.numel() - 1):
        if flux[i] >= level and flux[i] >= flux[i - 1] and flux[i] >= flux[i + 1]:
            if peaks and i - peaks[-1] < gap:
                if flux[i] > flux[peaks[-1]]:
                    peaks[-1] = i
                continue
            peaks.append(i)
    return [p * hop_length / sample_rate for p in peaks]


def match_f1(detected: list[float], truth: list[float], tolerance: float) -> float:
    """F1 of one-to-one greedy matching of detected to true times within `tolerance` seconds."""
    if not truth and not detected:
        return 1.0
    if not truth or not detected:
        return 0.0
    used = [False] * len(truth)
    hits = 0
    for d in detected:
        best, best_err = -1, tolerance
        for j, t in enumerate(truth):
            if not used[j] and abs(d - t) <= best_err:
                best, best_err = j, abs(d - t)
        if best >= 0:
            used[best] = True
            hits += 1
    precision, recall = hits / len(detected), hits / len(truth)
    return 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)


class OnsetTiming(Metric):
    """Onset F1 against labelled event times (or the reference's detected onsets when unlabelled)."""

    higher_is_better = True
    needs_reference = False
    needs_labels = True
    label_keys = ("events",)
    reference_replaces_labels = True

    def __init__(self, sample_rate: int, tolerance_s: float, hop_length: int, threshold: float, min_gap_s: float,
                 onscreen_only: bool = True):
        self.onscreen_only = onscreen_only
        self.sample_rate = sample_rate
        self.tolerance = tolerance_s
        self.hop = hop_length
        self.threshold = threshold
        self.min_gap = min_gap_s

    def _onsets(self, wav: Tensor) -> list[float]:
        return detect_onsets(wav, self.sample_rate, self.hop, self.threshold, self.min_gap)

    def __call__(self, generated, reference=None, labels=None, lengths=None) -> Tensor:  # noqa: D102
        scores = []
        for b in range(generated.shape[0]):
            n = _valid(lengths, b, generated.shape[-1])
            if labels is not None and labels[b] is not None and labels[b].get("events") is not None:
                truth = [t for t in event_times(labels[b], self.onscreen_only) if t < n / self.sample_rate]
            elif reference is not None:
                truth = self._onsets(reference[b, :n])
            else:
                raise ValueError("onset-f1 needs labels with 'events' or reference audio")
            scores.append(match_f1(self._onsets(generated[b, :n]), truth, self.tolerance))
        return torch.tensor(scores)


class EnvelopeCorrelation(Metric):
    """Pearson correlation of frame RMS loudness (dB) between generated and reference audio."""

    higher_is_better = True

    def __init__(self, sample_rate: int, frame_s: float):
        self.sample_rate = sample_rate
        self.frame = max(1, round(frame_s * sample_rate))

    def _envelope(self, wav: Tensor) -> Tensor:
        usable = wav.shape[-1] // self.frame * self.frame
        frames = wav[:usable].float().reshape(-1, self.frame)
        return 10 * torch.log10(frames.pow(2).mean(-1) + 1e-8)

    def __call__(self, generated, reference=None, labels=None, lengths=None) -> Tensor:  # noqa: D102
        if reference is None:
            raise ValueError("envelope-corr needs reference audio")
        scores = []
        for b in range(generated.shape[0]):
            n = min(_valid(lengths, b, generated.shape[-1]), reference.shape[-1])
            g, r = self._envelope(generated[b, :n]), self._envelope(reference[b, :n])
            g, r = g - g.mean(), r - r.mean()
            denom = g.norm() * r.norm()
            scores.append((g @ r) / denom if denom > 0 else g.new_zeros(()))
        return torch.stack(scores)
