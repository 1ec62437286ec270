"""The policy gate: the hospital's Rego policies, evaluated on one input document.

The bundle (every ``*.rego`` except ``*_test.rego``, and ``data.json``) is read when
the gate is built into an immutable ``PolicyBundle``, and the bundle digest in each
receipt names exactly the policy that decided. The rules change only with a restart.
``data.json`` (who may use which dataset) is what a hospital edits day to day, so it is
reloaded when it changes (checked at each job): the new text must be a JSON object, and
a broken edit keeps the previous policy in force and is logged, never a gap in which no
policy or a half-written one decides. A directory that is missing, empty or unreadable
does not stop the edge from starting; it makes every job's policy gate refuse, with the
reason in the job's record (S4).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from jupyter_rapha.protocol.private import job_mode
from jupyter_rapha.protocol.policy import (
    DATA_FILE, DEFAULT_TIMEOUT_S, Decision, EngineLoader, PolicyBundle, evaluate, load_engine,
)

from .pipeline import GateContext, GateResult

MAX_POLICY_BYTES = 4 * 1024 * 1024
log = logging.getLogger(__name__)


class PolicyLoadError(Exception):
    """The policy directory cannot give a bundle; the message is safe to record."""


def load_bundle(policy_dir: Path) -> PolicyBundle:
    if not policy_dir.is_dir():
        raise PolicyLoadError(f"policy directory {policy_dir.name!r} does not exist")
    paths = sorted(p for p in policy_dir.rglob("*.rego") if p.is_file() and not p.name.endswith("_test.rego"))
    if not paths:
        raise PolicyLoadError(f"policy directory {policy_dir.name!r} holds no .rego policies")
    modules = {p.relative_to(policy_dir).as_posix(): _read(p) for p in paths}
    data_path = policy_dir / DATA_FILE
    data = _read(data_path) if data_path.is_file() else None
    return PolicyBundle.from_texts(modules, data)


def _read(path: Path) -> str:
    try:
        raw = path.read_bytes()
        if len(raw) > MAX_POLICY_BYTES:
            raise PolicyLoadError(f"policy file {path.name} is larger than {MAX_POLICY_BYTES} bytes")
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyLoadError(f"policy file {path.name} cannot be read ({type(exc).__name__})") from exc


def build_policy_input(ctx: GateContext) -> dict[str, Any]:
    """The one document the policy sees. The code itself is left out: the policy judges
    the scan report of it, and the cell may hold text no policy log should keep."""
    job = ctx.spec.to_dict()
    job.pop("code", None)
    for item in job.get("includes", []):
        item.pop("code", None)  # judged by its scan, like the cell
    job["mode"] = job_mode(ctx.spec.code)  # read from the signed cell: rapha.fit_private is DP mode
    job["processes"] = ctx.spec.processes  # always present, so a rule can compare it
    dataset, researcher, settings = ctx.dataset, ctx.researcher, ctx.settings
    return {
        "job": job,
        "scan": _evidence(ctx, "scan"),
        "attestation": _evidence(ctx, "attestation"),
        "airgap": _evidence(ctx, "airgap"),
        "dataset": None if dataset is None else {
            "name": dataset.name, "fields": sorted(dataset.fields), "sensitivity": dataset.sensitivity,
            "cohort_size": ctx.extra.get("cohort_size"), "max_records": dataset.max_records,
            "price": dataset.price_per_record,
        },
        "researcher": None if researcher is None else {
            "name": researcher.name, "key_id": researcher.key_id,
            "roles": list(researcher.roles), "purposes": list(researcher.purposes),
        },
        "edge": {"demo": bool(getattr(settings, "demo", False)), "unsafe": list(getattr(settings, "unsafe", ()))},
    }


def _evidence(ctx: GateContext, name: str) -> dict[str, Any] | None:
    result = ctx.results.get(name)
    # An absent or denying gate has no evidence the policy may rely on.
    if result is None or result.outcome not in ("pass", "unsafe"):
        return None
    return dict(result.evidence)


class PolicyGate:
    name = "policy"

    def __init__(self, policy_dir: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 engine: EngineLoader = load_engine) -> None:
        self.timeout_s = timeout_s
        self.engine = engine
        self.policy_dir = Path(policy_dir)
        self._data_stamp = _stamp(self.policy_dir / DATA_FILE)
        self._lock = threading.Lock()
        self._bundle: PolicyBundle | None = None
        self.load_error: str | None = None
        try:
            self._bundle = load_bundle(self.policy_dir)
        except PolicyLoadError as exc:
            self.load_error = str(exc)

    @property
    def bundle(self) -> PolicyBundle | None:
        """The bundle in force, after taking up a changed ``data.json``."""
        self._reload_data()
        return self._bundle

    @bundle.setter
    def bundle(self, bundle: PolicyBundle | None) -> None:
        self._bundle = bundle

    def _reload_data(self) -> None:
        path = self.policy_dir / DATA_FILE
        stamp = _stamp(path)
        if stamp == self._data_stamp:
            return
        with self._lock:
            if stamp == self._data_stamp:
                return
            self._data_stamp = stamp
            try:
                data = _read(path) if path.is_file() else None
                if data is not None and not isinstance(json.loads(data), dict):
                    raise ValueError("not a JSON object")
                fresh = load_bundle(self.policy_dir) if self._bundle is None else \
                    PolicyBundle.from_texts(dict(self._bundle.modules), data)
            except (PolicyLoadError, ValueError) as exc:
                log.error("policies/%s changed but cannot be used (%s); the previous policy stays in force",
                          DATA_FILE, exc)
                return
            self._bundle, self.load_error = fresh, None
            log.info("policies/%s reloaded; policy bundle %s", DATA_FILE, fresh.digest[:16])

    def check(self, ctx: GateContext) -> GateResult:
        bundle = self.bundle  # one bundle for the decision and its evidence
        if bundle is None:
            reason = self.load_error or "no policy bundle"
            return GateResult(self.name, "deny", {"fault": reason}, (reason,))
        decision = evaluate(bundle, build_policy_input(ctx), timeout_s=self.timeout_s, engine=self.engine)
        return self._result(bundle, decision)

    def _result(self, bundle: PolicyBundle, decision: Decision) -> GateResult:
        evidence = {**bundle.evidence(), "decision": decision.to_dict()}
        if decision.allowed:
            return GateResult(self.name, "pass", evidence, obligations=dict(decision.obligations))
        return GateResult(self.name, "deny", evidence, decision.deny or ("policy denied the job",))


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is edited, even by an editor that writes a new file."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size, info.st_ino
