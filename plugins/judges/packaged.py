"""Judges whose weights ship inside an installed package (the `eval` extra): nothing is downloaded.

`aisfx`: the 512-d sound-effects embedding of Ma et al. (ISMIR 2021, "X-Sequential-CE"), 44.1 kHz. The
network (a DCASE cross-task 8-layer CNN: four [two 3x3 conv + BN + ReLU, max pool] blocks of 64..512
channels, frequency mean, time max) is rebuilt here and its `embedding_net.*` weights are read from the
installed aisfx package's own `models/checkpoint.pth` -- a pickled (state_dict, datasets) tuple, so it is
read only from that file, never from a user-given path. Input as the package's librosa path: peak-
normalised audio, power mel (n_fft 2048, hop 1024, 96 HTK mels 0..22050 Hz, each filter summing to 1),
log10(1 + 10^4 mel), divided by 9.4578 (the paper's normalisation); 100-frame blocks (~2.3 s) at 50-frame
hops, one embedding per block, averaged over the clip's blocks.

`resemblyzer`: the GE2E speaker encoder of Resemblyzer (256-d, 16 kHz) with its own preprocessing
(volume normalisation, webrtcvad silence trimming) and `embed_utterance` (L2-normalised mean of partial
embeddings).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vssflow.core.errors import PluginError

from .base import DoubleConvBlock, LazyJudge, freeze, load_strict
from .deps import require

AISFX_RATE = 44100
AISFX_NORM = 9.457798957824707
AISFX_BLOCK, AISFX_HOP = 100, 50


class AisfxNet(nn.Module):
    """(N, 100 frames, 96 mels) -> (N, 512)."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.conv_block1 = DoubleConvBlock(1, width, "max")
        self.conv_block2 = DoubleConvBlock(width, 2 * width, "max")
        self.conv_block3 = DoubleConvBlock(2 * width, 4 * width, "max")
        self.conv_block4 = DoubleConvBlock(4 * width, 8 * width, "max")

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        x = x.unsqueeze(1)
        for i, pool in enumerate((2, 2, 2, 1), start=1):
            x = getattr(self, f"conv_block{i}")(x, pool)
        return x.mean(dim=3).amax(dim=2)


def aisfx_checkpoint() -> Path:
    """The installed aisfx package's own checkpoint file (the only file this judge unpickles)."""
    require("judge aisfx", ("aisfx",))
    spec = importlib.util.find_spec("aisfx")
    return Path(spec.origin).parent / "models" / "checkpoint.pth"


class AisfxJudge(LazyJudge):
    """aiSFX sound-effects embedding (512-d) at 44.1 kHz, weights from the installed package."""

    embed_dim = 512

    def __init__(self):
        super().__init__()
        self.name, self.version, self.sample_rate = "aisfx", "0.1.2", AISFX_RATE
        self.net: AisfxNet | None = None
        import torchaudio

        fb = torchaudio.functional.melscale_fbanks(1025, 0.0, 22050.0, 96, AISFX_RATE, norm=None, mel_scale="htk")
        self.register_buffer("melfb", fb / fb.sum(0, keepdim=True).clamp_min(1e-12), persistent=False)
        self.register_buffer("window", torch.hann_window(2048), persistent=False)

    def _load(self) -> AisfxNet:
        if self.net is None:
            path = aisfx_checkpoint()
            import numpy as np

            # the installed package's own file, never a user path; even so it is read with weights_only=True,
            # allowing only the numpy scalar types its (state_dict, {dataset: (index, classes)}) tuple holds
            allowed = [(np._core.multiarray.scalar, "numpy.core.multiarray.scalar"), np.dtype,
                       np.dtypes.Int64DType, np.dtypes.Float64DType]
            with torch.serialization.safe_globals(allowed):
                weights, _ = torch.load(str(path), map_location="cpu", weights_only=True)
            state = {k[len("embedding_net."):]: v for k, v in weights.items() if k.startswith("embedding_net.")}
            net = AisfxNet()
            load_strict(net, state, f"judge aisfx ({path})")
            self.net = freeze(net)
        return self.net

    def spectrogram(self, clip: Tensor) -> Tensor:
        """1-D clip at 44.1 kHz -> normalised log-mel (F, 96)."""
        peak = clip.abs().max()
        clip = clip / peak if peak > 0 else clip
        spec = torch.stft(clip.float(), 2048, 1024, window=self.window, center=True, pad_mode="constant",
                          return_complex=True).abs().pow(2)  # (1025, F)
        mel = spec.T @ self.melfb  # (F, 96)
        return torch.log10(mel * 10000.0 + 1.0) / AISFX_NORM

    def embed(self, wav: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, S) at 44.1 kHz -> (B, 512): the mean of the clip's 100-frame block embeddings."""
        net = self._load()
        out = []
        with torch.no_grad():
            for b in range(wav.shape[0]):
                n = wav.shape[-1] if lengths is None else int(lengths[b])
                spec = self.spectrogram(wav[b, :n])
                frames = spec.shape[0]
                count = max(1, (frames - AISFX_BLOCK) // AISFX_HOP + 1) if frames >= AISFX_BLOCK else 1
                spec = F.pad(spec, (0, 0, 0, max(0, (count - 1) * AISFX_HOP + AISFX_BLOCK - frames)))
                blocks = torch.stack([spec[i * AISFX_HOP : i * AISFX_HOP + AISFX_BLOCK] for i in range(count)])
                out.append(net(blocks).mean(0))
        return torch.stack(out)


class ResemblyzerJudge(LazyJudge):
    """Resemblyzer's speaker embedding (256-d, unit norm) at 16 kHz, weights from the installed package."""

    embed_dim = 256

    def __init__(self, trim_silence: bool = True):
        super().__init__()
        self.name, self.version, self.sample_rate = "resemblyzer", "0.1.4", 16000
        self.trim_silence = trim_silence
        self.encoder: nn.Module | None = None

    def _load(self) -> nn.Module:
        if self.encoder is None:
            require("judge resemblyzer", ("resemblyzer", "webrtcvad", "librosa"))
            import contextlib
            import io
            import warnings

            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # webrtcvad's pkg_resources, resemblyzer's scipy import path
                from resemblyzer import VoiceEncoder

                encoder = VoiceEncoder("cpu", verbose=False)
            self.encoder = freeze(encoder)
        return self.encoder

    def embed(self, wav: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, S) at 16 kHz -> (B, 256) unit-norm speaker embeddings."""
        encoder = self._load()
        from resemblyzer import preprocess_wav

        out = []
        for b in range(wav.shape[0]):
            n = wav.shape[-1] if lengths is None else int(lengths[b])
            clip = wav[b, :n].detach().cpu().double().numpy()
            if self.trim_silence:
                clip = preprocess_wav(clip, source_sr=16000)
            if clip.size < 1600:
                raise PluginError("judge resemblyzer: a clip has less than 0.1 s of speech after silence trimming")
            out.append(torch.from_numpy(encoder.embed_utterance(clip.astype("float32"))).float())
        return torch.stack(out)
