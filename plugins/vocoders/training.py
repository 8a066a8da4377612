"""GAN training of the `vocos` vocoder on any audio (what `vssflow train-vocoder` runs).

Losses (HiFi-GAN's recipe): least-squares GAN against multi-period + multi-resolution STFT discriminators,
feature matching (x2) and multi-resolution log-mel L1 (x45). `gan_start` > 0 trains on the mel loss alone
first, which gets a usable vocoder much sooner on a CPU budget.

Output folder:
    config.json, model.safetensors   the vocoder (load with vocoder `vocos`, params.path = the folder)
    training/                        a core.checkpoint directory: generator, discriminators, both optimizers,
                                     RNG and step; a later run with the same folder resumes from it
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vssflow.core.audio import LogMel, MultiResolutionMelLoss
from vssflow.core.errors import CheckpointError, MediaError
from vssflow.core.interfaces import MelSpec

from .gan import Discriminators, discriminator_loss, feature_matching_loss, generator_loss
from .vocos import VocosVocoder

log = logging.getLogger(__name__)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


@dataclass
class VocoderTrainConfig:
    """Optimisation settings of a vocoder training run."""

    steps: int = 20000
    batch_size: int = 16
    segment_s: float = 1.0
    lr: float = 2e-4
    betas: tuple[float, float] = (0.8, 0.99)
    mel_weight: float = 45.0
    fm_weight: float = 2.0
    gan_start: int = 0  # steps of mel-only training before the discriminators join
    disc_scale: float = 1.0  # width multiplier of the discriminators
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 1000
    device: str = "cpu"


def read_wav_dir(root: str | Path, sample_rate: int, limit: int | None = None) -> list[Tensor]:
    """Every .wav/.flac/.ogg under `root` (sorted), mono, resampled to `sample_rate`. [(S,)]"""
    from vssflow.core.media import read_audio

    files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise MediaError(f"{root}: no .wav, .flac or .ogg files to train a vocoder on")
    return [read_audio(p, sample_rate)[0] for p in files[:limit]]


class Segments:
    """Random fixed-length crops of a list of clips, drawn from a seeded generator. -> (B, S)"""

    def __init__(self, clips: Iterable[Tensor], samples: int, seed: int):
        self.clips = [c.float() for c in clips if c.numel() > 0]
        if not self.clips:
            raise MediaError("no non-empty audio clips to train a vocoder on")
        self.samples = samples
        self.generator = torch.Generator().manual_seed(seed)

    def batch(self, size: int) -> Tensor:
        """(size, samples) crops; clips shorter than a segment are zero-padded."""
        out = torch.zeros(size, self.samples)
        picks = torch.randint(len(self.clips), (size,), generator=self.generator)
        for row, i in enumerate(picks.tolist()):
            clip = self.clips[i]
            start = int(torch.randint(max(1, clip.numel() - self.samples + 1), (1,), generator=self.generator))
            piece = clip[start : start + self.samples]
            out[row, : piece.numel()] = piece
        return out


def _signature(vocoder: dict[str, Any], config: VocoderTrainConfig) -> dict[str, Any]:
    # what must match for a resume to make sense (steps, logging and device may change)
    train = {k: v for k, v in asdict(config).items() if k not in ("steps", "log_every", "ckpt_every", "device")}
    return {"vocoder": vocoder, "train": {k: list(v) if isinstance(v, tuple) else v for k, v in train.items()}}


def train_vocoder(
    clips: Iterable[Tensor],
    mel: MelSpec,
    out_dir: str | Path,
    config: VocoderTrainConfig,
    vocoder_params: dict[str, Any] | None = None,
    on_log: Callable[[dict[str, float]], None] | None = None,
) -> VocosVocoder:
    """Train (or resume) a `vocos` vocoder on `clips` (S,) at mel.sample_rate; writes `out_dir`. Returns it."""
    from vssflow.core.checkpoint import (
        Checkpoint,
        optimizer_from_tensors,
        optimizer_to_tensors,
        save_checkpoint,
    )

    out = Path(out_dir)
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    generator = VocosVocoder(mel, **(vocoder_params or {})).to(device)
    discriminators = Discriminators(scale=config.disc_scale).to(device)
    analysis = LogMel(mel).to(device)
    mel_loss = MultiResolutionMelLoss(mel.sample_rate).to(device)
    opt_g = torch.optim.AdamW(generator.parameters(), config.lr, betas=config.betas)
    opt_d = torch.optim.AdamW(discriminators.parameters(), config.lr, betas=config.betas)
    signature = _signature(generator.config, config)
    hop = mel.hop_length
    segments = Segments(clips, max(1, round(config.segment_s * mel.sample_rate / hop)) * hop, config.seed)

    step = 0
    state_dir = out / "training"
    if state_dir.exists():
        ckpt = Checkpoint(state_dir)
        if ckpt.meta.get("signature") != signature:
            raise CheckpointError(
                f"{state_dir}: this run was started with other vocoder or training settings; "
                "use another --out, or the settings it was started with"
            )
        generator.load_state_dict(ckpt.model_state())
        discriminators.load_state_dict(ckpt.tensors("discriminators"))
        ckpt.load_optimizer(opt_g)
        trainer_state = ckpt.trainer_state()
        optimizer_from_tensors(opt_d, ckpt.tensors("d_optimizer"), trainer_state["d_optimizer"])
        step = int(trainer_state["step"])
        segments.generator.set_state(ckpt.tensors("data")["generator"])
        ckpt.restore_rng()
        log.info("resuming vocoder training from step %d", step)

    def save() -> None:
        """Write the training state, then the loadable vocoder folder."""
        d_tensors, d_structure = optimizer_to_tensors(opt_d)
        save_checkpoint(
            state_dir, generator.state_dict(), {"kind": "vocoder-training", "vocoder": "vocos", "signature": signature},
            optimizer=opt_g, trainer_state={"step": step, "d_optimizer": d_structure},
            extra_tensors={"discriminators": discriminators.state_dict(), "d_optimizer": d_tensors,
                           "data": {"generator": segments.generator.get_state()}},
        )
        generator.save_pretrained(out)

    generator.train()
    discriminators.train()
    while step < config.steps:
        real = segments.batch(config.batch_size).to(device)  # (B, S)
        with torch.no_grad():
            logmel = analysis(real)  # (B, M, S / hop)
        fake = generator(logmel)  # (B, S)
        use_gan = step >= config.gan_start

        d_loss = torch.zeros((), device=device)
        if use_gan:
            d_loss = discriminator_loss(discriminators(real), discriminators(fake.detach()))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()

        l_mel = mel_loss(fake, real)
        g_loss = config.mel_weight * l_mel
        l_adv = l_fm = torch.zeros((), device=device)
        if use_gan:
            real_out, fake_out = discriminators(real), discriminators(fake)
            l_adv, l_fm = generator_loss(fake_out), feature_matching_loss(real_out, fake_out)
            g_loss = g_loss + l_adv + config.fm_weight * l_fm
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        torch.nn.utils.clip_grad_norm_(generator.parameters(), 1000.0)  # only guards against blow-ups
        opt_g.step()
        step += 1

        loss_value = float(g_loss.detach())
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"vocoder training diverged at step {step} (loss {loss_value})")
        if step % config.log_every == 0 or step == config.steps:
            record = {"step": step, **{k: float(v.detach()) for k, v in
                                       (("mel", l_mel), ("adv", l_adv), ("fm", l_fm), ("disc", d_loss))}}
            log.info("step %(step)d  mel %(mel).4f  adv %(adv).4f  fm %(fm).4f  disc %(disc).4f", record)
            if on_log is not None:
                on_log(record)
        if (config.ckpt_every and step % config.ckpt_every == 0) or step == config.steps:
            save()
    if not (out / "model.safetensors").is_file():
        save()  # asked for no more steps than already done: still leave a loadable folder
    return generator.eval()
