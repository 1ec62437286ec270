"""The hospital-edited files beside ``edge.toml`` (``researchers.json``, ``datasets.json``):
how they are written, and what a broken one means.

A broken file is the hospital's fault, not the researcher's. The administrator needs the
file and the cause; the researcher must learn neither (a path names the hospital's
layout), so ``ConfigFault`` carries a generic message for HTTP answers and keeps the
detail for the edge log and the ``rapha-edge`` command line.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from jupyter_rapha.protocol.errors import Fault

log = logging.getLogger(__name__)
# The command line prints the fault itself; without a configured handler (every command
# but serve) the record must not be printed a second time by logging's last resort.
log.addHandler(logging.NullHandler())

PUBLIC_MESSAGE = "the edge's configuration cannot be read; the hospital's administrator must fix it"


class ConfigFault(Fault):
    """A configuration file is malformed. ``message`` is safe for a researcher; ``detail``
    (file and cause) is for the administrator only."""

    def __init__(self, detail: str, *, hint: str = "") -> None:
        super().__init__(PUBLIC_MESSAGE, hint="details are in the edge log")
        self.detail = detail
        self.admin_hint = hint

    def admin_diagnostics(self) -> str:
        return f"{self.detail} ({self.admin_hint})" if self.admin_hint else self.detail


def config_fault(path: Path, cause: str, *, hint: str = "") -> ConfigFault:
    """The fault for a broken ``path``, logged once here so that a request that meets it
    leaves the cause in the edge log while the caller gets only the generic message."""
    fault = ConfigFault(f"{path} is malformed: {cause}", hint=hint)
    log.error("configuration fault: %s", fault.admin_diagnostics())
    return fault


def write_json_atomically(path: Path, document: Any) -> None:
    """Write beside, fsync, rename: a crash or a second writer never leaves half a file,
    and the file keeps its mode (a registry may be made readable to the edge's group only)."""
    data = (json.dumps(document, indent=2) + "\n").encode("utf-8")
    staging = path.with_name(f".{path.name}.{os.getpid()}.partial")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)
