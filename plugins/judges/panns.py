"""`panns-cnn14`: the PANNs Cnn14 AudioSet tagger (Kong et al. 2020), from a local checkpoint only.

This is the network behind av-benchmark's FD_PANNs, KL_PANNs and IS_PANNs (the numbers V2S papers report,
computed at 16 kHz with the `Cnn14_16k_mAP=0.438.pth` release): log-mel front end (Hann STFT, centre,
reflect padding; Slaney mel filters 50 Hz..fmax; 10*log10 power with amin 1e-10), batch norm over the mel
bins, six conv blocks (two 3x3 conv + BN + ReLU, then 2x2 average pooling, none after the last), frequency
mean, max + mean over time, fc1 + ReLU -> the 2048-d embedding (FD), fc_audioset -> 527 logits (KL, IS use
their softmax, as av-benchmark does). Written from the paper's description; the checkpoint's own
`spectrogram_extractor.*`/`logmel_extractor.*` buffers are ignored (they are fixed STFT/mel matrices this
module recomputes). Load a `.safetensors` or a `.pth` (read with `torch.load(weights_only=True)`); the
judge never downloads anything. A narrower copy (`base_channels` < 64) exists only for tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vssflow.core.errors import PluginError

from .base import DoubleConvBlock, LazyJudge, freeze, load_state, load_strict

FRONT_ENDS = {16000: (512, 160, 8000.0), 32000: (1024, 320, 14000.0)}  # n_fft, hop, fmax of the releases



class Cnn14(nn.Module):
    """Cnn14 with the original parameter names (conv_block1..6, bn0, fc1, fc_audioset)."""

    def __init__(self, sample_rate: int = 16000, classes: int = 527, base_channels: int = 64, n_mels: int = 64):
        super().__init__()
        import torchaudio

        if sample_rate not in FRONT_ENDS:
            raise PluginError(f"judge panns-cnn14: sample_rate must be one of {sorted(FRONT_ENDS)}, got {sample_rate}")
        self.n_fft, self.hop, fmax = FRONT_ENDS[sample_rate]
        fb = torchaudio.functional.melscale_fbanks(self.n_fft // 2 + 1, 50.0, fmax, n_mels, sample_rate,
                                                   norm="slaney", mel_scale="slaney")
        self.register_buffer("melfb", fb, persistent=False)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.bn0 = nn.BatchNorm2d(n_mels)
        widths = [base_channels * 2**i for i in range(6)]
        self.conv_block1 = DoubleConvBlock(1, widths[0])
        for i in range(1, 6):
            setattr(self, f"conv_block{i + 1}", DoubleConvBlock(widths[i - 1], widths[i]))
        self.fc1 = nn.Linear(widths[-1], widths[-1])
        self.fc_audioset = nn.Linear(widths[-1], classes)

    def logmel(self, wav: Tensor) -> Tensor:
        """(B, S) -> (B, 1, F, M) dB log-mel."""
        spec = torch.stft(wav.float(), self.n_fft, self.hop, window=self.window, center=True, pad_mode="reflect",
                          return_complex=True).abs().pow(2)  # (B, K, F)
        mel = spec.transpose(1, 2) @ self.melfb  # (B, F, M)
        return (10.0 * torch.log10(mel.clamp_min(1e-10))).unsqueeze(1)

    def forward(self, wav: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S) -> (embedding (B, 2048), logits (B, classes))."""
        x = self.logmel(wav)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x, 2 if i < 6 else 1)
        x = x.mean(dim=3)
        x = x.amax(dim=2) + x.mean(dim=2)
        h = F.relu(self.fc1(x))
        return h, self.fc_audioset(h)


def write_random_checkpoint(path: str, base_channels: int = 4, classes: int = 527, seed: int = 0) -> None:
    """A Cnn14-shaped safetensors file with random weights, for conformance checks and tests only."""
    from pathlib import Path

    from safetensors.torch import save_file

    torch.manual_seed(seed)
    net = Cnn14(16000, classes, base_channels)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)


class PANNsCnn14Judge(LazyJudge):
    """Cnn14 from a local checkpoint (loaded on first use); embed -> 2048-d, classify -> 527 AudioSet logits.

    The width and class count are read from the checkpoint, so a narrower test copy loads the same way.
    """

    def __init__(self, path: str, sample_rate: int = 16000, min_seconds: float = 1.0,
                 create_example: bool = False):
        super().__init__()
        if sample_rate not in FRONT_ENDS:
            raise PluginError(f"judge panns-cnn14: sample_rate must be one of {sorted(FRONT_ENDS)}, got {sample_rate}")
        self.name, self.version = "panns-cnn14", f"{sample_rate // 1000}k"
        self.sample_rate = sample_rate
        self.checkpoint, self.create_example = path, create_example
        self.min_samples = round(min_seconds * sample_rate)
        self.net: Cnn14 | None = None

    def _load(self) -> Cnn14:
        if self.net is None:
            from pathlib import Path

            if self.create_example and not Path(self.checkpoint).exists():
                write_random_checkpoint(self.checkpoint)
            what = f"judge panns-cnn14 ({self.checkpoint})"
            state = load_state(self.checkpoint, "judge panns-cnn14")
            if "conv_block1.conv1.weight" not in state or "fc_audioset.weight" not in state:
                raise PluginError(f"{what}: not a Cnn14 checkpoint (no conv_block1.conv1.weight / fc_audioset.weight)")
            net = Cnn14(self.sample_rate, int(state["fc_audioset.weight"].shape[0]),
                        int(state["conv_block1.conv1.weight"].shape[0]))
            load_strict(net, state, what, ignore=("spectrogram_extractor.", "logmel_extractor."))
            self.net = freeze(net)
            self._labels = tuple(f"audioset_{i}" for i in range(net.fc_audioset.out_features))
        return self.net

    def _run(self, wav: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        net = self._load()
        outs = []
        with torch.no_grad():
            for b in range(wav.shape[0]):
                n = wav.shape[-1] if lengths is None else int(lengths[b])
                clip = wav[b, :n].float()
                if clip.numel() < self.min_samples:  # too short for five 2x2 poolings
                    clip = F.pad(clip, (0, self.min_samples - clip.numel()))
                outs.append(net(clip[None]))
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    @property
    def embed_dim(self) -> int:  # noqa: D102
        return int(self._load().fc1.out_features)

    def embed(self, wav: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The 2048-d fc1 embedding (FD_PANNs)."""
        return self._run(wav, lengths)[0]

    def classify(self, wav: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The 527 AudioSet logits (softmax of these for KL and IS, as av-benchmark)."""
        return self._run(wav, lengths)[1]
