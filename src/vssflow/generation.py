"""Generation from a checkpoint: video (+ transcript, caption, speaker, speech span) in, wav and muxed mp4 out.

Videos longer than the model's window are generated in overlapping windows and cross-faded; shorter ones
are padded to the window and trimmed, so the audio lasts exactly as long as the video (to the sample).

    pipe = load_pipeline("runs/demo/checkpoints/last")
    wav = pipe.generate_clip("clip.mp4", transcript="bin blue at f two now")  # (S,) at pipe.sample_rate
    wav = pipe.generate_clip("clip.mp4", caption="two drum circles on screen", negative_prompt="glass hits")

Negative values: `negative={condition: value}` (a caption or transcript string, a video or speaker path)
replaces that condition's null branch in classifier-free guidance (core/model.py `guided_velocity`);
`negative_prompt` is the negative value of the caption condition.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from vssflow.core.checkpoint import Checkpoint, load_model_state
from vssflow.core.errors import CheckpointError, ContractError, MediaError
from vssflow.core.manifest import ClipRecord
from vssflow.core.phonemes import check_transcript
from vssflow.core.windows import Window, crossfade, plan_windows

log = logging.getLogger("vssflow.generate")


NEGATIVE_FIELDS = {"caption": "caption", "transcript": "transcript", "video": "video", "speaker": "speaker"}


@dataclass
class ClipRequest:
    """What to generate for: a video, optionally a transcript, a caption, a speaker reference and a speech
    span, and negative values of conditions ({name: value}; `negative_prompt` is the caption's)."""

    video: Path
    transcript: str | None = None
    speaker: Path | None = None
    speech_span: tuple[float, float] | None = None
    clip_id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    caption: str | None = None
    negative_prompt: str | None = None
    negative: dict[str, Any] = field(default_factory=dict)
    prompt_audio: Path | None = None  # continuation: audio whose first seconds are given (docs/continuation.md)
    inpaint: tuple[float, float] | None = None  # regenerate [start, end) seconds of `audio`
    audio: Path | None = None  # the soundtrack `inpaint` changes
    voice_prompt: Path | None = None  # a recording put before the clip as known audio (its voice carries over)

    def __post_init__(self) -> None:
        self.video = Path(self.video)
        self.speaker = Path(self.speaker) if self.speaker is not None else None
        self.prompt_audio = Path(self.prompt_audio) if self.prompt_audio is not None else None
        self.audio = Path(self.audio) if self.audio is not None else None
        self.voice_prompt = Path(self.voice_prompt) if self.voice_prompt is not None else None
        self.clip_id = self.clip_id or self.video.stem
        self.negative = dict(self.negative)


def warn_unseen_guidance(recipe: Any, condition_guidance: dict[str, float]) -> list[str]:
    """Warn (one line each) about per-condition guidance on conditions the recipe never drops on their own:
    the model never saw those inputs, so the guided velocity extrapolates. Returns the names warned about."""
    unseen = [name for name in condition_guidance
              if name in recipe.conditions and recipe.conditions[name].dropout == 0]
    for name in unseen:
        log.warning(
            "per-condition guidance on %r: recipe %r never drops it on its own (conditions.%s.dropout is 0), so "
            "the model never saw that input; set a dropout > 0 when training, or drop the per-condition scale",
            name, recipe.name, name,
        )
    return unseen


def sampler_from_recipe(recipe: Any, name: str) -> Any:
    """Sampler `name` with every setting of the recipe's sampler that it accepts (steps, guidance, per-condition
    guidance, ...); the settings it does not accept are named in one log line."""
    from vssflow.registry import create, get_spec

    accepted = set(get_spec("sampler", name).params.model_fields)
    current = dict(recipe.sampler.params)
    kept = {k: v for k, v in current.items() if k in accepted}
    dropped = sorted(set(current) - accepted)
    if dropped:
        log.warning("sampler %s does not take the recipe's sampler settings %s; they were dropped", name,
                    ", ".join(f"{k}={current[k]!r}" for k in dropped))
    return create("sampler", name, **kept)


def clip_seed(seed: int, clip_id: str, window: int) -> int:
    """Noise seed of one window of one clip: from the run's seed and the clip's id, so a clip sounds the same
    whatever its place in a manifest, the batch size, or how a manifest is split across machines."""
    from vssflow.core.batch_plan import mix_seed

    return mix_seed(seed, zlib.crc32(clip_id.encode("utf-8")), window)


class Pipeline:
    """A trained model ready to generate: assembly (model, vocoder, sampler), tokenizer, device."""

    def __init__(self, checkpoint: str | Path, device: str | torch.device | None = None, ema: bool = True,
                 adapters: Sequence[tuple[str | Path, float]] = ()):
        from vssflow.adapters import attach_adapters, reject_adapter_checkpoint
        from vssflow.registry.assemble import build
        from vssflow.registry.recipe import recipe_from_dict

        ckpt = Checkpoint(checkpoint)
        reject_adapter_checkpoint(ckpt)
        ckpt.check_plugins()
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
        self.adapters = attach_adapters(self.assembly.model, ckpt, adapters, ema=ema)  # (path, scale) each
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
        self.recipe, self.checkpoint, self.adapters = recipe, None, []
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
    def channels(self) -> int:
        """Output audio channels (2: every waveform is (2, S))."""
        return getattr(self.model.spec, "channels", 1)

    @property
    def window_s(self) -> float:
        """Seconds the model generates at once."""
        return self.model.spec.duration_s

    def modalities(self) -> dict[str, str]:
        """Condition name -> the modality its encoder reads."""
        return {name: enc.contract.modality for name, enc in self.model.encoders.items()}

    def check(self, request: ClipRequest) -> float:
        """Validate a request against this checkpoint before anything is written; returns the video's seconds.

        A transcript is cleaned here (control characters stripped) and refused when it cannot be right;
        `transcript=""` on a checkpoint that also generates sound means "no speech" (one notice)."""
        return self._check(request)[0]

    def _check(self, request: ClipRequest) -> tuple[float, float]:
        """(seconds, one video frame in seconds)."""
        from vssflow.core.media import probe

        if not request.video.is_file():
            raise MediaError(f"{request.video}: video not found")
        info = probe(request.video)
        if not info.has_video:
            raise MediaError(f"{request.video}: has no video stream")
        if info.duration_s <= 0:
            raise MediaError(f"{request.video}: video has no duration (empty or corrupt)")
        frame_s = 1.0 / info.fps if info.fps else 0.0
        mods = set(self.modalities().values())
        if request.transcript is not None and "transcript" in mods:
            if request.transcript == "" and self.recipe.task == "unified":
                log.info("%s: no transcript: generating sound only", request.clip_id or request.video)
                request.transcript = None
            else:
                where = f"{request.video}" if not request.meta.get("where") else request.meta["where"]
                span = request.speech_span or (0.0, info.duration_s)  # longer speech is split per window
                if self.tokenizer is not None:
                    request.transcript = check_transcript(request.transcript, span[1] - span[0], self.tokenizer,
                                                          where)
        if request.transcript and "transcript" not in mods:
            raise ContractError(
                f"{self.source} (task {self.recipe.task}) has no transcript condition; "
                "drop --transcript or use a VisualTTS/unified checkpoint"
            )
        if request.transcript == "":
            request.transcript = None
        self._check_caption(request)
        if request.speaker is not None:
            if "speaker" not in mods:
                raise ContractError(f"{self.source} has no speaker condition; drop --speaker")
            if not request.speaker.is_file():
                raise MediaError(f"{request.speaker}: speaker reference not found")
        from vssflow.continuation import check_prompt_request

        check_prompt_request(self, request, info.duration_s)
        return info.duration_s, frame_s

    def caption_condition(self) -> str | None:
        """The name of the caption condition, or None when the model has none."""
        return next((name for name, mod in self.modalities().items() if mod == "caption"), None)

    def _check_caption(self, request: ClipRequest) -> None:
        """Refuse a caption or negative the checkpoint cannot take; fold `negative_prompt` into `negative`."""
        name = self.caption_condition()
        if request.caption is not None and not request.caption.strip():
            request.caption = None
        if request.caption is not None and name is None and request.meta.get("where"):
            request.caption = None  # a manifest's caption, for models that take one; this one does not
        if request.caption is not None and name is None:
            raise ContractError(f"{self.source} has no caption condition; drop --caption or use a checkpoint "
                                "trained with one (e.g. recipes/v2s-tiny-caption.yaml)")
        if request.negative_prompt is not None:
            if name is None:
                raise ContractError(f"{self.source} has no caption condition for a negative prompt; drop "
                                    "--negative-prompt or use a checkpoint trained with a caption condition")
            request.negative[name] = request.negative_prompt
            request.negative_prompt = None
        mods = self.modalities()
        for cond, value in request.negative.items():
            if cond not in mods:
                raise ContractError(f"{self.source} has no condition {cond!r} to take a negative value "
                                    f"(it has: {', '.join(mods) or 'none'})")
            if mods[cond] not in NEGATIVE_FIELDS:
                raise ContractError(f"condition {cond!r} reads {mods[cond]} input, which cannot take a negative "
                                    f"value here (negatives: {', '.join(NEGATIVE_FIELDS)} conditions)")
            if mods[cond] in ("video", "speaker") and not Path(value).is_file():
                raise MediaError(f"{value}: negative {mods[cond]} for condition {cond!r} not found")
            if mods[cond] in ("caption", "transcript") and not isinstance(value, str):
                raise ContractError(f"negative value of condition {cond!r} must be a string, got {value!r}")

    def _negative_record(self, record: ClipRecord, request: ClipRequest) -> ClipRecord:
        """The record whose conditions are the request's negative values (other fields as the record's)."""
        import dataclasses

        changes: dict[str, Any] = {}
        for cond, value in request.negative.items():
            key = NEGATIVE_FIELDS[self.modalities()[cond]]
            changes[key] = Path(value) if key in ("video", "speaker") else value
        if "transcript" in changes:
            changes.setdefault("speech", record.speech)
        return dataclasses.replace(record, **changes)

    def _record(self, request: ClipRequest, window: Window, part: Any = None) -> ClipRecord:
        speech = None
        transcript = request.transcript if part is None else part.transcript
        if part is not None:
            speech = part.span
        elif transcript:
            span = request.speech_span or (0.0, window.start + window.length)
            if not (span[0] < window.start + window.length and span[1] > window.start):
                transcript = None  # the speech is in another window
            else:
                speech = span
        return ClipRecord(
            id=request.clip_id, task="visualtts" if transcript else "v2s", video=request.video,
            transcript=transcript, speaker=request.speaker, start=window.start,
            end=window.start + window.length, speech=speech, caption=request.caption,
        )

    def _conditions(self, records: Sequence[ClipRecord], requests: Sequence[ClipRequest],
                    negative: bool = False) -> dict[str, Any]:
        """Batch-format conditions of the records; negative=True: only each request's negative conditions."""
        from vssflow.core.data import ClipDataset

        wanted = {}
        for name, enc in self.model.encoders.items():
            mod = enc.contract.modality
            if negative and all(name not in r.negative for r in requests):
                continue
            if not negative and mod == "speaker" and all(r.speaker is None for r in requests):
                continue  # never read the target audio as a voice reference
            wanted[name] = enc.contract
        ds = ClipDataset(records, wanted, None, tokenizer=self.tokenizer, load_labels=False)
        samples = []
        for i, (rec, req) in enumerate(zip(records, requests, strict=True)):
            sample = ds[i]
            for name in list(sample["conditions"]):
                mod = self.model.encoders[name].contract.modality
                if negative:
                    drop = name not in req.negative
                else:
                    drop = (mod == "speaker" and req.speaker is None) or (mod == "transcript" and rec.transcript is None)
                if drop:
                    del sample["conditions"][name]
            samples.append(sample)
        batch = ds.collate(samples)
        return {
            name: {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in cond.items()}
            for name, cond in batch["conditions"].items()
        }

    def generate(self, requests: Sequence[ClipRequest], **kwargs: Any) -> list[torch.Tensor]:
        """One waveform (S,) per request, as long as its video (see `iter_generate` for the options)."""
        done = dict(self.iter_generate(requests, **kwargs))
        return [done[i] for i in range(len(requests))]

    def iter_generate(
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
        long: str | None = None,
        join: float | None = None,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """(request index, waveform (S,)) for each request as soon as all its windows are generated, in order.

        Every request is checked before the first batch runs. conditioned=False drops every condition.
        sampler: another sampler than the recipe's, keeping the recipe's settings it accepts; steps and
        guidance override them. precision: "bf16" runs the model under bf16 autocast on CUDA (fp32
        elsewhere); None takes the recipe's train.precision. long: how windows of a long video join,
        "continuation" (each continues the one before; the default with an audio-prompt route) or
        "crossfade"; requests with `prompt_audio`, `inpaint` or `voice_prompt` always continue
        (src/vssflow/continuation.py). join: seconds of the earlier window a continuing window writes again and
        cross-fades into (None: 3/4 of the overlap; 0: none).
        """
        from tqdm import tqdm

        precision = precision or self.recipe.train.precision
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
        use_bf16 = precision == "bf16" and self.device.type == "cuda"
        checked = [self._check(r) for r in requests]
        sampler_obj = sampler_from_recipe(self.recipe, sampler) if sampler else None
        effective = sampler_obj or self.model.sampler
        if conditioned and effective is not None:
            warn_unseen_guidance(self.recipe, getattr(effective, "condition_guidance", {}) or {})
        from vssflow import continuation as cont

        mode = cont.resolve_long(self, long)
        for i, (seconds, frame_s) in enumerate(checked):  # window by window, each continuing the one before
            r = requests[i]
            if r.prompt_audio is not None or r.inpaint is not None or r.voice_prompt is not None or (
                    mode == "continuation" and seconds > self.window_s + frame_s + 1e-6):
                yield i, cont.generate_continued(self, r, seconds, sampler=sampler_obj, steps=steps, guidance=guidance,
                                            seed=seed, overlap=overlap, join=join, conditioned=conditioned,
                                            use_bf16=use_bf16)[0]
                checked[i] = None  # type: ignore[call-overload]
        speech: dict[tuple[int, int], Any] = {}
        jobs: list[tuple[int, int, Window]] = []
        plans = []
        for i, done in enumerate(checked):
            if done is None:
                plans.append([])
                continue
            seconds, frame_s = done
            # a video within one frame of the window is one window (the last frame's audio is silence)
            planned = self.window_s if self.window_s < seconds <= self.window_s + frame_s + 1e-6 else seconds
            plan = plan_windows(planned, self.window_s, min(overlap, self.window_s / 2))
            plans.append(plan)
            jobs += [(i, j, w) for j, w in enumerate(plan)]
            if cont.needs_split(self, requests[i], seconds):
                bounds = [(w.start, w.start + w.length) for w in plan]
                parts = cont.split_transcript(self, requests[i], bounds, cont.owned_regions(bounds, seconds))
                speech.update({(i, j): part for j, part in enumerate(parts)})
        chunks: dict[tuple[int, int], torch.Tensor] = {}
        for start in tqdm(range(0, len(jobs), batch_size), disable=not progress or not jobs, desc="generate", unit="batch"):
            part = jobs[start : start + batch_size]
            records = [self._record(requests[i], w, speech.get((i, j))) for i, j, w in part]
            reqs = [requests[i] for i, _, _ in part]
            conds = self._conditions(records, reqs) if conditioned else {}
            negative = None
            if conditioned and any(r.negative for r in reqs):
                negative = self._conditions([self._negative_record(rec, r) for rec, r in zip(records, reqs, strict=True)],
                                            reqs, negative=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                out = self.model.generate(
                    conds, batch_size=len(part), steps=steps, guidance=guidance, sampler=sampler_obj,
                    seeds=[clip_seed(seed, requests[i].clip_id, j) for i, j, _ in part], negative=negative,
                )
            finished = []
            for (i, j, _), wav in zip(part, out.wav.float().cpu(), strict=True):
                chunks[(i, j)] = wav
                if j == len(plans[i]) - 1:
                    finished.append(i)
            for i in finished:
                total = round(checked[i][0] * self.sample_rate)
                pieces = [chunks.pop((i, j)) for j in range(len(plans[i]))]
                yield i, crossfade(pieces, plans[i], total, self.sample_rate)

    def generate_clip(self, video: str | Path, **kwargs: Any) -> torch.Tensor:
        """Convenience: one video -> waveform (S,) ((C, S) for a multi-channel model). kwargs: transcript, caption, negative_prompt, negative
        ({condition: value}), speaker, speech_span, prompt_audio, inpaint + audio, steps, long, ..."""
        req_keys = {"transcript", "speaker", "speech_span", "caption", "negative_prompt", "negative", "prompt_audio",
                    "inpaint", "audio", "voice_prompt"}
        request = ClipRequest(Path(video), **{k: v for k, v in kwargs.items() if k in req_keys})
        return self.generate([request], **{k: v for k, v in kwargs.items() if k not in req_keys})[0]


def load_pipeline(checkpoint: str | Path, device: str | torch.device | None = None, ema: bool = True,
                  adapters: Sequence[tuple[str | Path, float]] = ()) -> Pipeline:
    """Load a checkpoint directory for generation (EMA weights by default), with adapter checkpoints
    [(path, scale), ...] applied on top (vssflow.adapters)."""
    return Pipeline(checkpoint, device=device, ema=ema, adapters=adapters)


OUTPUT_MANIFEST = "generated.jsonl"


def write_outputs(out_dir: str | Path, request: ClipRequest, wav: torch.Tensor, sample_rate: int) -> list[Path]:
    """Write OUT/<id>.wav and OUT/<id>.mp4 (the input video with the audio muxed in), published together:
    both are written under hidden temporary names first and renamed only when both exist."""
    from vssflow.core import media
    from vssflow.core.files import OutputError, write_error

    out = Path(out_dir)
    final = [out / f"{request.clip_id}.wav", out / f"{request.clip_id}.mp4"]
    pending = [out / f".{p.name}.pending-{os.getpid()}{p.suffix}" for p in final]
    published: list[Path] = []
    current = 0  # which output is being written, for the message
    try:
        media.write_audio(pending[0], wav, sample_rate)
        current = 1
        media.mux_audio(request.video, wav, sample_rate, pending[1])
        for current in range(len(final)):
            os.replace(pending[current], final[current])
            published.append(final[current])
    except OSError as exc:
        for path in published:
            path.unlink(missing_ok=True)
        raise write_error(final[current], exc) from None
    except OutputError as exc:  # name the output, not its temporary name
        for path in published:
            path.unlink(missing_ok=True)
        message = str(exc)
        for tmp, path in zip(pending, final, strict=True):
            message = message.replace(str(tmp), str(path))
        raise OutputError(message) from None
    except BaseException:
        for path in published:
            path.unlink(missing_ok=True)
        raise
    finally:
        for tmp in pending:
            tmp.unlink(missing_ok=True)
    return final


def finished_clips(out_dir: str | Path) -> dict[str, dict[str, Any]]:
    """id -> record of OUT/generated.jsonl for clips whose files are all there (a torn last line is ignored)."""
    from vssflow.core.sharding import rank_record_files

    path = Path(out_dir) / OUTPUT_MANIFEST
    done: dict[str, dict[str, Any]] = {}
    # records of sharded runs not yet merged (a rank was killed) count too
    sources = ([path] if path.is_file() else []) + list(rank_record_files(out_dir, OUTPUT_MANIFEST))
    for line in (ln for src in sources for ln in Path(src).read_text(errors="replace").splitlines()):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("id"), str):
            if all((Path(out_dir) / name).is_file() for name in rec.get("files", [])):
                done[rec["id"]] = rec
            else:
                done.pop(rec["id"], None)
    return done


def requests_from_manifest(path: str | Path) -> list[ClipRequest]:
    """One request per manifest line that has a video; ids that cannot be file names are refused by line."""
    from vssflow.core.files import file_name_problem
    from vssflow.core.manifest import read_manifest

    requests = []
    seen: dict[str, str] = {}
    for rec in read_manifest(path):
        if rec.video is None:
            raise MediaError(f"{rec.where}: clip {rec.id!r} has no video to generate for")
        problem = file_name_problem(rec.id)
        if problem:
            shown = rec.id if len(rec.id) <= 60 else rec.id[:57] + "..."
            raise ContractError(f"{rec.where}: clip id {shown!r} cannot name an output file ({problem}); "
                                "use letters, digits, '-', '_' and '.'")
        if rec.id in seen:
            raise ContractError(f"{rec.where}: clip id {rec.id!r} repeats {seen[rec.id]}; ids name the outputs")
        seen[rec.id] = rec.where
        requests.append(ClipRequest(rec.video, rec.transcript, rec.speaker, rec.speech, rec.id,
                                    meta={"where": rec.where}, caption=rec.caption))
    return requests


def generate_cli(args: Any) -> Iterator[Path]:
    """`vssflow generate`: validate everything first, then generate batch by batch, publishing each clip (wav +
    mp4 + a line of OUT/generated.jsonl) as it finishes. A rerun skips the clips already published with the
    same checkpoint, seed, prompts and sampling options (`--overwrite` redoes them); an interruption keeps
    every published clip.
    Under torchrun each rank generates its blocks of --batch-size missing clips (docs/scale.md)."""
    from vssflow.core.sharding import Shard, barrier, merge_rank_records, process_group

    shard = Shard.from_env()
    with process_group(shard):
        yield from _generate_cli(args, shard)
        barrier(shard)
        if shard.sharded and shard.is_main:  # the ranks' records become one OUT/generated.jsonl
            merge_rank_records(args.out, OUTPUT_MANIFEST, [r.clip_id for r in _manifest_order(args)])


def _manifest_order(args: Any) -> list[ClipRequest]:
    return requests_from_manifest(args.manifest) if args.manifest else []


def _generate_cli(args: Any, shard: Any) -> Iterator[Path]:
    from vssflow.core.files import OutputError, file_name_problem
    from vssflow.core.sharding import barrier, rank_device, rank_records_name

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: --out names an existing file, not a folder; choose a folder")
    from vssflow.adapters import parse_adapters

    adapters = parse_adapters(getattr(args, "adapters", None), getattr(args, "adapter_scales", None))
    pipe = load_pipeline(args.checkpoint, device=rank_device(args.device, shard), ema=not args.no_ema, adapters=adapters)
    if args.manifest:
        if args.transcript is not None or args.speaker or args.speech_span or getattr(args, "caption", None) or any(
                getattr(args, k, None) for k in ("prompt_audio", "inpaint", "audio", "voice_prompt")):
            raise ContractError("--transcript/--caption/--speaker/--speech-span/--prompt-audio/--inpaint/--audio/--voice-prompt go "
                                "with --video; a manifest has its own fields")
        requests = requests_from_manifest(args.manifest)
        for request in requests:
            request.negative_prompt = getattr(args, "negative_prompt", None)
    else:
        request = ClipRequest(Path(args.video), args.transcript,
                              Path(args.speaker) if args.speaker else None, args.speech_span,
                              caption=getattr(args, "caption", None),
                              negative_prompt=getattr(args, "negative_prompt", None),
                              prompt_audio=getattr(args, "prompt_audio", None), inpaint=getattr(args, "inpaint", None),
                              audio=getattr(args, "audio", None), voice_prompt=getattr(args, "voice_prompt", None))
        problem = file_name_problem(request.clip_id)
        if problem:
            raise ContractError(f"{args.video}: the video's name cannot name an output file ({problem}); rename it")
        requests = [request]
    checkpoint = str(Path(args.checkpoint).resolve())
    done = {} if getattr(args, "overwrite", False) else finished_clips(out)
    # the sampling options given on the command line (None: the checkpoint's or the built-in default)
    sampling = {"steps": args.steps, "guidance": args.guidance, "sampler": args.sampler, "overlap": args.overlap,
                "precision": args.precision, "long": getattr(args, "long", None), "join": getattr(args, "join", None)}

    def prompts(request: ClipRequest) -> dict[str, Any]:  # what a clip was generated with, beyond seed and checkpoint
        given = {"caption": request.caption, "negative_prompt": request.negative_prompt,
                 "prompt_audio": str(request.prompt_audio) if request.prompt_audio else None,
                 "inpaint": list(request.inpaint) if request.inpaint else None,
                 "voice_prompt": str(request.voice_prompt) if request.voice_prompt else None,
                 "adapters": [[a["sha256"], a["scale"]] for a in pipe.adapters] or None, **sampling}
        return {k: v for k, v in given.items() if v is not None}

    asked = {r.clip_id: prompts(r) for r in requests}
    todo = [r for r in requests
            if not (r.clip_id in done and done[r.clip_id].get("seed") == args.seed
                    and done[r.clip_id].get("checkpoint") == checkpoint
                    and {k: done[r.clip_id][k] for k in ("caption", "negative_prompt", "prompt_audio", "inpaint",
                                                           "voice_prompt", "adapters", *sampling)
                         if k in done[r.clip_id]}
                    == asked[r.clip_id])]
    if len(todo) < len(requests):
        log.info("%d of %d clips already in %s; generating the other %d (--overwrite redoes them)",
                 len(requests) - len(todo), len(requests), out / OUTPUT_MANIFEST, len(todo))
    todo = shard.take(todo, args.batch_size)  # one process: all of them
    for request in todo:
        pipe.check(request)  # every input is checked before the output folder is touched
    barrier(shard)  # every rank has listed the missing clips before any rank publishes one
    records = out / (rank_records_name(OUTPUT_MANIFEST, shard) if shard.sharded else OUTPUT_MANIFEST)
    if not todo:
        return
    for _, paths in publish_clips(pipe, todo, out, record=lambda r: asked[r.clip_id], steps=args.steps,
                                  guidance=args.guidance, sampler=args.sampler, seed=args.seed, overlap=args.overlap,
                                  batch_size=args.batch_size, progress=len(todo) > 1, precision=args.precision,
                                  long=getattr(args, "long", None), join=getattr(args, "join", None),
                                  records=records):
        yield from paths


def publish_clips(pipe: Pipeline, requests: Sequence[ClipRequest], out_dir: str | Path, *, seed: int = 0,
                  record: Callable[[ClipRequest], dict[str, Any]] | None = None, records: str | Path | None = None,
                  **options: Any) -> Iterator[tuple[ClipRequest, list[Path]]]:
    """Generate `requests` (options: `Pipeline.iter_generate`'s) and publish each clip as it finishes: OUT/<id>.wav
    and OUT/<id>.mp4 (`write_outputs`) and a line of OUT/generated.jsonl (id, files, seconds, seed, checkpoint and
    `record(request)`; `records`: another file for those lines, as a rank of a sharded run writes). Yields
    (request, [wav, mp4]). `vssflow generate` and `vssflow app` both generate here."""
    from vssflow.core.files import append_line, ensure_dir, write_error

    out = Path(out_dir)
    records_path = Path(records) if records is not None else out / OUTPUT_MANIFEST
    ensure_dir(out)
    checkpoint = str(Path(pipe.checkpoint.path).resolve()) if pipe.checkpoint is not None else None
    for i, wav in pipe.iter_generate(requests, seed=seed, **options):
        request = requests[i]
        paths = write_outputs(out, request, wav, pipe.sample_rate)
        line = {"id": request.clip_id, "files": [p.name for p in paths], "seconds": wav.shape[-1] / pipe.sample_rate,
                "seed": seed, "checkpoint": checkpoint, **(record(request) if record else {})}
        try:
            append_line(records_path, json.dumps(line))
        except OSError as exc:
            raise write_error(records_path, exc, "append to the output manifest") from None
        yield request, paths
