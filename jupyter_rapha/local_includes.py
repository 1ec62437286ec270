"""``--include`` in a ``--local`` dry run: the included files importable as at the edge.

The edge writes each included file under its own relative path into one folder and puts
that folder first on the job's import path (``edge_kernel/artifacts.py`` stage_includes,
``inside/job_main.py``). A dry run does the same with the very texts that were read for
the job (``inputs.read_includes``), so ``--include lib/helpers.py`` imports as ``helpers``
wherever the file lies, and a file of the same name beside the notebook does not shadow
it: what the dry run imports is what the edge would run.

The modules are dropped from ``sys.modules`` before the cell runs (a copy imported by an
earlier run, or from the notebook's folder, would otherwise be used) and again after it
(the next run reads the files again, as a new job would), and the folder leaves the
import path.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .protocol.job_inputs import IncludedFile


@contextmanager
def included_modules(includes: tuple[IncludedFile, ...]) -> Iterator[str | None]:
    """The included files staged in a temporary folder, first on ``sys.path``, for the
    duration of the block; yields the folder (None when nothing is included)."""
    if not includes:
        yield None
        return
    tops = {item.top_module for item in includes}
    with tempfile.TemporaryDirectory(prefix="rapha-include-") as folder:
        _write(includes, Path(folder))
        _forget(tops)
        sys.path.insert(0, folder)
        importlib.invalidate_caches()  # the folder is new: no finder has seen it yet
        try:
            yield folder
        finally:
            if folder in sys.path:
                sys.path.remove(folder)
            _forget(tops)


def _write(includes: tuple[IncludedFile, ...], root: Path) -> None:
    for item in includes:
        target = root / item.path  # checked when read: relative names only, no '..'
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(item.code, "utf-8")


def _forget(tops: set[str]) -> None:
    for name in [n for n in sys.modules if n in tops or n.split(".", 1)[0] in tops]:
        del sys.modules[name]
