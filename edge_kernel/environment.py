"""The site's environment, measured: what the job interpreter can import, for the catalog.

Measured by running the very interpreter jobs run with (``sandbox.python``, else the
edge's own), with the job's clean environment and flags, so the listing is what a cell
meets and not what the edge process happens to have on its path. Nothing a researcher
sends goes into it. Measured once per interpreter and kept (the edge's start begins it):
installing a package means restarting the edge, as for any other change to the sandbox.

What is listed: every installed distribution with its version, the top-level import
names each provides, the standard library's module names and the Python version. A
hospital that does not want to advertise every version sets ``sandbox.listed_packages``
to the distributions it will name; the key ones (``KEY_PACKAGES``: torch, numpy, monai,
pydicom, safetensors) are listed whenever installed, and the listing then says it is not
complete, so a notebook notes, rather than refuses, an import it does not find there.
"""

from __future__ import annotations

import functools
import json
import logging
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jupyter_rapha.protocol.environment import KEY_PACKAGES, Environment, canonical_name, parse_environment
from jupyter_rapha.protocol.errors import BadInput, SandboxFault

log = logging.getLogger(__name__)

PROBE_SECONDS = 60
# Runs inside the job interpreter: standard library only, one JSON line out.
PROBE = """
import importlib.metadata as m, json, platform, sys
packages = {}
for dist in m.distributions():
    name = dist.metadata["Name"]
    if name and name not in packages:  # the first on sys.path is the one imported
        packages[name] = dist.version
modules = {name: sorted(set(dists)) for name, dists in m.packages_distributions().items()
           if name.isidentifier() and not name.startswith("__")}
print(json.dumps({"python": platform.python_version(), "implementation": sys.implementation.name,
                  "packages": packages, "modules": modules, "stdlib": sorted(sys.stdlib_module_names)}))
"""


def job_python(settings: Any) -> str:
    return str(settings.sandbox.python or sys.executable)


@functools.lru_cache(maxsize=8)
def measure(python: str) -> dict[str, Any] | None:
    """Everything ``python`` imports, as the probe reports it; None (logged) when the
    interpreter does not start or answers nonsense: the catalog then lists nothing, and
    notebooks check no imports (the edge still runs or refuses the job as before)."""
    from .sandbox.runner import job_command_flags, job_env

    with tempfile.TemporaryDirectory(prefix="rapha-env-") as home:
        try:
            found = subprocess.run([python, *job_command_flags(), "-c", PROBE], capture_output=True, text=True,
                                   env=job_env(Path(home), python), cwd=home, timeout=PROBE_SECONDS, check=False)
        except (OSError, subprocess.TimeoutExpired, SandboxFault) as exc:
            log.error("the job interpreter %s could not list its packages: %s", python, exc)
            return None
    try:
        raw = json.loads(found.stdout)
        parse_environment({**raw, "complete": True})
    except (ValueError, BadInput) as exc:
        log.error("the job interpreter %s listed its packages unreadably (exit %s): %s %s", python,
                  found.returncode, exc, found.stderr[-500:])
        return None
    return dict(raw)


def listing(raw: dict[str, Any], listed: Iterable[str] = ()) -> dict[str, Any]:
    """The catalog's ``environment`` section: all of ``raw``, or with ``listed``
    (distribution names) only those and the key packages, marked not complete."""
    wanted = {canonical_name(name) for name in listed}
    packages: dict[str, str] = dict(raw["packages"])
    if wanted:
        wanted |= {canonical_name(name) for name in KEY_PACKAGES}
        packages = {name: version for name, version in packages.items() if canonical_name(name) in wanted}
    names = set(packages)
    modules = {module: [d for d in dists if d in names] for module, dists in raw["modules"].items()}
    return Environment(python=raw["python"], implementation=raw["implementation"], complete=not wanted,
                       packages=packages, modules={m: tuple(d) for m, d in modules.items() if d},
                       stdlib=frozenset(raw["stdlib"])).to_dict()


class SiteEnvironment:
    """The edge's listing, measured once: ``start`` (``Edge.start``, at serve start) begins
    measuring beside the start, and a catalog request asked meanwhile waits for it."""

    def __init__(self, settings: Any) -> None:
        self.python = job_python(settings)
        self.listed = tuple(settings.sandbox.listed_packages)
        self._lock = threading.Lock()
        self._listing: dict[str, Any] | None = None
        self._measured = False

    def start(self) -> None:
        threading.Thread(target=self.listing, name="rapha-environment", daemon=True).start()

    def listing(self) -> dict[str, Any] | None:
        """The catalog's section (never to be changed by a caller: it is the one kept)."""
        with self._lock:  # one probe at a time; every later call reads what it found
            if not self._measured:
                raw = measure(self.python)
                self._listing = listing(raw, self.listed) if raw is not None else None
                self._measured = True
            return self._listing
