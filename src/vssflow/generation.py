"""Generation from a checkpoint: video (+ transcript, speaker, speech span) in, wav and muxed mp4 out.

Videos longer than the model's window are generated in overlapping windows and cross-faded; shorter ones
are padded to the window and trimmed, so the audio lasts exactly as long as the video (to the sample).

    pipe = load_pipeline("runs/demo/checkpoints/last")
    wav = pipe.generate_clip("clip.mp4", transcript="bin blue at f two now")  # (S,) at pipe.sample_rate
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from vssflow.core.checkpoint import Checkpoint, load_model_state
from vssflow.core.errors import CheckpointError, ContractError, MediaError
from vssflow.core.manifest import ClipRecord
from vssflow.core.windows import Window, crossfade, plan_windows

log = logging.getLogger("vssflow.generate")


@dataclass
class ClipRequest:
    """What to generate for: a video, optionally a transcript, a speaker reference and a speech span."""

    video: Path
    transcript: str | None = None
    speaker: Path | None = None
    speech_span: tuple[float, float] | None = None
    clip_id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.video = Path(self.video)
        self.speaker = Path(self.speaker) if self.speaker is not None else None
        self.clip_id = self.clip_id or self.video.stem


def clip_seed(seed: int, clip_id: str, window: int) -> int:
    """Noise seed of one window of one clip: from the run's seed and the clip's id, so a clip sounds the same
    whatever its place in a manifest, the batch size, or how a manifest is split across machines."""
    from vssflow.core.trainer import mix_seed

    return mix_seed(seed, zlib.crc32(clip_id.encode("utf-8")), window)


class Pipeline:
    """A trained model ready to generate: assembly (model, vocoder, sampler), tokenizer, device."""

    def __init__(self, checkpoint: str | Path, device: str | torch.device | None = None, ema: bool = True):
        from vssflow.registry.assemble import build
        from vssflow.registry.recipe import recipe_from_dict

        ckpt = Checkpoint(checkpoint)
        source = f"{ckpt.path}/recipe.yaml"
        try:
            data = yaml.safe_load(ckpt.recipe_yaml())
        except yaml.YAMLError:
            raise CheckpointError(f"{source}: unreadable recipe; the checkpoint is corrupt") from None
        self.recipe = recipe_from_dict(data, source=source)
        if ckpt.meta.get("recipe_name") not in (None, self.recipe.name):
            raise CheckpointError(
                f"{ckpt.path}: weights were trained with recipe {ckpt.meta['recipe_name']!r} but recipe.yaml is "
                f"{self.recipe.name!r}; the checkpoint directory was mixed up"
            )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.assembly = build(self.recipe, device=self.device)
        load_model_state(self.assembly.model, ckpt.model_state(ema=ema), str(ckpt.path))
        self.assembly.model.eval()
        self.checkpoint = ckpt
        self.tokenizer = None
        if "tokenizer" in ckpt.meta:
            from vssflow.core.phonemes import PhonemeTokenizer

            self.tokenizer = PhonemeTokenizer.from_dict(ckpt.meta["tokenizer"])

    @classmethod
    def untrained(cls, recipe: Any, device: str | torch.device | None = None) -> Pipeline:
        """A pipeline around a freshly built (randomly initialised) model: for benchmarks and smoke tests."""
        from vssflow.core.phonemes import PhonemeTokenizer
        from vssflow.registry.assemble import build

        self = cls.__new__(cls)
        self.recipe, self.checkpoint = recipe, None
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.assembly = build(recipe, device=self.device)
        self.assembly.model.eval()
        self.tokenizer = PhonemeTokenizer()
        return self

    @property
    def source(self) -> str:
        """What the weights came from, for messages."""
        return f"checkpoint {self.checkpoint.path}" if self.checkpoint is not None else f"untrained {self.recipe.name!r}"

    @property
    def model(self) -> Any:
        """The FlowModel."""
        return self.assembly.model

    @property
    def sample_rate(self) -> int:
        """Output sample rate."""
        return self.model.spec.sample_rate

    @property
    def window_s(self) -> float:
        """Seconds the model generates at once."""
        return self.model.spec.duration_s

    def modalities(self) -> dict[str, str]:
        """Condition name -> the modality its encoder reads."""
        return {name: enc.contract.modality for name, enc in self.model.encoders.items()}

    def check(self, request: ClipRequest) -> float:
        """Validate a request against this checkpoint before anything is written; returns the video's seconds."""
        from vssflow.core.media import probe

        if not request.video.is_file():
            raise MediaError(f"{request.video}: video not found")
        info = probe(request.video)
        if not info.has_video:
            raise MediaError(f"{request.video}: has no video stream")
        if info.duration_s <= 0:
            raise MediaError(f"{request.video}: video has no duration (empty or corrupt)")
        mods = set(self.modalities().values())
        if request.transcript and "transcript" not in mods:
            raise ContractError(
                f"{self.source} (task {self.recipe.task}) has no transcript condition; "
                "drop --transcript or use a VisualTTS/unified checkpoint"
            )
        if request.speaker is not None:
            if "speaker" not in mods:
                raise ContractError(f"{self.source} has no speaker condition; drop --speaker")
            if not request.speaker.is_file():
                raise MediaError(f"{request.speaker}: speaker reference not found")
        if request.transcript:
            span = request.speech_span or (0.0, info.duration_s)
            if span[1] - span[0] > self.window_s + 1e-6:
                raise ContractError(
                    f"{request.video}: speech of {span[1] - span[0]:.2f} s is longer than the model's "
                    f"{self.window_s:.2f} s window; pass --speech-span within one window or split the video"
                )
        return info.duration_s

    def _record(self, request: ClipRequest, window: Window) -> ClipRecord:
        speech = None
        transcript = request.transcript
        if transcript:
            span = request.speech_span or (0.0, window.start + window.length)
            if not (span[0] < window.start + window.length and span[1] > window.start):
                transcript = None  # the speech is in another window
            else:
                speech = span
        return ClipRecord(
            id=request.clip_id, task="visualtts" if transcript else "v2s", video=request.video,
            transcript=transcript, speaker=request.speaker, start=window.start,
            end=window.start + window.length, speech=speech,
        )

    def _conditions(self, records: Sequence[ClipRecord], requests: Sequence[ClipRequest]) -> dict[str, Any]:
        from vssflow.core.data import ClipDataset

        wanted = {}
        for name, enc in self.model.encoders.items():
            mod = enc.contract.modality
            if mod == "speaker" and all(r.speaker is None for r in requests):
                continue  # never read the target audio as a voice reference
            wanted[name] = enc.contract
        ds = ClipDataset(records, wanted, None, tokenizer=self.tokenizer, load_labels=False)
        samples = []
        for i, (rec, req) in enumerate(zip(records, requests, strict=True)):
            sample = ds[i]
            for name in list(sample["conditions"]):
                mod = self.model.encoders[name].contract.modality
                if (mod == "speaker" and req.speaker is None) or (mod == "transcript" and rec.transcript is None):
                    del sample["conditions"][name]
            samples.append(sample)
        batch = ds.collate(samples)
        return {
            name: {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in cond.items()}
            for name, cond in batch["conditions"].items()
        }

    def generate(
        self,
        requests: Sequence[ClipRequest],
        *,
        steps: int | None = None,
        guidance: float | None = None,
        sampler: str | None = None,
        seed: int = 0,
        overlap: float = 1.0,
        batch_size: int = 8,
        conditioned: bool = True,
        progress: bool = False,
        precision: str | None = None,
    ) -> list[torch.Tensor]:
        """One waveform (S,) per request, as long as its video. conditioned=False drops every condition.

        precision: "bf16" runs the model under bf16 autocast on CUDA (fp32 elsewhere); None takes the
        recipe's train.precision.
        """
        from tqdm import tqdm

        from vssflow.registry import create

        precision = precision or self.recipe.train.precision
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
        use_bf16 = precision == "bf16" and self.device.type == "cuda"
        durations = [self.check(r) for r in requests]
        sampler_obj = create("sampler", sampler) if sampler else None
        jobs: list[tuple[int, int, Window]] = []
        plans = []
        for i, seconds in enumerate(durations):
            plan = plan_windows(seconds, self.window_s, min(overlap, self.window_s / 2))
            plans.append(plan)
            jobs += [(i, j, w) for j, w in enumerate(plan)]
        chunks: dict[tuple[int, int], torch.Tensor] = {}
        for start in tqdm(range(0, len(jobs), batch_size), disable=not progress, desc="generate", unit="batch"):
            part = jobs[start : start + batch_size]
            records = [self._record(requests[i], w) for i, _, w in part]
            conds = self._conditions(records, [requests[i] for i, _, _ in part]) if conditioned else {}
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                out = self.model.generate(
                    conds, batch_size=len(part), steps=steps, guidance=guidance, sampler=sampler_obj,
                    seeds=[clip_seed(seed, requests[i].clip_id, j) for i, j, _ in part],
                )
            for (i, j, _), wav in zip(part, out.wav.float().cpu(), strict=True):
                chunks[(i, j)] = wav
        results = []
        for i, (plan, seconds) in enumerate(zip(plans, durations, strict=True)):
            total = round(seconds * self.sample_rate)
            results.append(crossfade([chunks[(i, j)] for j in range(len(plan))], plan, total, self.sample_rate))
        return results

    def generate_clip(self, video: str | Path, **kwargs: Any) -> torch.Tensor:
        """Convenience: one video -> waveform (S,). kwargs: transcript, speaker, speech_span, steps, ..."""
        req_keys = {"transcript", "speaker", "speech_span"}
        request = ClipRequest(Path(video), **{k: v for k, v in kwargs.items() if k in req_keys})
        return self.generate([request], **{k: v for k, v in kwargs.items() if k not in req_keys})[0]


