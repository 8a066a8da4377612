"""The manifest's `caption` field: read, written back, refused when not a string; the synthetic set's
captions describe the clip from its labels, and a set made before captions gets them on reuse."""

from __future__ import annotations

import json

import pytest

from tests.data.test_manifest import _good_lines, _write, media_dir  # noqa: F401 - fixture
from vssflow.core.manifest import ManifestError, read_manifest, write_manifest


def test_caption_is_read_and_written_back(media_dir):  # noqa: F811
    lines = _good_lines()
    lines[0]["caption"] = "two drum circles on screen; off-screen glass hits"
    path = _write(media_dir / "m.jsonl", lines)
    records = read_manifest(path)
    assert records[0].caption == "two drum circles on screen; off-screen glass hits" and records[2].caption is None
    out = write_manifest(media_dir / "copy.jsonl", records)
    assert read_manifest(out)[0].caption == records[0].caption
    assert "caption" not in json.loads(out.read_text().splitlines()[2])


def test_a_caption_that_is_not_a_string_names_the_line_and_field(media_dir):  # noqa: F811
    lines = _good_lines()
    lines[3]["caption"] = ["drum"]
    path = _write(media_dir / "m.jsonl", lines)
    with pytest.raises(ManifestError, match=r"line 4: field 'caption': expected a string, got list"):
        read_manifest(path)


def test_synthetic_captions_name_classes_counts_and_offscreen_sounds():
    from vssflow.plugins.datasets.synth.generate import caption

    labels = {"objects": [{"class": "metal"}, {"class": "metal"}, {"class": "engine"}],
              "events": [{"class": "drum", "onscreen": False}, {"class": "metal", "onscreen": True},
                         {"class": "glass", "onscreen": False}]}
    assert caption(labels) == "one engine car and two metal squares on screen; off-screen drum and glass hits"
    labels["events"] = []
    assert caption(labels) == "one engine car and two metal squares on screen; no off-screen sounds"
    assert caption({"transcript": "bin blue", "objects": []}) == "a person speaking"
    assert caption({"transcript": "x", **labels}).startswith("a person speaking over a scene; one engine car")


def test_a_set_made_before_captions_gets_them_on_reuse(tmp_path):
    from vssflow.plugins.datasets.synth import SynthConfig, generate

    config = SynthConfig(clips=2, seconds=1.0, families=("v2s",), size=32)
    manifest = generate(tmp_path, config)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    want = [r["caption"] for r in rows]
    for name in ("manifest.jsonl", "train.jsonl"):
        path = tmp_path / name
        old = [{k: v for k, v in json.loads(line).items() if k != "caption"} for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps(r) + "\n" for r in old))
    generate(tmp_path, config)
    assert [r.caption for r in read_manifest(manifest)] == want and all(want)
