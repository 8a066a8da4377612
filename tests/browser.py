"""The system's Chromium, for the tests that render pages in a real browser (they skip without one)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.conftest import ROOT

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """The path of an installed Chromium (Debian: apt-get install chromium), or None."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


BROWSER = find_chromium()
SKIP_REASON = "no chromium installed (apt-get install chromium)"


def artifact_dir() -> Path:
    """Where browser tests keep screenshots: $VSSFLOW_TEST_ARTIFACTS, else build/test-artifacts in the checkout."""
    folder = Path(os.environ.get("VSSFLOW_TEST_ARTIFACTS") or ROOT / "build" / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
