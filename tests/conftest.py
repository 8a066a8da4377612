"""Shared fixtures: fake installed plugin distributions and the path to the built-in recipes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"


def make_plugin_dist(root: Path, dist: str, module: str, source: str, entry_name: str | None = None) -> Path:
    """Write an importable module plus a dist-info declaring it under the `vssflow` entry-point group."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-0.3.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3.1\n")
    (info / "entry_points.txt").write_text(f"[vssflow]\n{entry_name or dist} = {module}\n")
    return root


def run_cli(*args: str, env_extra: dict[str, str] | None = None, pythonpath: Path | None = None, cwd=None):
    """Run `python -m vssflow ARGS` in a subprocess; returns CompletedProcess with text output."""
    env = dict(os.environ)
    env.pop("VSSFLOW_LOAD_PLUGINS", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "vssflow", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


@pytest.fixture
def plugin_dist(tmp_path):
    """Factory fixture: plugin_dist(dist, module, source) -> directory to put on PYTHONPATH."""

    def make(dist: str, module: str, source: str, entry_name: str | None = None) -> Path:
        return make_plugin_dist(tmp_path / "site", dist, module, source, entry_name)

    return make
