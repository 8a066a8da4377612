"""Decoded video frames of recently read clips, kept in memory across training steps.

A small training set is drawn many times (the demo draws each of its ~200 clips about 36 times), and
decoding a clip's video for each of its video conditions costs more than the rest of loading it. The cache
keeps each request's frames as decoded (uint8, a quarter of the float frames) and converts them exactly as
`read_video` does, so a cached batch is bit-identical to a decoded one.

An entry is keyed by the file (resolved path, size, modification time in ns) and the request (frame rate,
size, window, fit): a file rewritten in place is decoded again and its old entries are dropped. The cache is
bounded in bytes and drops the least recently used entries first; each data-loading process holds its own.
"""

from __future__ import annotations

import os
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

from .media import DecodedVideo, VideoFrames, VideoRequest, decode_video

FileKey = tuple[str, int, int]  # resolved path, size in bytes, modification time in ns


class DecodedVideoCache:
    """`read_videos` with the decoded frames of recent (file, request) pairs kept, up to `max_mb` MiB."""

    def __init__(self, max_mb: float = 0) -> None:
        if max_mb < 0:
            raise ValueError(f"max_mb must be >= 0, got {max_mb}")
        self.max_bytes = int(max_mb * 2**20)
        self._entries: OrderedDict[tuple[FileKey, VideoRequest], DecodedVideo] = OrderedDict()
        self._files: dict[str, FileKey] = {}  # resolved path -> the key its entries were decoded under
        self._per_file: Counter[FileKey] = Counter()  # entries of each file key
        self.nbytes = 0
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __getstate__(self) -> dict[str, Any]:
        # a loader process starts with an empty cache of the same budget (not a copy of this one's frames)
        return {**self.__dict__, "_entries": OrderedDict(), "_files": {}, "_per_file": Counter(), "nbytes": 0,
                "hits": 0, "misses": 0}

    def read(self, path: str | os.PathLike, requests: list[VideoRequest]) -> list[VideoFrames]:
        """Each request's frames (as `read_video` returns them); the ones not cached decoded in one pass."""
        if self.max_bytes <= 0:
            return [d.frames() for d in decode_video(path, requests)]
        try:
            resolved = Path(path).resolve()
            st = resolved.stat()
        except OSError:
            return [d.frames() for d in decode_video(path, requests)]  # decode_video names the error
        file = (str(resolved), st.st_size, st.st_mtime_ns)
        if self._files.get(file[0], file) != file:  # the file changed: its frames are stale
            self._drop_file(self._files[file[0]])
        found = {r: self._entries.get((file, r)) for r in requests}
        missing = list(dict.fromkeys(r for r, d in found.items() if d is None))
        self.misses += len(missing)
        self.hits += len(requests) - len(missing)
        for request in found:
            if found[request] is not None:
                self._entries.move_to_end((file, request))
        if missing:
            for request, decoded in zip(missing, decode_video(path, missing), strict=True):
                found[request] = decoded
                self._put(file, request, decoded)
        return [found[r].frames() for r in requests]

    def _put(self, file: FileKey, request: VideoRequest, decoded: DecodedVideo) -> None:
        if decoded.nbytes > self.max_bytes:
            return  # larger than the whole budget: served, not kept
        if (file, request) in self._entries:  # the same request twice in one read
            return
        self._entries[(file, request)] = decoded
        self._files[file[0]] = file
        self._per_file[file] += 1
        self.nbytes += decoded.nbytes
        while self.nbytes > self.max_bytes:
            (old_file, _), old = self._entries.popitem(last=False)
            self.nbytes -= old.nbytes
            self._per_file[old_file] -= 1
            if not self._per_file[old_file]:
                del self._per_file[old_file]
                self._files.pop(old_file[0], None)

    def _drop_file(self, file: FileKey) -> None:
        for key in [k for k in self._entries if k[0] == file]:
            self.nbytes -= self._entries.pop(key).nbytes
        self._per_file.pop(file, None)
        self._files.pop(file[0], None)
