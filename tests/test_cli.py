"""CLI: fast start (no heavy imports for --help or plugin listing), one-line errors."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import run_cli

HEAVY = ("torch", "timm", "diffusers", "av", "cv2", "triton", "torchaudio", "gradio")


def _modules_after(code: str) -> list[str]:
    probe = code + f"\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_help_imports_nothing_heavy():
    loaded = _modules_after("from vssflow.cli.main import build_parser\nbuild_parser().format_help()")
    assert loaded == [], f"`vssflow --help` imports {loaded}; import them inside the command instead"


def test_listing_plugins_does_not_import_media_or_model_libraries():
    loaded = _modules_after("import vssflow.registry as r\nr.list_components()")
    assert not {"timm", "diffusers", "av", "cv2", "triton"} & set(loaded), loaded


def test_help_lists_every_command():
    out = run_cli("--help")
    assert out.returncode == 0
    for command in ("demo", "train", "generate", "app", "data", "features", "recipe", "plugins", "train-vocoder"):
        assert command in out.stdout, f"{command} missing from --help"


def test_user_error_is_one_line_with_exit_2(tmp_path):
    out = run_cli("recipe", "check", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2
    assert out.stderr.strip().startswith("vssflow recipe check: error: recipe not found")
    assert "Traceback" not in out.stderr


def test_unknown_command_is_an_argparse_error():
    out = run_cli("frobnicate")
    assert out.returncode == 2 and "invalid choice" in out.stderr
