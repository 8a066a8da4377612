"""`logmel-cnn`: a small log-mel CNN sound classifier trained on a benchmark's own reference audio.

It makes class accuracy, KL, IS and an in-domain FD meaningful offline (no pretrained model needed): train
it with `fit_classifier_judge(wavs, class_labels, out_dir)` (what `vssflow evaluate --fit-judges` calls) and
load it with the `logmel-cnn` judge from that folder. The folder holds `model.safetensors` (weights) and
`judge.json` (classes, architecture, input normalisation, how it was trained); nothing is unpickled.

Architecture: log-mel (n_fft 512, hop 160, 64 mels at 16 kHz, natural log clamped at 1e-5), standardised
with the training set's mean and std, four [3x3 conv, batch norm, ReLU, 2x2 average pool] blocks,
frequency mean, then mean + max over valid time frames -> the embedding (`channels[-1]`-d) -> a linear
layer -> class logits. Single-label sets train with cross-entropy, multi-label sets (a clip with several
classes) with binary cross-entropy.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vssflow.core.errors import PluginError

from .base import LazyJudge, freeze, load_strict

FORMAT = "vssflow-judge/logmel-cnn"
VERSION = "1"


class LogMelCNN(nn.Module):
    """The network: waveform (B, S) at `sample_rate` -> (embedding (B, C), logits (B, K))."""

    def __init__(self, classes: int, sample_rate: int = 16000, n_mels: int = 64,
                 channels: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        import torchaudio

        self.sample_rate, self.hop = sample_rate, round(sample_rate / 100)
        n_fft = 1 << math.ceil(math.log2(self.hop * 3.2))  # 512 at 16 kHz
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=self.hop,
                                                        n_mels=n_mels, power=2.0)
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("std", torch.ones(()))
        blocks, prev = [], 1
        for ch in channels:
            blocks += [nn.Conv2d(prev, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU()]
            prev = ch
        self.blocks = nn.ModuleList(nn.Sequential(*blocks[i : i + 3]) for i in range(0, len(blocks), 3))
        self.head = nn.Linear(prev, classes)

    def logmel(self, wav: Tensor) -> Tensor:
        """(B, S) -> standardised log-mel (B, 1, F, M)."""
        x = torch.log(self.mel(wav.float()).clamp_min(1e-5)).transpose(1, 2)
        return ((x - self.mean) / self.std).unsqueeze(1)

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Embedding and logits; frames past `lengths` are left out of the time pooling."""
        x = self.logmel(wav)
        frames = x.shape[2]
        for block in self.blocks:
            x = F.avg_pool2d(block(x), 2, ceil_mode=True)
        x = x.mean(dim=3)  # (B, C, F')
        if lengths is None:
            valid = torch.full((x.shape[0],), x.shape[2], device=x.device)
        else:
            scale = x.shape[2] / max(frames, 1)
            valid = ((lengths.to(x.device) // self.hop + 1) * scale).ceil().clamp(1, x.shape[2]).long()
        mask = torch.arange(x.shape[2], device=x.device)[None, :] < valid[:, None]  # (B, F')
        m = mask[:, None, :]
        mean = (x * m).sum(-1) / m.sum(-1)
        peak = x.masked_fill(~m, float("-inf")).amax(-1)
        emb = mean + peak
        return emb, self.head(emb)


def _write_checkpoint(out_dir: Path, net: LogMelCNN, meta: dict[str, Any]) -> None:
    """model.safetensors + judge.json, written to a sibling folder and renamed into place."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(tmp / "model.safetensors"))
    (tmp / "judge.json").write_text(json.dumps(meta, indent=2) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


def _meta(classes: list[str], multilabel: bool, sample_rate: int, n_mels: int, channels: tuple[int, ...],
          trained: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "classes": classes, "multilabel": multilabel,
            "sample_rate": sample_rate, "n_mels": n_mels, "channels": list(channels), "trained": trained}


def fit_classifier_judge(
    wavs: list[Tensor],
    class_labels: list[str | list[str]],
    out_dir: str | Path,
    *,
    sample_rate: int = 16000,
    epochs: int = 30,
    batch_size: int = 16,
    lr: float = 3e-3,
    crop_s: float = 2.0,
    channels: tuple[int, ...] = (16, 32, 64, 128),
    n_mels: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """Train a `logmel-cnn` judge on mono clips at `sample_rate` and save it under `out_dir`.

    `class_labels[i]` is clip i's class, or a list of classes (then the judge is multi-label). Each epoch
    sees one random `crop_s` window of every clip (shorter clips are zero-padded). Same inputs and seed give
    the same weights. Returns the summary written to judge.json["trained"] plus `path` and `classes`.
    """
    if len(wavs) != len(class_labels) or len(wavs) < 2:
        raise PluginError(f"fit_classifier_judge: needs at least 2 clips with one label each, got {len(wavs)} clips "
                          f"and {len(class_labels)} labels")
    multilabel = any(isinstance(c, (list, tuple)) for c in class_labels)
    sets = [set(c) if isinstance(c, (list, tuple)) else {c} for c in class_labels]
    classes = sorted(set().union(*sets))
    if len(classes) < 2:
        raise PluginError(f"fit_classifier_judge: needs at least 2 classes, got {classes}")
    index = {c: i for i, c in enumerate(classes)}
    target = torch.zeros(len(wavs), len(classes))
    for i, s in enumerate(sets):
        target[i, [index[c] for c in s]] = 1.0
    hard = target.argmax(1)

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = LogMelCNN(len(classes), sample_rate, n_mels, tuple(channels))
    crop = max(1, round(crop_s * sample_rate))
    wavs = [w.detach().float().cpu().flatten() for w in wavs]
    with torch.no_grad():  # input standardisation from the training set
        stats = torch.cat([net.logmel(w[None, : 10 * sample_rate]).flatten() for w in wavs])
        net.mean.fill_(stats.mean())
        net.std.fill_(stats.std().clamp_min(1e-3))

    def window(w: Tensor) -> tuple[Tensor, int]:
        if w.numel() <= crop:
            return F.pad(w, (0, crop - w.numel())), w.numel()
        start = int(torch.randint(0, w.numel() - crop + 1, (1,), generator=gen))
        return w[start : start + crop], crop

    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(wavs) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.2)
    history = []
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(wavs), generator=gen)
        total, correct = 0.0, 0
        for i in range(0, len(wavs), batch_size):
            idx = order[i : i + batch_size]
            pairs = [window(wavs[j]) for j in idx.tolist()]
            x = torch.stack([p[0] for p in pairs])
            x = x * (0.5 + torch.rand(len(idx), 1, generator=gen))  # gain jitter: class, not loudness
            n = torch.tensor([p[1] for p in pairs])
            _, logits = net(x, n)
            if multilabel:
                loss = F.binary_cross_entropy_with_logits(logits, target[idx])
            else:
                loss = F.cross_entropy(logits, hard[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            correct += int((target[idx].gather(1, logits.argmax(1, keepdim=True)) > 0).sum())
        history.append({"loss": round(total / len(wavs), 5), "accuracy": round(correct / len(wavs), 4)})
    freeze(net)
    trained = {"clips": len(wavs), "epochs": epochs, "batch_size": batch_size, "lr": lr, "crop_s": crop_s,
               "seed": seed, "final_loss": history[-1]["loss"], "train_accuracy": history[-1]["accuracy"]}
    _write_checkpoint(Path(out_dir), net, _meta(classes, multilabel, sample_rate, n_mels, tuple(channels), trained))
    return {"path": str(out_dir), "classes": classes, **trained, "history": history}


def write_untrained(out_dir: str | Path, classes: list[str], channels: tuple[int, ...] = (4, 8), seed: int = 0) -> None:
    """An untrained checkpoint (random weights) for conformance checks and tests: its scores mean nothing."""
    torch.manual_seed(seed)
    net = LogMelCNN(len(classes), channels=tuple(channels))
    _write_checkpoint(Path(out_dir), net, _meta(list(classes), False, 16000, 64, tuple(channels), {"untrained": True}))


class LogMelCNNJudge(LazyJudge):
    """A `fit_classifier_judge` checkpoint from a local folder (loaded on first use): embed and classify."""

    def __init__(self, path: str, create_example: bool = False):
        super().__init__()
        self.path, self.create_example = Path(path).expanduser(), create_example
        self.name, self.version = "logmel-cnn", VERSION
        self.net: LogMelCNN | None = None
        meta_path = self.path / "judge.json"
        if meta_path.is_file():  # the rate is known before the weights load (the evaluator resamples to it)
            self.sample_rate = int(json.loads(meta_path.read_text()).get("sample_rate", 16000))

    def _load(self) -> LogMelCNN:
        if self.net is not None:
            return self.net
        folder = self.path
        if self.create_example and not (folder / "judge.json").exists():
            write_untrained(folder, ["a", "b", "c"])
        meta_path = folder / "judge.json"
        if not meta_path.is_file() or not (folder / "model.safetensors").is_file():
            raise PluginError(f"judge logmel-cnn: no model.safetensors + judge.json in {folder}; train one with "
                              "`vssflow evaluate --fit-judges` or vssflow.plugins.judges.fit_classifier_judge")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise PluginError(f"judge logmel-cnn: {meta_path} is not a {FORMAT} checkpoint (format {meta.get('format')!r})")
        from safetensors.torch import load_file

        self.meta = meta
        self.sample_rate = int(meta["sample_rate"])
        self._labels = tuple(meta["classes"])
        self.multilabel = bool(meta.get("multilabel", False))
        net = LogMelCNN(len(self._labels), self.sample_rate, int(meta["n_mels"]), tuple(meta["channels"]))
        load_strict(net, load_file(str(folder / "model.safetensors")), f"judge logmel-cnn ({folder})")
        self.net = freeze(net)
        return net

    @property
    def embed_dim(self) -> int:  # noqa: D102
        self._load()
        return int(self.meta["channels"][-1])

    def embed(self, wav: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Pooled conv features (B, channels[-1])."""
        net = self._load()
        with torch.no_grad():
            return net(wav, lengths)[0]

    def classify(self, wav: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Class logits (B, K), K = len(labels)."""
        net = self._load()
        with torch.no_grad():
            return net(wav, lengths)[1]
