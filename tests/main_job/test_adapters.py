"""LoRA adapters (peft): only the adapter trains, adapter-only checkpoints naming their base by content hash,
exact resume, several adapters with scales, merging into a plain checkpoint, and the one-line refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.main_job.conftest import MICRO, data_args, vssflow

pytest.importorskip("peft", reason="adapters need the finetune extra (pip install 'vssflow[finetune]')")

LORA = ["--set", "adapter.name=lora", "--set", "adapter.params.rank=2", "--set", "adapter.params.alpha=4.0",
        "--set", "train.lr=0.02", "--set", "train.warmup_steps=0"]


def overrides(synth_root: Path, base: Path, steps: int = 4) -> list[str]:
    args = [*LORA, *data_args(synth_root), "--set", f"train.init_from={base}", "--set", f"train.steps={steps}"]
    return [a for a in args if a != "--set"]


@pytest.fixture(scope="module")
def adapter_run(tmp_path_factory, synth_root, micro_checkpoint) -> Path:
    """A LoRA fine-tune of the micro model, through the CLI: 4 steps, checkpoints at 2 and 4."""
    out = tmp_path_factory.mktemp("lora-run")
    done = vssflow("train", str(MICRO), "--out", str(out), "--no-progress", *LORA, *data_args(synth_root),
                   "--set", f"train.init_from={micro_checkpoint}", "--set", "train.steps=4")
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "checkpoints" / "last"


def test_only_adapter_parameters_change(tmp_path, synth_root, micro_checkpoint):
    """The run's model after training: every base tensor (parameters and buffers) equals the base checkpoint's,
    bit for bit; every adapter tensor trained."""
    from vssflow.adapters import prepare_run
    from vssflow.core.checkpoint import Checkpoint
    from vssflow.core.trainer import Trainer
    from vssflow.registry.assemble import build
    from vssflow.registry.recipe import load_recipe
    from vssflow.training import dataset_for

    recipe = load_recipe(MICRO, overrides(synth_root, micro_checkpoint, steps=3))
    model = build(recipe, device="cpu").model
    weights, meta = prepare_run(recipe, model)
    start = {k: v.clone() for k, v in weights.model_state(model).items()}
    dataset = dataset_for(recipe, model)
    (tmp_path / "run").mkdir()
    Trainer(model, recipe.train, dataset, dataset.collate, tmp_path / "run", meta=meta, weights=weights,
            device="cpu", progress=False).fit()

    base = Checkpoint(micro_checkpoint).model_state(ema=True)
    adapter_keys = set(weights.model_state(model))
    seen = set()
    for name, tensor in model.state_dict().items():
        if weights.adapter.file_key(name, "adapter0") is not None:
            continue
        plain = name.replace(".base_layer.", ".")
        assert torch.equal(tensor, base[plain]), f"base tensor {plain} changed"
        seen.add(plain)
    assert seen == set(base), "every base tensor is compared"
    trained = weights.model_state(model)
    assert adapter_keys and all("lora_A" in k or "lora_B" in k for k in adapter_keys)
    for key, value in trained.items():
        assert not torch.equal(value, start[key]), f"adapter tensor {key} did not train"
    assert meta["adapter"]["base"]["path"] == str(micro_checkpoint)


def test_adapter_on_encoders_and_aggregators_but_never_a_frozen_encoder(synth_root, micro_checkpoint):
    from vssflow.adapters import prepare_run
    from vssflow.core.errors import RecipeError
    from vssflow.registry.assemble import build
    from vssflow.registry.recipe import load_recipe

    targets = 'adapter.params.targets=["encoders.video.*", "aggregators.*", "backbone.blocks.*.attn.qkv"]'
    recipe = load_recipe(MICRO, [*overrides(synth_root, micro_checkpoint), targets])
    model = build(recipe, device="cpu").model
    _, meta = prepare_run(recipe, model)
    adapted = meta["adapter"]["modules"]
    assert any(m.startswith("encoders.video.") for m in adapted)  # its convolutions; GroupNorms stay as they are
    assert any(m.startswith("aggregators.") for m in adapted) and "backbone.blocks.0.attn.qkv" in adapted
    assert not any(m.startswith(("encoders.sync", "backbone.blocks.0.ffn")) for m in adapted)

    model = build(recipe, device="cpu").model
    model.encoders["video"].frozen = True  # as a pretrained encoder is: runs without gradients, may be cached
    with pytest.raises(RecipeError, match="frozen"):
        prepare_run(recipe, model)
    nothing = load_recipe(MICRO, [*overrides(synth_root, micro_checkpoint), 'adapter.params.targets=["codec.*"]'])
    with pytest.raises(Exception, match="match no Linear"):
        prepare_run(nothing, build(nothing, device="cpu").model)


def test_adapter_checkpoint_is_small_and_names_its_base(adapter_run, micro_checkpoint):
    from vssflow.adapters import checkpoint_sha256

    meta = json.loads((adapter_run / "meta.json").read_text())
    assert meta["adapter"]["base"]["sha256"] == checkpoint_sha256(micro_checkpoint)
    assert meta["adapter"]["name"] == "lora" and meta["adapter"]["params"]["rank"] == 2
    tensors = load_file(str(adapter_run / "model.safetensors"))
    assert tensors and all(".lora_A." in k or ".lora_B." in k for k in tensors)
    assert set(load_file(str(adapter_run / "ema.safetensors"))) == set(tensors)
    ratio = (adapter_run / "model.safetensors").stat().st_size / (micro_checkpoint / "model.safetensors").stat().st_size
    assert ratio < 0.05, f"adapter file is {ratio:.1%} of the base model file"


def test_adapter_run_resumes_exactly(tmp_path, synth_root, micro_checkpoint, adapter_run):
    """Stopped at step 2 and resumed, the run reaches the uninterrupted run's adapter, EMA and optimizer."""
    import vssflow

    recipe = vssflow.load_recipe(MICRO, overrides(synth_root, micro_checkpoint))
    out = tmp_path / "resumed"
    vssflow.train(recipe, out_dir=out, max_steps=2, progress=False)
    vssflow.train(recipe, out_dir=out, resume=True, progress=False)
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a, b = load_file(str(adapter_run / name)), load_file(str(out / "checkpoints" / "last" / name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}:{key} differs after resume"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in this process (each subprocess costs seconds of imports): exit code, stdout, stderr."""
    from vssflow.cli.main import main

    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def _wav(pipe, video: Path) -> torch.Tensor:
    return pipe.generate_clip(video, seed=3)


def test_merged_and_unmerged_generation_match(tmp_path, capsys, micro_checkpoint, adapter_run):
    """An adapter at scale 4 (its effect is far above the tolerance): generation with the adapter applied by
    peft's layers equals generation from `vssflow adapter merge`'s plain checkpoint to float32 rounding
    through Griffin-Lim (1e-4 of the peak; measured 5e-6 to 3e-5), and the merged checkpoint generates through the CLI."""
    from tests.main_job.test_generate import moving_square
    from vssflow.generation import load_pipeline

    video = moving_square(tmp_path / "in.mp4", 1.0, 25.0)
    base = _wav(load_pipeline(micro_checkpoint, device="cpu"), video)
    adapted = _wav(load_pipeline(micro_checkpoint, device="cpu", adapters=[(adapter_run, 4.0)]), video)
    merged_dir = tmp_path / "merged"
    code, _, err = cli(capsys, "adapter", "merge", str(micro_checkpoint), str(adapter_run), "--scale", "4",
                       "--out", str(merged_dir))
    assert code == 0, err
    merged = _wav(load_pipeline(merged_dir, device="cpu"), video)
    peak = adapted.abs().max()
    assert (adapted - merged).abs().max() <= 1e-4 * peak  # float32 rounding (W + s B A summed in another order)
    assert (adapted - base).abs().max() > 0.05 * peak

    code, _, err = cli(capsys, "generate", "--checkpoint", str(merged_dir), "--video", str(video),
                       "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert (tmp_path / "out" / "in.wav").is_file()


def test_several_adapters_add_up_with_their_scales(tmp_path, micro_checkpoint, adapter_run):
    from tests.main_job.test_generate import moving_square
    from vssflow.generation import load_pipeline

    video = moving_square(tmp_path / "in.mp4", 1.0, 25.0)
    twice = _wav(load_pipeline(micro_checkpoint, device="cpu", adapters=[(adapter_run, 1.5), (adapter_run, 0.5)]), video)
    once = _wav(load_pipeline(micro_checkpoint, device="cpu", adapters=[(adapter_run, 2.0)]), video)
    off = _wav(load_pipeline(micro_checkpoint, device="cpu", adapters=[(adapter_run, 0.0)]), video)
    base = _wav(load_pipeline(micro_checkpoint, device="cpu"), video)
    peak = once.abs().max()
    assert (twice - once).abs().max() <= 1e-4 * peak
    assert (off - base).abs().max() <= 1e-4 * peak
    assert (once - base).abs().max() > 0.02 * peak


def test_generate_cli_with_adapters_and_one_line_refusals(tmp_path, capsys, micro_checkpoint, adapter_run):
    from tests.main_job.test_generate import moving_square

    video = moving_square(tmp_path / "in.mp4", 1.0, 25.0)
    out = tmp_path / "out"
    code, _, err = cli(capsys, "generate", "--checkpoint", str(micro_checkpoint), "--video", str(video),
                       "--out", str(out), "--adapter", str(adapter_run), "--adapter-scale", "0.5")
    assert code == 0, err
    record = json.loads((out / "generated.jsonl").read_text().splitlines()[-1])
    assert record["adapters"][0][1] == 0.5

    other = tmp_path / "other-base"  # another base: same recipe, other weights
    shutil.copytree(micro_checkpoint, other)
    state = load_file(str(other / "model.safetensors"))
    from safetensors.torch import save_file

    save_file({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, str(other / "model.safetensors"))
    cases = [
        (["--checkpoint", str(other), "--adapter", str(adapter_run)], "was trained on base"),
        (["--checkpoint", str(adapter_run)], "is an adapter checkpoint"),
        (["--checkpoint", str(micro_checkpoint), "--adapter", str(micro_checkpoint)], "not an adapter checkpoint"),
        (["--checkpoint", str(micro_checkpoint), "--adapter", str(adapter_run), "--adapter-scale", "1",
          "--adapter-scale", "2"], "--adapter-scale"),
    ]
    for args, words in cases:
        code, _, err = cli(capsys, "generate", *args, "--video", str(video), "--out", str(tmp_path / "refused"))
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and words in lines[0], err
        assert not (tmp_path / "refused").exists()


def test_adapter_recipe_needs_a_base_and_merge_refuses_a_used_folder(tmp_path, capsys, synth_root,
                                                                      micro_checkpoint, adapter_run):
    code, _, err = cli(capsys, "train", str(MICRO), "--out", str(tmp_path / "run"), "--no-progress", *LORA,
                       *data_args(synth_root))
    assert code == 2 and "train.init_from" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run" / "checkpoints").exists()
    code, _, err = cli(capsys, "train", str(MICRO), "--out", str(tmp_path / "run"), "--no-progress", *LORA,
                       *data_args(synth_root), "--set", f"train.init_from={adapter_run}")
    assert code == 2 and "is an adapter checkpoint" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = cli(capsys, "train", str(MICRO), "--out", str(tmp_path / "run"), "--no-progress", *LORA,
                       *data_args(synth_root), "--set", f"train.init_from={micro_checkpoint}",
                       "--set", "train.strategy=fsdp")
    assert code == 2 and "train.strategy" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run" / "checkpoints").exists()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    code, _, err = cli(capsys, "adapter", "merge", str(micro_checkpoint), str(adapter_run), "--out",
                       str(tmp_path / "used"))
    assert code == 2 and "not an empty folder" in err
    code, out, _ = cli(capsys, "adapter", "show", str(adapter_run))
    assert code == 0 and "lora" in out and "base:" in out
    meta = json.loads((adapter_run / "meta.json").read_text())["adapter"]
    assert f"{meta['parameters']} parameters" in out
    code, out, _ = cli(capsys, "recipe", "show", str(MICRO), *LORA)
    assert code == 0 and f"# adapter lora: {meta['parameters']:,} parameters on {len(meta['modules'])} modules" in out
