"""`torchrun -m vssflow features extract / generate --manifest / evaluate --checkpoint`: two processes (gloo,
CPU) write what one process writes, byte for byte, and a rerun after an interruption does only what is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.main_job.conftest import MICRO
from vssflow.core.sharding import Shard, merge_rank_records, rank_device, rank_records_name

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VSSFLOW_LOAD_PLUGINS"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           "-m", "vssflow", *args], capture_output=True, text=True, env=env, timeout=600)


def one_process(*args: str) -> subprocess.CompletedProcess:
    """The CLI in one process with the thread count torchrun gives each rank: matrix products split over a
    different number of threads round differently, and the comparison is bit for bit."""
    env = {k: v for k, v in os.environ.items() if k != "VSSFLOW_LOAD_PLUGINS"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", "vssflow", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def files(folder: Path, pattern: str) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob(pattern))}


def test_blocks_are_dealt_round_robin_and_cover_every_item_once():
    items = list(range(11))
    parts = [Shard(r, 3).take(items, block=2) for r in range(3)]
    assert parts == [[0, 1, 6, 7], [2, 3, 8, 9], [4, 5, 10]]
    assert sorted(sum(parts, [])) == items
    assert Shard().take(items, block=4) == items


def test_each_rank_takes_its_own_gpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert rank_device("cuda", Shard(11, 16)) == "cuda:3"
    assert rank_device("cpu", Shard(11, 16)) == "cpu" and rank_device("cuda:1", Shard(11, 16)) == "cuda:1"
    assert rank_device("cuda", Shard()) == "cuda"  # one process: as asked


def test_rank_records_are_merged_in_manifest_order_without_torn_lines(tmp_path):
    (tmp_path / "generated.jsonl").write_text('{"id": "a"}\n')
    (tmp_path / rank_records_name("generated.jsonl", Shard(1, 2))).write_text('{"id": "d"}\n{"id": "b"}\n{"id": "c"')
    (tmp_path / rank_records_name("generated.jsonl", Shard(0, 2))).write_text('{"id": "c"}\n')
    assert merge_rank_records(tmp_path, "generated.jsonl", ["a", "b", "c", "d"]) == 3
    ids = [json.loads(ln)["id"] for ln in (tmp_path / "generated.jsonl").read_text().splitlines()]
    assert ids == ["a", "b", "c", "d"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generated.jsonl"]


@pytest.fixture(scope="module")
def frozen_recipe(tmp_path_factory) -> Path:
    """The micro recipe with a frozen (cacheable) video encoder: a tiny timm ViT with saved weights, as a
    pretrained encoder would be (random initial weights would differ between processes)."""
    import timm
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("recipe")
    torch.manual_seed(0)
    save_file(timm.create_model("test_vit", img_size=32).state_dict(), str(folder / "vit.safetensors"))
    path = folder / "micro-frozen.yaml"
    path.write_text(f"base: {MICRO}\nname: micro-frozen\nconditions:\n  video:\n    encoder: {{name: timm-video, params: "
                    f"{{model: test_vit, size: 32, fps: 5.0, checkpoint_path: {folder / 'vit.safetensors'}}}}}\n")
    return path


def features(folder: Path) -> dict[str, tuple[bytes, dict]]:
    """Cached features by file: the tensor's bits and the metadata (safetensors writes metadata keys in no
    fixed order, so the files are compared by content, not as bytes)."""
    from safetensors import safe_open

    found = {}
    for path in sorted(folder.rglob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            found[path.relative_to(folder).as_posix()] = (f.get_tensor("features").numpy().tobytes(), f.metadata())
    return found


def test_sharded_feature_extraction_equals_one_process_and_resumes(tmp_path, synth_root, frozen_recipe):
    """A killed sharded job left three clips cached; the rerun on two ranks encodes exactly the other five."""
    import shutil

    manifest = synth_root / "manifest.jsonl"
    args = ["features", "extract", str(frozen_recipe), "--manifest", str(manifest), "--batch-size", "2",
            "--conditions", "video", "--no-progress"]
    one = one_process(*args, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-3000:]
    single = features(tmp_path / "one")
    assert len(single) == 8
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    for path in sorted((tmp_path / "two").rglob("*.safetensors"))[3:]:
        path.unlink()
    two = torchrun(*args, "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    lines = [ln for ln in two.stdout.splitlines() if "written" in ln]
    written = {ln.split("]")[0]: int(ln.split("(")[1].split(" written")[0]) for ln in lines}
    assert len(lines) == 2 and written == {"[rank 0/2": 3, "[rank 1/2": 2}, two.stdout  # blocks of 2: ranks 0, 1, 0
    assert features(tmp_path / "two") == single  # bit-identical


def test_sharded_generation_equals_one_process_and_resumes(tmp_path, synth_root, micro_checkpoint):
    """A killed sharded job: two clips merged into generated.jsonl, two more only in rank 1's record file
    (it died before the merge), four never published. The rerun on two ranks makes exactly those four, the
    audio is the single process's bit for bit, and the records end up merged in manifest order."""
    import shutil

    manifest = synth_root / "manifest.jsonl"
    args = ["generate", "--checkpoint", str(micro_checkpoint), "--manifest", str(manifest), "--batch-size", "2",
            "--seed", "5"]
    one = one_process(*args, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-3000:]
    single = files(tmp_path / "one", "*.wav")
    assert len(single) == 8
    out = tmp_path / "two"
    shutil.copytree(tmp_path / "one", out)
    records = [json.loads(ln) for ln in (out / "generated.jsonl").read_text().splitlines()]
    order = [json.loads(ln)["id"] for ln in manifest.read_text().splitlines()]
    kept, unmerged, lost = records[:2], records[2:4], records[4:]
    (out / "generated.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    (out / rank_records_name("generated.jsonl", Shard(1, 2))).write_text("".join(json.dumps(r) + "\n" for r in unmerged))
    for record in lost:
        for name in record["files"]:
            (out / name).unlink()
    two = torchrun(*args, "--out", str(out))
    assert two.returncode == 0, two.stderr[-3000:]
    made = sorted(Path(ln).name for ln in two.stdout.split() if ln.endswith(".wav"))
    assert made == sorted(f"{r['id']}.wav" for r in lost)
    assert files(out, "*.wav") == single  # the same audio, bit for bit
    merged = [json.loads(ln)["id"] for ln in (out / "generated.jsonl").read_text().splitlines()]
    assert merged == order  # old lines first, then the new ones in manifest order
    assert not list(out.glob("generated.rank*"))


def test_sharded_evaluate_generates_on_every_rank_and_scores_once(tmp_path, synth_root, micro_checkpoint):
    manifest = synth_root / "manifest.jsonl"
    ref = one_process("generate", "--checkpoint", str(micro_checkpoint), "--manifest", str(manifest), "--batch-size", "3",
                  "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr[-3000:]
    done = torchrun("evaluate", "--checkpoint", str(micro_checkpoint), "--manifest", str(manifest), "--batch-size", "3",
                    "--metrics", "mel-distance", "--out", str(tmp_path / "eval"), "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert files(tmp_path / "eval" / "generated", "*.wav") == files(tmp_path / "ref", "*.wav")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "mel-distance" in json.dumps(metrics) and done.stdout.count("metrics:") == 1


def test_sharded_scoring_of_generated_clips_equals_one_process(tmp_path, synth_root):
    """`torchrun -m vssflow evaluate --generated`: each rank scores its batches (per-clip metrics and a set
    metric's features, with a classifier judge fitted on rank 0), and rank 0's metrics.json is one process's."""
    import soundfile as sf

    gen = tmp_path / "gen"
    gen.mkdir()
    for wav in sorted((synth_root / "clips").glob("*.wav")):  # clips unlike their references, unlike each other
        audio, rate = sf.read(wav, dtype="float32")
        sf.write(gen / wav.name, audio[::-1] * (0.3 + 0.1 * len(list(gen.iterdir()))), rate)
    manifest = str(synth_root / "manifest.jsonl")
    args = ("evaluate", "--generated", str(gen), "--manifest", manifest, "--batch-size", "3", "--no-progress",
            "--fit-judges", "--judges-dir", str(tmp_path / "judge"),
            "--metrics", "mel-distance,envelope-corr,class-accuracy,fd[logmel-cnn]")
    one = one_process(*args, "--out", str(tmp_path / "one"), "--cache-dir", str(tmp_path / "cache-one"))
    assert one.returncode == 0, one.stderr[-3000:]
    two = torchrun(*args, "--out", str(tmp_path / "two"), "--cache-dir", str(tmp_path / "cache-two"))
    assert two.returncode == 0, two.stderr[-3000:]
    expected = json.loads((tmp_path / "one" / "metrics.json").read_text())
    got = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert set(expected) == {"mel-distance", "envelope-corr", "class-accuracy", "fd[logmel-cnn]"}
    assert got == expected  # 8 clips in batches of 3: ranks 0, 1, 0; per-clip values, set features, CIs
    assert len(expected["mel-distance"]["per_clip"]) == 8
    assert two.stdout.count("metrics:") == 1  # rank 0 reports; rank 1 only scored
    assert len(list((tmp_path / "cache-two").rglob("*.safetensors"))) == 8  # every rank cached its references


def local_processes(*args: str) -> subprocess.CompletedProcess:
    """The CLI with `--processes 2` (vssflow.launch: two spawned processes of one thread, no torchrun)."""
    return one_process(*args, "--processes", "2")


def test_processes_option_shards_like_torchrun(tmp_path, synth_root, frozen_recipe, micro_checkpoint):
    """`--processes 2` on features extract, generate and evaluate --generated: the files and scores of one
    process, bit for bit, with each process doing its share."""
    manifest = str(synth_root / "manifest.jsonl")
    extract = ["features", "extract", str(frozen_recipe), "--manifest", manifest, "--batch-size", "2",
               "--conditions", "video", "--no-progress"]
    generate = ["generate", "--checkpoint", str(micro_checkpoint), "--manifest", manifest, "--batch-size", "2",
                "--seed", "5", "--device", "cpu"]
    printed = {}
    for name, args in (("features", extract), ("generated", generate)):
        one = one_process(*args, "--out", str(tmp_path / f"{name}-one"))
        assert one.returncode == 0, one.stderr[-3000:]
        two = local_processes(*args, "--out", str(tmp_path / f"{name}-two"))
        assert two.returncode == 0, two.stderr[-3000:]
        printed[name] = two.stdout
    written = sorted(ln.split("]")[0] for ln in printed["features"].splitlines() if "written" in ln)
    assert written == ["[rank 0/2", "[rank 1/2"], printed["features"]  # both processes encoded their share
    assert features(tmp_path / "features-two") == features(tmp_path / "features-one")
    assert len(features(tmp_path / "features-one")) == 8
    single = files(tmp_path / "generated-one", "*.wav")
    assert len(single) == 8 and files(tmp_path / "generated-two", "*.wav") == single
    ids = [[json.loads(ln)["id"] for ln in (tmp_path / f"generated-{n}" / "generated.jsonl").read_text().splitlines()]
           for n in ("one", "two")]
    assert ids[0] == ids[1] and not list((tmp_path / "generated-two").glob("generated.rank*"))

    score = ["evaluate", "--generated", str(tmp_path / "generated-one"), "--manifest", manifest, "--batch-size", "3",
             "--no-progress", "--metrics", "mel-distance,envelope-corr,fd[logmel-cnn]"]
    one = one_process(*score, "--out", str(tmp_path / "eval-one"), "--cache-dir", str(tmp_path / "cache-one"))
    assert one.returncode == 0, one.stderr[-3000:]
    two = local_processes(*score, "--out", str(tmp_path / "eval-two"), "--cache-dir", str(tmp_path / "cache-two"))
    assert two.returncode == 0, two.stderr[-3000:]
    expected = json.loads((tmp_path / "eval-one" / "metrics.json").read_text())
    assert json.loads((tmp_path / "eval-two" / "metrics.json").read_text()) == expected
    assert len(expected["mel-distance"]["per_clip"]) == 8 and two.stdout.count("metrics:") == 1
