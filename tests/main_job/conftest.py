"""A tiny synthetic set and a micro recipe shared by the process-level tests of train and generate."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
MICRO = HERE / "micro-v2s.yaml"


def vssflow(*args: str, cwd: Path | None = None, timeout: int = 600, **popen: object) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess."""
    env = {k: v for k, v in os.environ.items() if k != "VSSFLOW_LOAD_PLUGINS"}
    return subprocess.run([sys.executable, "-m", "vssflow", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout, **popen)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """Eight 1-second synthetic V2S clips (generated once per session)."""
    from vssflow.plugins.datasets.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, SynthConfig(clips=8, seconds=1.0, families=("v2s",), size=48))
    return root


def data_args(root: Path) -> list[str]:
    """--set arguments pointing the micro recipe at the synthetic set."""
    return ["--set", "data.name=synthetic-av", "--set", f"data.params.root={root}", "--set", "data.params.clips=8",
            "--set", "data.params.seconds=1.0", "--set", "data.params.families=[v2s]",
            "--set", "data.params.size=48", "--set", "data.params.split=all"]


def train_two_steps(tmp_path_factory, recipe: Path, root: Path, name: str) -> Path:
    """`recipe` trained for two steps on the synthetic set at `root`; its last checkpoint."""
    out = tmp_path_factory.mktemp(name)
    done = vssflow("train", str(recipe), "--out", str(out), "--no-progress", "--set", "train.steps=2",
                   *data_args(root))
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "checkpoints" / "last"


@pytest.fixture(scope="session")
def micro_checkpoint(tmp_path_factory, synth_root) -> Path:
    """A micro model trained for two steps."""
    return train_two_steps(tmp_path_factory, MICRO, synth_root, "micro-run")
