"""A registry file (researchers.json, datasets.json) loaded once, loaded again when it changes.

Every request looks its researcher up and every catalog lists the datasets; reading and
parsing the JSON each time was a large share of a read-only request's cost. The parse is
reused only while the file's identity and change times are exactly those seen when it
was read (inode, device, size, mtime and ctime in nanoseconds), checked with one stat()
per call, so an edit (a researcher removed, a dataset changed) is in force on the very
next request, as before.

Timestamps tick coarsely (a few ms), so an edit in the same tick as the read could keep
every stat field. A parse is therefore kept only when the file's ctime was already
older than ``STABLE_SECONDS`` when it was read: any later change then moves ctime past
it. ctime, unlike mtime, cannot be set back by a tool that preserves times.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Generic, TypeVar
from collections.abc import Callable

T = TypeVar("T")
STABLE_SECONDS = 2.0


class ParsedFile(Generic[T]):
    """``load`` reads and checks ``path`` (its errors are the registry's own, unchanged);
    its result is reused while the file is provably the one it read."""

    def __init__(self, path: Path, load: Callable[[], T]) -> None:
        self.path = path
        self._load = load
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, ...], T] | None = None  # (what the stat saw, the value)

    def get(self) -> T:
        """The loaded file. Errors propagate and are never cached; a missing file is
        whatever ``load`` makes of it, never cached either."""
        try:
            info = os.stat(self.path)
        except OSError:
            return self._load()
        seen = (info.st_ino, info.st_dev, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        with self._lock:
            if self._cached is not None and self._cached[0] == seen:
                return self._cached[1]
        value = self._load()
        if time.time_ns() - info.st_ctime_ns > STABLE_SECONDS * 1e9:
            with self._lock:
                # Loaded after the stat: the text is at least as new as ``seen``; if it
                # is newer, the next stat differs and the file is loaded again.
                self._cached = seen, value
        return value
