"""One decoding pass for a clip's video conditions, and the in-memory cache of decoded frames across steps."""

from __future__ import annotations

import pickle

import pytest
import torch

from tests.data.conftest import read_code, write_test_video
from vssflow.core import media
from vssflow.core.data import ClipDataset
from vssflow.core.interfaces import InputContract
from vssflow.core.manifest import read_manifest
from vssflow.core.phonemes import PhonemeTokenizer
from vssflow.core.sequence import SequenceSpec
from vssflow.core.video_cache import DecodedVideoCache

# the demo's three video conditions: two frame rates, three sizes
CONDITIONS = {
    "video": InputContract("video", fps=10.0, size=(32, 32)),
    "lip": InputContract("video", fps=25.0, size=(48, 48)),
    "sync": InputContract("video", fps=25.0, size=(32, 32)),
    "transcript": ("transcript", InputContract("transcript", fps=25.0)),
}
REQUESTS = [media.VideoRequest(10.0, (32, 32), 0.5, 2.5), media.VideoRequest(25.0, (48, 48), 0.0, None),
            media.VideoRequest(None, (16, 16), 1.0, 2.0), media.VideoRequest(7.0, (20, 30), 1.3, 2.1, "stretch")]


def _equal(a: media.VideoFrames, b: media.VideoFrames) -> bool:
    return (torch.equal(a.frames, b.frames) and torch.equal(a.times, b.times) and a.fps == b.fps
            and a.source_fps == b.source_fps)


def _batches_equal(a: dict, b: dict) -> None:
    assert a["ids"] == b["ids"] and torch.equal(a["wav"], b["wav"])
    assert set(a["conditions"]) == set(b["conditions"])
    for name, cond in a["conditions"].items():
        for key, value in cond.items():
            assert torch.equal(value, b["conditions"][name][key]) if isinstance(value, torch.Tensor) else value == \
                b["conditions"][name][key], (name, key)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_test_video(tmp_path_factory.mktemp("v") / "v.mp4", [i / 24 for i in range(72)], rate=24)


def test_one_pass_equals_one_read_per_request(video):
    together = media.read_videos(video, REQUESTS)
    for request, frames in zip(REQUESTS, together, strict=True):
        alone = media.read_video(video, request.fps, request.size, request.start, request.end, request.fit)
        assert _equal(frames, alone), request
    assert [read_code(f) for f in together[2].frames] == list(range(24, 48))  # native frames 1.0 s .. 2.0 s


@pytest.fixture(scope="module")
def records(synth_root):
    return read_manifest(synth_root / "manifest.jsonl")


def test_cached_batches_are_bit_identical_to_decoded_ones(records):
    spec = SequenceSpec(16000, 160, 4.0)
    plain = ClipDataset(records, CONDITIONS, spec, tokenizer=PhonemeTokenizer())
    cached = plain.configure(video_cache_mb=64)
    keys = list(range(len(records)))
    reference = plain.collate([plain[k] for k in keys])
    first = cached.collate([cached[k] for k in keys])  # decoded, one pass per clip, and kept
    again = cached.collate([cached[k] for k in reversed(keys)][::-1])  # all served from memory
    _batches_equal(first, reference)
    _batches_equal(again, reference)
    video_clips = sum(r.video is not None for r in records)
    assert (cached.video_cache.misses, cached.video_cache.hits) == (3 * video_clips, 3 * video_clips)
    assert plain.video_cache.max_bytes == 0 and len(plain.video_cache) == 0  # off unless asked for


def test_a_changed_file_is_decoded_again(video, tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(video.read_bytes())
    cache = DecodedVideoCache(16)
    request = [media.VideoRequest(25.0, (16, 16), 0.0, 1.0)]
    before = cache.read(path, request)[0]
    write_test_video(path, [i / 24 for i in range(48)], rate=24, codes=[200 - i for i in range(48)])
    after = cache.read(path, request)[0]
    assert read_code(after.frames[0]) == 200 and read_code(before.frames[0]) == 0
    assert _equal(after, media.read_video(path, 25.0, (16, 16), 0.0, 1.0))
    assert (cache.misses, cache.hits, len(cache)) == (2, 0, 1)  # the stale entry was dropped, not kept beside


def test_memory_stays_within_the_budget_least_recent_out_first(video):
    one = media.decode_video(video, [media.VideoRequest(25.0, (32, 32), 0.0, 1.0)])[0].nbytes  # 25 frames
    cache = DecodedVideoCache(2.5 * one / 2**20)  # room for two windows
    windows = [media.VideoRequest(25.0, (32, 32), float(s), float(s) + 1.0) for s in range(3)]
    cache.read(video, windows[:2])
    cache.read(video, windows[:1])  # window 0 is now the most recently used
    cache.read(video, windows[2:])  # window 1 goes
    assert len(cache) == 2 and cache.nbytes <= cache.max_bytes
    cache.read(video, [windows[0], windows[2]])
    assert (cache.hits, cache.misses) == (3, 3)
    cache.read(video, windows[1:2])
    assert cache.misses == 4 and cache.nbytes <= cache.max_bytes
    huge = DecodedVideoCache(one / 2 / 2**20)  # an entry larger than the whole budget is served, not kept
    assert _equal(huge.read(video, windows[:1])[0], media.read_video(video, 25.0, (32, 32), 0.0, 1.0))
    assert len(huge) == 0 and huge.nbytes == 0


def test_a_loader_process_starts_with_an_empty_cache_of_the_same_budget(video):
    cache = DecodedVideoCache(8)
    cache.read(video, REQUESTS[:1])
    copy = pickle.loads(pickle.dumps(cache))
    assert (copy.max_bytes, len(copy), copy.nbytes) == (cache.max_bytes, 0, 0) and len(cache) == 1
    with pytest.raises(ValueError, match="max_mb"):
        DecodedVideoCache(-1)


def test_recipe_field_reaches_the_dataset(tmp_path):
    from vssflow.registry.assemble import build
    from vssflow.registry.recipe import load_recipe
    from vssflow.training import dataset_for

    recipe = load_recipe("unified-tiny", [f"data.params.root={tmp_path}", "data.video_cache_mb=32"])
    dataset = dataset_for(recipe, build(recipe).model)  # nothing is generated until a clip is read
    assert dataset.video_cache.max_bytes == 32 * 2**20
