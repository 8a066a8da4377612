"""One trainer per run folder: an exclusive advisory lock (flock) on RUN/.lock, held for the whole run.

The kernel drops the lock when its holder exits, however it exits (kill -9 included), so a stale lock file
never blocks: only a live holder does. The file records the holder's host and pid for the refusal message.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from .errors import VssflowError
from .files import write_error

LOCK_NAME = ".lock"


class RunInUseError(VssflowError):
    """Another live trainer holds the run folder."""


class RunLock:
    """`with RunLock(run_dir):` or acquire()/release(); raises RunInUseError naming the holder."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock without waiting."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise write_error(self.path, exc, "create the run lock") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunInUseError(
                f"{self.path.parent}: another trainer is using this run folder ({holder}); "
                "wait for it to finish, stop it, or choose another --out"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise write_error(self.path, exc, "lock the run folder") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"host {socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the lock holds without the note
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "holder unknown"
