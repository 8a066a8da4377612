"""Captions end to end: the synthetic set describes its clips, the dataset hands byte ids to the caption
encoder, recipes/v2s-tiny-caption.yaml trains on the set, and `vssflow generate --caption --negative-prompt`
writes audio; negative values reach guidance through the Python API (different from plain null guidance,
identical when the negative is the null)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch

from tests.main_job.conftest import data_args, vssflow
from tests.main_job.test_generate import _fails_cleanly

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "v2s-tiny-caption.yaml"


@pytest.fixture(scope="session")
def caption_checkpoint(tmp_path_factory, synth_root) -> Path:
    """recipes/v2s-tiny-caption.yaml trained for two steps on the 1-second synthetic clips."""
    out = tmp_path_factory.mktemp("caption-run")
    done = vssflow("train", str(RECIPE), "--out", str(out), "--no-progress", "--set", "train.steps=2",
                   "--set", "train.batch_size=4", "--set", "audio.duration_s=1.0", "--set", "train.warmup_steps=1",
                   *data_args(synth_root))
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "checkpoints" / "last"


def test_synthetic_manifests_carry_captions_of_what_is_seen_and_heard(synth_root):
    rows = [json.loads(line) for line in (synth_root / "manifest.jsonl").read_text().splitlines()]
    for row in rows:
        labels = json.loads((synth_root / row["labels"]).read_text())
        caption = row["caption"]
        for cls in labels["classes"]:
            assert cls in caption
        assert "on screen" in caption
        off = {e["class"] for e in labels["events"] if not e["onscreen"]}
        assert caption.endswith("no off-screen sounds") == (not off)
        assert all(c in caption.split(";")[-1] for c in off)


def test_the_dataset_passes_caption_byte_ids_to_the_encoder(synth_root):
    from vssflow.core.data import caption_ids
    from vssflow.core.manifest import read_manifest
    from vssflow.plugins.datasets.synth import SynthConfig
    from vssflow.plugins.datasets.synth.dataset import SyntheticAVDataset
    from vssflow.plugins.encoders.caption import ByteTextEncoder

    encoder = ByteTextEncoder(dim=16, layers=1, heads=2, max_length=24)
    ds = SyntheticAVDataset(synth_root, clips=8, seconds=1.0, families=("v2s",), size=48, split="all",
                            conditions={"caption": encoder.contract})
    assert SynthConfig(clips=8, seconds=1.0, families=("v2s",), size=48).as_dict() == ds.config.as_dict()
    records = read_manifest(synth_root / "manifest.jsonl")
    batch = ds.collate([ds[0], ds[1]])
    cond = batch["conditions"]["caption"]
    assert cond["present"].all() and cond["x"].dtype == torch.long and cond["x"].shape[1] <= 24
    want = caption_ids(records[0].caption, 24)
    assert torch.equal(cond["x"][0, : len(want)], want) and cond["mask"][0].sum() == len(want)
    assert bytes(int(i) - 1 for i in want).decode() == records[0].caption[:24]
    out = encoder(cond["x"], cond["mask"])
    assert out.features.shape == (2, cond["x"].shape[1], 16) and torch.isfinite(out.features).all()


def test_caption_features_do_not_depend_on_padding():
    from vssflow.core.data import caption_ids
    from vssflow.plugins.encoders.caption import ByteTextEncoder

    torch.manual_seed(0)
    encoder = ByteTextEncoder(dim=16, layers=2, heads=2, max_length=32).eval()
    ids = caption_ids("two drum circles")
    short = encoder(ids[None])
    padded_ids = torch.cat([ids, torch.randint(1, 257, (9,))])[None]
    mask = torch.arange(padded_ids.shape[1])[None] < len(ids)
    padded = encoder(padded_ids, mask)
    torch.testing.assert_close(padded.features[:, : len(ids)], short.features, atol=1e-5, rtol=1e-5)
    assert padded.features[:, len(ids):].abs().max() == 0


def test_caption_and_negative_prompt_from_the_cli(tmp_path, caption_checkpoint, synth_root):
    video = synth_root / "clips" / "v2s-000000.mp4"
    out = tmp_path / "out"
    done = vssflow("generate", "--checkpoint", str(caption_checkpoint), "--video", str(video), "--out", str(out),
                   "--steps", "2", "--caption", "two drum circles on screen", "--negative-prompt", "glass hits")
    assert done.returncode == 0, done.stderr[-2000:]
    info = sf.info(str(out / "v2s-000000.wav"))
    assert info.samplerate == 16000 and abs(info.frames / 16000 - 1.0) <= 0.01
    record = json.loads((out / "generated.jsonl").read_text().splitlines()[-1])
    assert (record["caption"], record["negative_prompt"]) == ("two drum circles on screen", "glass hits")
    # a rerun skips the clip only when it asks for the same caption and negative prompt
    again = vssflow("generate", "--checkpoint", str(caption_checkpoint), "--video", str(video), "--out", str(out),
                    "--steps", "2", "--caption", "two drum circles on screen", "--negative-prompt", "glass hits")
    assert again.returncode == 0 and again.stdout.strip() == "", again.stderr[-2000:]
    other = vssflow("generate", "--checkpoint", str(caption_checkpoint), "--video", str(video), "--out", str(out),
                    "--steps", "2", "--caption", "two drum circles on screen", "--negative-prompt", "music")
    assert other.returncode == 0 and "v2s-000000.wav" in other.stdout, other.stderr[-2000:]


def test_caption_flags_on_a_checkpoint_without_a_caption_condition_fail_in_one_line(tmp_path, micro_checkpoint,
                                                                                     synth_root):
    video = synth_root / "clips" / "v2s-000000.mp4"
    out = tmp_path / "out"
    base = ("generate", "--checkpoint", str(micro_checkpoint), "--video", str(video), "--out", str(out))
    _fails_cleanly(vssflow(*base, "--caption", "a drum"), out, "no caption condition")
    _fails_cleanly(vssflow(*base, "--negative-prompt", "music"), out, "no caption condition")
    # a manifest's captions are for models that take them: this one generates without
    line = json.loads((synth_root / "manifest.jsonl").read_text().splitlines()[0])
    manifest = tmp_path / "one.jsonl"
    manifest.write_text(json.dumps({**line, **{k: str(synth_root / line[k]) for k in ("video", "audio", "labels")}}))
    done = vssflow("generate", "--checkpoint", str(micro_checkpoint), "--manifest", str(manifest), "--out", str(out))
    assert done.returncode == 0 and (out / f"{line['id']}.wav").is_file(), done.stderr[-2000:]


def test_negative_prompt_changes_guidance_and_an_empty_one_is_the_null(caption_checkpoint, synth_root):
    from vssflow.generation import load_pipeline

    pipe = load_pipeline(caption_checkpoint, device="cpu")
    video = synth_root / "clips" / "v2s-000001.mp4"
    kw = {"caption": "one metal square on screen", "steps": 2, "guidance": 4.0, "seed": 3}
    plain = pipe.generate_clip(video, **kw)
    negative = pipe.generate_clip(video, negative_prompt="off-screen glass and drum hits", **kw)
    null = pipe.generate_clip(video, negative_prompt="", **kw)
    same = pipe.generate_clip(video, negative={"caption": ""}, **kw)
    assert (plain - negative).abs().max() > 1e-4
    assert torch.equal(plain, null) and torch.equal(plain, same)


def test_a_negative_video_through_the_python_api(micro_checkpoint, synth_root):
    from vssflow.core.errors import ContractError
    from vssflow.generation import load_pipeline

    pipe = load_pipeline(micro_checkpoint, device="cpu")
    video, other = synth_root / "clips" / "v2s-000000.mp4", synth_root / "clips" / "v2s-000002.mp4"
    plain = pipe.generate_clip(video, guidance=3.0, seed=1)
    negative = pipe.generate_clip(video, guidance=3.0, seed=1, negative={"video": other})
    assert plain.shape == negative.shape and (plain - negative).abs().max() > 1e-4
    with pytest.raises(ContractError, match="no condition 'caption'"):
        pipe.generate_clip(video, negative={"caption": "music"})


@pytest.mark.parametrize("aggregator", ["cross-attn", "global", "sequence-concat"])
def test_the_caption_routes_through_any_token_aggregator(aggregator):
    from vssflow.core.data import caption_ids
    from vssflow.registry.assemble import build

    model = build(RECIPE, overrides=[f"conditions.caption.aggregator.name={aggregator}",
                                     "conditions.caption.aggregator.params={}", "audio.duration_s=1.0",
                                     "backbone.params.depth=1"]).model
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # off the zero init, so the output depends on the caption
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    ids = torch.nn.utils.rnn.pad_sequence([caption_ids("two drum circles"), caption_ids("glass")], batch_first=True)
    caption = {"x": ids, "mask": ids != 0, "present": torch.ones(2, dtype=torch.bool)}
    loss = model.loss({"latent": torch.randn(2, 100, 64, generator=g), "conditions": {"caption": caption}})
    loss.backward()
    assert torch.isfinite(loss) and model.encoders["caption"].embed.weight.grad.abs().sum() > 0
    model.eval()
    neg = {"caption": {"x": caption_ids("music")[None].repeat(2, 1), "present": torch.ones(2, dtype=torch.bool)}}
    plain = model.generate({"caption": caption}, seed=0, steps=2, guidance=3.0, decode=False).latent
    steered = model.generate({"caption": caption}, seed=0, steps=2, guidance=3.0, decode=False, negative=neg).latent
    assert (plain - steered).abs().max() > 1e-4
