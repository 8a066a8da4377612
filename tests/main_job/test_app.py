"""`vssflow app`: the real command serving a micro checkpoint, driven through gradio_client and a real browser.

The server runs under an audit hook that records every connection or name lookup beyond this machine; the
tests end by checking there was none. The browser test keeps its screenshots in build/test-artifacts/ (or
$VSSFLOW_TEST_ARTIFACTS).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.browser import BROWSER, SKIP_REASON, artifact_dir
from tests.main_job.test_generate import moving_square
from vssflow.core.media import probe

pytest.importorskip("gradio", reason="the app extra is not installed (pip install -e '.[app]')")
gradio_client = pytest.importorskip("gradio_client")

# Runs `vssflow app` with an audit hook that logs connections and look-ups of hosts other than this machine.
GUARDED_MAIN = r"""
import sys
LOCAL = ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::", "")
log_path = sys.argv[1]
def hook(event, args):
    host = None
    if event == "socket.connect" and isinstance(args[1], tuple):
        host = args[1][0]
    elif event == "socket.getaddrinfo":
        host = args[0]
        host = host.decode() if isinstance(host, bytes) else host
    if isinstance(host, str) and host not in LOCAL:
        with open(log_path, "a") as f:
            f.write(f"{event} {host}\n")
sys.addaudithook(hook)
from vssflow.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def captioned(tmp_path_factory) -> Path:
    """An untrained checkpoint with a caption condition (the micro one has none)."""
    return untrained_checkpoint("v2s-tiny-caption", tmp_path_factory.mktemp("captioned") / "last")


