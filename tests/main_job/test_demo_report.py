"""The demo's report: written end to end by run_demo at micro size, and rendered by a real browser."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.browser import BROWSER, SKIP_REASON
from tests.main_job.conftest import MICRO


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, str]:
    """`vssflow demo` at micro size: (report.html, what it printed)."""
    from vssflow.cli.main import main

    out = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["demo", "--out", str(out), "--recipe", str(MICRO), "--clips", "10", "--steps", "2",
                     "--set", "data.params.families=[v2s]", "--set", "data.params.size=48",
                     "--set", "train.ckpt_every=0"])
    assert code == 0, printed.getvalue()[-2000:]
    return out / "report.html", printed.getvalue()


@pytest.fixture(scope="module")
def demo_report(demo_run) -> Path:
    return demo_run[0]


def test_demo_ends_with_the_command_that_opens_the_app_on_its_model(demo_run):
    from vssflow.cli.main import build_parser
    from vssflow.core.checkpoint import Checkpoint

    report, printed = demo_run
    last = printed.strip().splitlines()[-1]
    command = shlex.split(last[last.index("vssflow app"):])
    args = build_parser().parse_args(command[1:])
    assert args.command == "app" and len(args.checkpoint) == 1
    assert Checkpoint(args.checkpoint[0]).path.resolve() == (report.parent / "run" / "checkpoints" / "last").resolve()


def test_run_demo_writes_a_complete_report(demo_report):
    html = demo_report.read_text()
    data = json.loads((demo_report.parent / "report.json").read_text())
    metrics = {row["metric"] for row in data["table"]}
    assert {"onset-f1", "mel-distance"} <= metrics
    for row in data["table"]:
        assert np.isfinite(row["conditioned"]) and np.isfinite(row["no conditions"])
    assert data["clips"], "no held-out clips in the report"
    for clip in data["clips"]:
        for rel in clip["media"].values():
            assert (demo_report.parent / rel).is_file(), rel
            assert f'src="{rel}"' in html
    assert html.count("<audio") == 3 * len(data["clips"]) and html.count("<video") == len(data["clips"])


@pytest.mark.skipif(BROWSER is None, reason=SKIP_REASON)
def test_report_renders_images_and_audio_in_a_browser(demo_report, tmp_path):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'ud'}",
             "--allow-file-access-from-files", "--virtual-time-budget=5000"]
    url = demo_report.resolve().as_uri()
    dom = subprocess.run([BROWSER, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<img") >= 3 and "<audio" in dom and "<video" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([BROWSER, *flags, "--window-size=1400,3000", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    # the spectrogram colour map's dark blue end appears only if the images were decoded and drawn
    dark_blue = (np.abs(pixels - np.array([13, 8, 135])).sum(1) < 40).sum()
    assert dark_blue > 500, "spectrogram images did not render"


def test_paired_rows_count_wins_and_ask_for_two_standard_errors():
    from vssflow.demo import paired_row

    row = paired_row("v2s", "onset-f1", True, [0.6, 0.7, 0.8, 0.3], [0.4, 0.5, 0.45, 0.55])
    assert row["clips better"] == "3/4" and row["advantage (± s.e.)"] == "+0.125 ± 0.130"
    assert row["clearly better"] is False  # better on average, but not by two standard errors
    row = paired_row("v2s", "onset-f1", True, [0.6, 0.7, 0.8, 0.5], [0.4, 0.5, 0.45, 0.55])
    assert row["advantage (± s.e.)"] == "+0.175 ± 0.083" and row["clearly better"] is True
    row = paired_row("v2s", "mel-distance", False, [1.5, 1.6, 1.4], [2.5, 2.4, 2.6])
    assert row["clearly better"] is True and row["clips better"] == "3/3" and row["conditioned"] == 1.5
    assert paired_row("v2s", "mel-distance", False, [1.0], [2.0])["clearly better"] is False  # one clip proves nothing


def test_generation_split_across_two_processes_equals_one_process(demo_run):
    """The demo's step 3 in two processes (each clip in one of them, seeded by clip) gives every clip the
    waveform that one process gives it, in the same order: a clip given to the wrong slot or another seed
    would differ by the whole signal."""

    from vssflow.demo import demo_recipe, held_out_clips, train_and_generate

    out = demo_run[0].parent
    resolved = demo_recipe(out / "data", str(MICRO), clips=10, steps=2,
                           overrides=["data.params.families=[v2s]", "data.params.size=48", "train.ckpt_every=0"])
    chosen = held_out_clips(resolved)
    assert len(chosen) >= 2  # each process gets a clip
    one = train_and_generate(resolved, out / "run", False, chosen, device="cpu", processes=1)
    two = train_and_generate(resolved, out / "run", False, chosen, device="cpu", processes=2)
    assert one["sample_rate"] == two["sample_rate"]
    for key in ("conditioned", "unconditioned"):
        assert len(one[key]) == len(two[key]) == len(chosen)
        for a, b in zip(one[key], two[key], strict=True):
            # batches of another size round differently (~1e-3 of the peak after Griffin-Lim's iterations)
            assert a.shape == b.shape and float((a - b).abs().max()) < 0.02 * float(a.abs().max())
    a, b = one["conditioned"][0], one["conditioned"][1]
    n = min(a.numel(), b.numel())
    assert float((a[:n] - b[:n]).abs().max()) > 0.2 * float(a.abs().max())  # another clip is far off
