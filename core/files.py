"""Writing files safely: the user's umask, durable renames, one-line errors naming the output, safe names.

Everything vssflow writes goes to a temporary name in the destination folder and is renamed into place, so a
reader sees a file completely or not at all. A write that fails (read-only folder, full disk, a name the file
system refuses) becomes an `OutputError` naming the output, never the input it was made from.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from pathlib import Path

from .errors import VssflowError

_UMASK_LOCK = threading.Lock()
MAX_NAME_BYTES = 200


class OutputError(VssflowError):
    """An output cannot be written: the folder is read-only or full, or the path is not usable."""


def current_umask() -> int:
    """The process's umask (read without changing it for longer than two system calls)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike, directory: bool | None = None) -> None:
    """Give `path` the mode a plain open()/mkdir() would: 0666 (files) or 0777 (folders) minus the umask.

    tempfile.mkdtemp (0700) and some writers (0600) are private by design; outputs colleagues should read
    are not."""
    path = Path(path)
    if directory is None:
        directory = path.is_dir()
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def fsync_dir(path: str | os.PathLike) -> None:
    """Make renames inside folder `path` durable (best effort where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_FIXES = {
    errno.ENOSPC: "free some space or choose another output folder",
    errno.EDQUOT: "free some space (quota) or choose another output folder",
    errno.EFBIG: "the file system refuses a file this large; choose another output folder",
    errno.EROFS: "the file system is read-only; choose a writable output folder",
    errno.EACCES: "choose a folder you can write to",
    errno.EPERM: "choose a folder you can write to",
    errno.ENAMETOOLONG: "use a shorter name",
    errno.ENOTDIR: "a path component is a file, not a folder; choose another output folder",
    errno.EEXIST: "a file of that name is in the way; remove it or choose another output folder",
}


def write_error(path: str | os.PathLike, exc: BaseException, what: str = "write") -> OutputError:
    """An OutputError for an OSError raised while writing `path`: the output, the reason and the fix."""
    code = getattr(exc, "errno", None)
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    fix = _FIXES.get(code, "check the output folder")
    return OutputError(f"{path}: cannot {what} ({reason}); {fix}")


def ensure_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create folder `path` (and parents) or fail in one line: a file in the way, read-only, full."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: {flag} names an existing file, not a folder; choose a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(path, exc, "create the folder") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot write (permission denied); choose a folder you can write to")
    return path


_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


def file_name_problem(name: str) -> str | None:
    """Why `name` cannot be used as a file name stem (None when it can): separators, '..', hidden, too long."""
    if not name:
        return "it is empty"
    if _UNSAFE.search(name):
        return "it contains a path separator or a control character"
    if name in (".", "..") or name.startswith("."):
        return "it starts with '.'"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"it is longer than {MAX_NAME_BYTES} bytes"
    return None


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line with a single write on an O_APPEND descriptor, then fsync: a reader sees the whole line
    or (after a crash mid-write) a last line without its newline, which it ignores."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(errno.ENOSPC, "short write")
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a small text file under a temporary name in its folder, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from None
    return path
