"""The policy gate: the hospital's Rego policies, evaluated on one input document.

The bundle (every ``*.rego`` except ``*_test.rego``, and ``data.json``) is read once,
when the gate is built, into an immutable ``PolicyBundle``: editing the directory while
jobs run changes nothing until the edge restarts, and the bundle digest in each receipt
names exactly the policy that decided. A directory that is missing, empty or unreadable
does not stop the edge from starting; it makes every job's policy gate refuse, with the
reason in the job's record (S4).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jupyter_rapha.protocol.policy import (
    DATA_FILE, DEFAULT_TIMEOUT_S, Decision, EngineLoader, PolicyBundle, evaluate, load_engine,
)

from .pipeline import GateContext, GateResult

MAX_POLICY_BYTES = 4 * 1024 * 1024


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
        self.bundle: PolicyBundle | None = None
        self.load_error: str | None = None
        try:
            self.bundle = load_bundle(Path(policy_dir))
        except PolicyLoadError as exc:
            self.load_error = str(exc)

    def check(self, ctx: GateContext) -> GateResult:
        if self.bundle is None:
            reason = self.load_error or "no policy bundle"
            return GateResult(self.name, "deny", {"fault": reason}, (reason,))
        decision = evaluate(self.bundle, build_policy_input(ctx), timeout_s=self.timeout_s, engine=self.engine)
        return self._result(decision)

    def _result(self, decision: Decision) -> GateResult:
        assert self.bundle is not None
        evidence = {**self.bundle.evidence(), "decision": decision.to_dict()}
        if decision.allowed:
            return GateResult(self.name, "pass", evidence, obligations=dict(decision.obligations))
        return GateResult(self.name, "deny", evidence, decision.deny or ("policy denied the job",))