@pytest.fixture(scope="module")
def app_server(tmp_path_factory, micro_checkpoint, captioned):
    """`vssflow app --checkpoint MICRO --checkpoint CAPTIONED --port 0` in a subprocess: (url, output folder,
    network log)."""
    root = tmp_path_factory.mktemp("app")
    out, netlog = root / "runs", root / "network.log"
    env = {k: v for k, v in os.environ.items() if k != "VSSFLOW_LOAD_PLUGINS"}
    env["GRADIO_TEMP_DIR"] = str(root / "gradio-cache")
    proc = subprocess.Popen(
        [sys.executable, "-c", GUARDED_MAIN, str(netlog), "app", "--checkpoint", str(micro_checkpoint),
         "--checkpoint", str(captioned), "--port", "0", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=root)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    seen = []
    try:
        while True:
            try:
                line = lines.get(timeout=180)
            except queue.Empty:
                pytest.fail(f"the app did not start in 180 s: {''.join(seen)[-2000:]}")
            seen.append(line)
            if "vssflow app: open " in line:
                url = line.split("open ", 1)[1].split()[0]
                break
            if proc.poll() is not None:
                pytest.fail(f"the app exited: {''.join(seen)[-2000:]}")
        yield url, out, netlog
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not netlog.exists(), f"the app reached beyond this machine: {netlog.read_text()}"


@pytest.fixture(scope="module")
def client(app_server):
    return gradio_client.Client(app_server[0], verbose=False, download_files=str(app_server[1].parent / "client"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 2.4 s video: three windows of the micro model's 1 s."""
    return moving_square(tmp_path_factory.mktemp("clip") / "square.mp4", 2.4, 25.0)


@pytest.fixture(scope="module")
def bad_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad") / "notes.mp4"
    path.write_text("this is a text file, not a video\n")
    return path


def video_arg(path: Path) -> dict:
    return gradio_client.handle_file(str(path))


def generate(client, video: Path, **settings):
    args = {"speaker": None, "sampler": "euler", "steps": 2, "guidance": 2.0, "seed": 0, **settings}
    return client.predict(video=video_arg(video), **args, api_name="/generate")


def test_generate_through_the_client_gives_wav_and_mp4_as_long_as_the_video(client, clip, micro_checkpoint,
                                                                             tmp_path):
    status, video, audio, waveform, spectrogram, files = generate(client, clip, seed=3)
    assert "s of audio" in status, status
    seconds = probe(clip).duration_s
    info = sf.info(audio)
    assert info.frames == round(seconds * info.samplerate)  # to the sample
    muxed = probe(video["video"] if isinstance(video, dict) else video)
    assert muxed.has_audio and muxed.has_video and abs(muxed.duration_s - seconds) < 0.05
    assert sorted(Path(f).suffix for f in files) == [".mp4", ".wav"]
    for picture in (waveform, spectrogram):
        from PIL import Image

        assert min(Image.open(picture).size) > 16
    # the app generates with the Python API's code: the same seed gives the same audio
    from vssflow.core.media import write_audio
    from vssflow.generation import load_pipeline

    pipe = load_pipeline(micro_checkpoint, device="cpu")
    wav = pipe.generate_clip(clip, seed=3, steps=2, guidance=2.0)
    expected, _ = sf.read(write_audio(tmp_path / "api.wav", wav, pipe.sample_rate), dtype="float32")
    got, _ = sf.read(audio, dtype="float32")
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-3 and np.abs(got).max() > 0


@pytest.fixture(scope="module")
def cli_error(tmp_path_factory, micro_checkpoint, bad_clip) -> str:
    """The line `vssflow generate` prints for the bad file, named as a user names it."""
    from vssflow.cli.main import main

    where = tmp_path_factory.mktemp("cli")
    (where / bad_clip.name).write_bytes(bad_clip.read_bytes())
    printed, here = io.StringIO(), os.getcwd()
    os.chdir(where)
    try:
        with contextlib.redirect_stderr(printed):
            code = main(["generate", "--checkpoint", str(micro_checkpoint), "--video", bad_clip.name, "--out", "out"])
    finally:
        os.chdir(here)
    assert code == 2 and len(printed.getvalue().strip().splitlines()) == 1, printed.getvalue()
    return printed.getvalue().strip()


def test_a_bad_upload_shows_the_cli_line_and_the_next_upload_works(client, clip, bad_clip, cli_error):
    status, *outputs = generate(client, bad_clip)
    assert status == cli_error
    assert outputs == [None] * 5
    status, video, audio, *_ = generate(client, clip)
    assert "s of audio" in status and Path(audio).is_file()


def test_compare_two_settings_on_one_video_and_seed(client, clip, micro_checkpoint):
    ckpt = str(micro_checkpoint)
    same = client.predict(video=video_arg(clip), speaker=None, ckpt_a=ckpt, sampler_a="euler", steps_a=2, guidance_a=2.0,
                          ckpt_b=ckpt, sampler_b="euler", steps_b=2, guidance_b=2.0, seed=5, api_name="/compare")
    assert same[0].startswith("A: ") and "\nB: " in same[0], same[0]
    a, _ = sf.read(same[2])
    b, _ = sf.read(same[5])
    assert np.array_equal(a, b)  # same checkpoint, settings and seed: the same audio
    other = client.predict(video=video_arg(clip), speaker=None, ckpt_a=ckpt, sampler_a="euler", steps_a=2, guidance_a=2.0,
                           ckpt_b=ckpt, sampler_b="heun", steps_b=3, guidance_b=0.0, seed=5, api_name="/compare")
    a2, _ = sf.read(other[2])
    b2, _ = sf.read(other[5])
    assert np.array_equal(a, a2) and a2.shape == b2.shape and np.abs(a2 - b2).max() > 1e-3


def test_batch_runs_a_manifest_and_offers_a_zip(client, tmp_path):
    for name, secs in (("one", 1.0), ("two", 1.6)):
        moving_square(tmp_path / f"{name}.mp4", secs, 25.0)
    manifest = tmp_path / "clips.jsonl"
    manifest.write_text('{"id": "first", "task": "v2s", "video": "videos/one.mp4"}\n'
                        '{"id": "second", "task": "v2s", "video": "two.mp4"}\n')
    status, table, archive = client.predict(
        manifest=gradio_client.handle_file(str(manifest)),
        media=[gradio_client.handle_file(str(tmp_path / n)) for n in ("one.mp4", "two.mp4")],
        sampler="euler", steps=2, guidance=2.0, seed=0, api_name="/batch")
    assert status.startswith("2 clips"), status
    assert [row[0] for row in table["data"]] == ["first", "second"]
    with zipfile.ZipFile(archive) as zf:
        names = sorted(zf.namelist())
        assert names == ["clips/first.mp4", "clips/first.wav", "clips/generated.jsonl", "clips/second.mp4",
                         "clips/second.wav"]
        second, sr = sf.read(io.BytesIO(zf.read("clips/second.wav")))
    assert len(second) == round(probe(tmp_path / "two.mp4").duration_s * sr)
    # a clip the upload does not cover: the manifest's own error line, and nothing generated
    manifest.write_text('{"id": "third", "task": "v2s", "video": "missing.mp4"}\n')
    status, table, archive = client.predict(manifest=gradio_client.handle_file(str(manifest)), media=[],
                                            sampler="euler", steps=2, guidance=2.0, seed=0, api_name="/batch")
    assert status.startswith("vssflow generate: error: clips.jsonl") and "missing.mp4" in status, status
    assert archive is None


@pytest.mark.skipif(BROWSER is None, reason=SKIP_REASON)
def test_browser_uploads_generates_and_shows_video_audio_and_spectrogram(app_server, clip, bad_clip, cli_error,
                                                                       micro_checkpoint, captioned):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    url = app_server[0]
    shots = artifact_dir()
    outside: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=BROWSER, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                           "--disable-component-update", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.on("request", lambda r: None if r.url.startswith((url, "data:", "blob:")) else outside.append(r.url))
            page.goto(url)
            page.wait_for_selector("#generate", timeout=60_000)
            # the micro V2S checkpoint takes no transcript or caption; the captioned one a caption and a
            # negative prompt: choosing it shows them, choosing the micro one again hides them
            fields = ("#transcript", "#speech-span", "#speaker", "#caption", "#negative-prompt")

            def choose(checkpoint: Path) -> None:
                page.locator("#checkpoint input").click()
                page.get_by_role("option", name=str(checkpoint), exact=True).click()

            assert [page.locator(f).is_visible() for f in fields] == [False] * 5
            choose(captioned)
            page.locator("#caption").wait_for(state="visible", timeout=10_000)
            assert [page.locator(f).is_visible() for f in fields] == [False, False, False, True, True]
            page.locator("#caption textarea").fill("a drum on screen")  # emptied when hidden: the runs below
            # on the micro checkpoint would fail on a caption
            choose(micro_checkpoint)
            page.locator("#caption").wait_for(state="hidden", timeout=10_000)
            assert [page.locator(f).is_visible() for f in fields] == [False] * 5

            def run(video: Path) -> str:
                """Drop `video` in (replacing the last one), press Generate, wait for a new status line."""
                before = page.locator("#status textarea").input_value()
                clear = page.locator("#video button[aria-label='Clear']")
                if clear.count():
                    clear.first.click()
                page.locator("#video input[type=file]").set_input_files(str(video))
                page.wait_for_function("() => { const v = document.querySelector('#video video'); "
                                       "return v && v.src; }", timeout=30_000)
                page.click("#generate")
                page.wait_for_function(
                    "(before) => { const t = document.querySelector('#status textarea'); "
                    "return t && t.value && t.value !== before; }", arg=before, timeout=120_000)
                return page.locator("#status textarea").input_value()

            status = run(clip)
            assert "s of audio" in status, status
            page.wait_for_function("() => { const v = document.querySelector('#out-video video'); "
                                   "return v && v.readyState >= 2 && v.duration > 0; }", timeout=30_000)
            duration = page.evaluate("document.querySelector('#out-video video').duration")
            assert abs(duration - probe(clip).duration_s) < 0.1
            # the audio player shows the length only once it has loaded and decoded the wav
            page.wait_for_function("() => { const d = document.querySelector('#out-audio time#duration'); "
                                   f"return d && d.textContent.trim() === '0:0{int(probe(clip).duration_s)}'; }}",
                                   timeout=30_000)
            decoded = page.evaluate("async () => { const a = document.querySelector('#out-audio a[download]'); "
                                    "const data = await (await fetch(a.href)).arrayBuffer(); "
                                    "return (await new AudioContext().decodeAudioData(data)).duration; }")
            assert abs(decoded - probe(clip).duration_s) < 0.01
            for picture in ("#spectrogram-image img", "#waveform-image img"):
                page.wait_for_function(f"() => {{ const i = document.querySelector('{picture}'); "
                                       "return i && i.complete && i.naturalWidth > 0; }", timeout=30_000)
            page.screenshot(path=str(shots / "app-generate.png"), full_page=True)

            status = run(bad_clip)
            assert status == cli_error
            page.screenshot(path=str(shots / "app-bad-upload.png"), full_page=True)

            status = run(clip)
            assert "s of audio" in status, status
        finally:
            browser.close()
    assert not outside, f"the page loaded from elsewhere than the app: {outside[:5]}"


def untrained_checkpoint(recipe_name: str, path: Path) -> Path:
    """A checkpoint of a freshly built model: enough to see which inputs the app asks for."""
    from vssflow.core.checkpoint import save_checkpoint
    from vssflow.core.phonemes import PhonemeTokenizer
    from vssflow.registry.assemble import build
    from vssflow.registry.recipe import load_recipe
    from vssflow.training import run_metadata

    recipe = load_recipe(recipe_name)
    return save_checkpoint(path, build(recipe).model.state_dict(), run_metadata(recipe, PhonemeTokenizer()),
                           recipe_yaml=recipe.to_yaml(), include_rng=False)


def test_the_page_asks_only_for_what_each_checkpoint_takes(tmp_path, clip, micro_checkpoint):
    from vssflow.app import App, Fields, Settings, build_ui
    from vssflow.core.errors import ContractError

    speech = str(untrained_checkpoint("unified-tiny", tmp_path / "unified"))
    captioned = str(untrained_checkpoint("v2s-tiny-caption", tmp_path / "caption"))
    app = App([speech, captioned, str(micro_checkpoint)], out=tmp_path / "runs", device="cpu")
    assert app.fields(speech) == Fields(transcript=True, speech_span=True, speaker=True)
    assert app.fields(captioned) == Fields(caption=True, negative_prompt=True)
    assert app.fields(str(micro_checkpoint)) == Fields()
    assert app.fields(speech) & app.fields(captioned) == Fields()
    # the Generate tab starts on the first checkpoint: its fields shown, the others hidden
    shown = {c["props"].get("elem_id"): c["props"].get("visible", True) for c in build_ui(app).config["components"]}
    assert shown["transcript"] and shown["speech-span"] and shown["speaker"]
    assert not shown["caption"] and not shown["negative-prompt"]
    # what a checkpoint cannot take is refused with the CLI's message, never dropped
    with pytest.raises(ContractError, match="has no caption condition; drop --caption"):
        app.generate(speech, clip, caption="two drums")
    with pytest.raises(ContractError, match="not every compared checkpoint takes it"):
        app.compare(clip, (speech, Settings()), (captioned, Settings()), caption="two drums")
    with pytest.raises(ContractError, match="not served by this app"):
        app.generate(str(tmp_path / "elsewhere"), clip)
    with pytest.raises(ContractError, match="dopri5 chooses its own steps"):
        app.generate(str(micro_checkpoint), clip, settings=Settings("dopri5", steps=4))
    assert not (tmp_path / "runs").exists()  # refused before any folder was made
    # two checkpoints side by side: one run folder, the same video and seed, each its own model's sound
    a, b = app.compare(clip, (str(micro_checkpoint), Settings(steps=1, seed=4)), (captioned, Settings(steps=1, seed=4)))
    assert a.folder.parent == b.folder.parent and (a.folder.name, b.folder.name) == ("a", "b")
    assert sf.info(a.wav).frames == sf.info(b.wav).frames == round(probe(clip).duration_s * 16000)
    assert json.loads((b.folder / "generated.jsonl").read_text())["checkpoint"] == str(Path(captioned).resolve())
    # a batch reports each finished clip (the page's progress bar)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(f'{{"id": "a", "task": "v2s", "video": "{clip}"}}\n{{"id": "b", "task": "v2s", "video": "{clip}"}}\n')
    ticks = []
    done = app.batch(str(micro_checkpoint), manifest, settings=Settings(steps=1), on_clip=lambda *t: ticks.append(t))
    assert ticks == [(0, 2), (1, 2), (2, 2)] and [row[0] for row in done.rows] == ["a", "b"]


def test_a_port_in_use_is_one_line():
    import socket

    from vssflow.app import check_port, free_port
    from vssflow.core.errors import VssflowError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port("127.0.0.1")))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(VssflowError, match=f"cannot listen on 127.0.0.1:{port} .*pass --port with a free port"):
            check_port("127.0.0.1", port)


def test_app_without_gradio_says_how_to_install_it():
    code = ("import sys; sys.modules['gradio'] = None\n"
            "from vssflow.cli.main import main\nsys.exit(main(['app', '--checkpoint', 'nowhere']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "vssflow app: error: the app needs gradio: pip install 'vssflow[app]'"
