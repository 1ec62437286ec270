"""The cohort size a policy decides on: records that are usable and consented.

The policy enforces a minimum cohort (small cohorts re-identify), so the size it sees
must be the size after the opt-out list, never before. Indexing a large dataset or a
PACS is costly, so sizes are cached per dataset definition and opt-out file state for a
short while; a changed definition or opt-out file is indexed again at once. A folder's
index is also kept on the edge's disk (``index_cache.py``), so indexing it again reads
only the files added or changed since.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from collections.abc import Callable

from .consent import OptOutList
from .record_store import dataset_cache_dir
from .registry import Dataset
from .sources import open_source

CACHE_SECONDS = 300.0


class CohortSizes:
    def __init__(self, key: bytes, resolve: Callable[[Dataset], Path],
                 resolve_opt_out: Callable[[Dataset], Path | None], ttl: float = CACHE_SECONDS,
                 cache_root: Path | None = None) -> None:
        self._key, self._resolve, self._resolve_opt_out, self._ttl = key, resolve, resolve_opt_out, ttl
        self._cache_root = cache_root  # the edge's state/cache: a folder's index is kept there
        self._cache: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def size(self, dataset: Dataset) -> int:
        stamp = self._stamp(dataset)
        with self._lock:
            cached = self._cache.get(stamp)
            if cached is not None and time.monotonic() - cached[0] < self._ttl:
                return cached[1]
        consent = OptOutList.from_file(self._resolve_opt_out(dataset))
        location = self._resolve(dataset)
        cache_dir = dataset_cache_dir(self._cache_root, dataset, location) if self._cache_root is not None else None
        source = open_source(dataset, location, list(dataset.fields), self._key, consent, cache_dir=cache_dir)
        size = len(source.index().records)
        with self._lock:
            self._cache[stamp] = (time.monotonic(), size)
        return size

    def _stamp(self, dataset: Dataset) -> str:
        parts = [json.dumps(dataset.to_dict(), sort_keys=True, default=str)]
        for path in (self._resolve_opt_out(dataset), None if dataset.source == "dicomweb" else self._resolve(dataset)):
            if path is not None:
                try:
                    info = path.stat()
                    parts.append(f"{path}:{info.st_mtime_ns}:{info.st_size}")
                except OSError:
                    parts.append(f"{path}:missing")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()