def load_pipeline(checkpoint: str | Path, device: str | torch.device | None = None, ema: bool = True) -> Pipeline:
    """Load a checkpoint directory for generation (EMA weights by default)."""
    return Pipeline(checkpoint, device=device, ema=ema)


def write_outputs(out_dir: str | Path, request: ClipRequest, wav: torch.Tensor, sample_rate: int) -> list[Path]:
    """Write OUT/<id>.wav and OUT/<id>.mp4 (the input video with the audio muxed in), each atomically."""
    from vssflow.core.media import mux_audio, write_audio

    out = Path(out_dir)
    paths = [write_audio(out / f"{request.clip_id}.wav", wav, sample_rate)]
    paths.append(mux_audio(request.video, wav, sample_rate, out / f"{request.clip_id}.mp4"))
    return paths


def requests_from_manifest(path: str | Path) -> list[ClipRequest]:
    """One request per manifest line that has a video."""
    from vssflow.core.manifest import read_manifest

    requests = []
    for rec in read_manifest(path):
        if rec.video is None:
            raise MediaError(f"{rec.where}: clip {rec.id!r} has no video to generate for")
        requests.append(ClipRequest(rec.video, rec.transcript, rec.speaker, rec.speech, rec.id))
    return requests


def generate_cli(args: Any) -> Iterable[Path]:
    """`vssflow generate`: validate everything first, then generate and write."""
    pipe = load_pipeline(args.checkpoint, device=args.device, ema=not args.no_ema)
    if args.manifest:
        if args.transcript or args.speaker or args.speech_span:
            raise ContractError("--transcript/--speaker/--speech-span go with --video; a manifest has its own fields")
        requests = requests_from_manifest(args.manifest)
    else:
        requests = [ClipRequest(Path(args.video), args.transcript,
                                Path(args.speaker) if args.speaker else None, args.speech_span)]
    wavs = pipe.generate(requests, steps=args.steps, guidance=args.guidance, sampler=args.sampler, seed=args.seed,
                         overlap=args.overlap, batch_size=args.batch_size, progress=len(requests) > 1,
                         precision=args.precision)
    written: list[Path] = []
    for request, wav in zip(requests, wavs, strict=True):
        written += write_outputs(args.out, request, wav, pipe.sample_rate)
    return written
