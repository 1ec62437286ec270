"""``rapha-edge compliance``: the compliance map, checked against this edge's settings.

The map (``policies/compliance.json``, in the repository and copied nowhere) is data: each
control names its framework and reference (UK GDPR, NHS DSPT, Caldicott, HIPAA), the
mechanism, the files that implement it, the tests that prove it, and the live check run
here. A control is ``met`` when its check finds this edge's settings, policy data, keys and
audit log as the mechanism needs them; ``not met`` with the setting that weakens it; ``not
applicable`` for an organisational control the hospital keeps outside the edge.

Read only, from the config directory alone (as ``rapha-edge status``): nothing here
changes state, and a part that cannot be read makes the controls that need it ``not met``
(fail closed), never ``met``.
"""

from __future__ import annotations

import html
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, TypeGuard

from jupyter_rapha.protocol.errors import RaphaError

from .config_files import ConfigFault
from .settings import Settings

MAP_FILE = Path(__file__).resolve().parent.parent / "policies" / "compliance.json"
MET, NOT_MET, NOT_APPLICABLE = "met", "not met", "not applicable"
# The thresholds a setting must keep for its control to count as met. The shipped policy
# data meets each; a hospital that loosens one past them gets "not met" with the figure.
MIA_AUC_CEILING = 0.7  # membership inference AUC a release may reach (0.5: no better than chance)
MIN_COHORT_FLOOR = 10  # small-number suppression in published health statistics starts below 10
HARDWARE_BACKENDS = ("auto", "tdx", "sgx")


@dataclass(frozen=True)
class Finding:
    status: str  # MET, NOT_MET or NOT_APPLICABLE
    why: str


def met(why: str) -> Finding:
    return Finding(MET, why)


def not_met(why: str) -> Finding:
    return Finding(NOT_MET, why)


def _object(value: Any) -> dict[str, Any]:
    """A JSON object of the policy data, or {} for anything else (whose check then fails)."""
    return value if isinstance(value, dict) else {}


class EdgeView:
    """What the checks read of one edge, each part read once and on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def hospital(self) -> dict[str, Any] | None:
        """``policies/data.json``'s ``hospital`` object; None when it cannot be read."""
        from jupyter_rapha.protocol.policy import DATA_FILE

        try:
            hospital = json.loads((self.settings.policies_dir / DATA_FILE).read_text("utf-8"))["hospital"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return hospital if isinstance(hospital, dict) else None

    def section(self, name: str) -> dict[str, Any]:
        return _object((self.hospital or {}).get(name))

    @cached_property
    def registered_datasets(self) -> dict[str, Any] | None:
        from .data.registry import DatasetRegistry

        try:
            return DatasetRegistry(self.settings.config_dir).all()
        except (RaphaError, OSError, ValueError):  # a damaged registry: the controls that need it are not met
            return None

    @cached_property
    def audit(self) -> Any:
        return audit_status(self.settings)


def audit_status(settings: Settings) -> Any:
    """The audit check the edge makes at start, read only (``rapha-edge audit verify``)."""
    status, audit = open_audit_status(settings)
    if audit is not None:
        audit.db.close()
    return status


def open_audit_status(settings: Settings) -> tuple[Any, Any]:
    """(status, the open audit log or None when there is no database)."""
    from .audit import AuditLog
    from .audit_head import HEAD_FILE, AuditStatus, HeadFile, check_audit, last_anchored_head, missing_database
    from .db import Database

    head_file = HeadFile(settings.state_dir / HEAD_FILE)
    if not settings.db_path.exists():
        return missing_database(settings.db_path, head_file.path), None
    db = Database(settings.db_path)
    audit = AuditLog(db, head_file)
    damage = db.quick_check()
    if damage:
        return AuditStatus("broken", 0, "", f"audit log BROKEN: the edge database {settings.db_path} is damaged: "
                                            f"{damage[0]}", "restore the edge's state directory from a backup"), audit
    return check_audit(audit, head_file, last_anchored_head(db)), audit


# ---- the live checks, by the name the map gives -----------------------------------------

NO_POLICY_DATA = not_met("policies/data.json cannot be read: the policy denies every job, and its settings "
                         "cannot be checked")


def _tls(edge: EdgeView) -> Finding:
    s = edge.settings
    if not s.tls_cert:
        return not_met("server.tls_cert is not set: the researcher API is plain HTTP (safe only behind a TLS "
                       "proxy, which the edge cannot see)")
    missing = [p for p in (s.path(s.tls_cert), s.path(s.tls_key)) if p is None or not p.is_file()]
    if missing:
        return not_met(f"server.tls_cert or tls_key names no file ({missing[0]}): the edge does not start")
    return met(f"HTTPS with the certificate {s.tls_cert}")


def _attestation(edge: EdgeView) -> Finding:
    backend = edge.settings.attestation.backend
    if backend not in HARDWARE_BACKENDS:
        return not_met(f"attestation.backend is {backend}: quotes are made in software, so they prove nothing "
                       "about where the job ran (demo mode only)")
    accepted = edge.section("attestation").get("backends")
    if edge.hospital is None:
        return NO_POLICY_DATA
    if not isinstance(accepted, list) or not accepted or any(b not in ("tdx", "sgx") for b in accepted):
        return not_met(f"policies/data.json attestation.backends is {accepted!r}: the policy must accept tdx or "
                       "sgx only")
    from .status import tee_readiness

    found = tee_readiness(edge.settings)["backend"]
    here = (f"jobs here are attested by {found}" if found else
            "no TEE was found on this machine, so every job is refused at the attestation gate until one is")
    return met(f"attestation.backend is {backend}; the policy accepts {', '.join(accepted)} quotes only; {here}")


def _unsafe(name: str, meaning: str) -> Callable[[EdgeView], Finding]:
    def check(edge: EdgeView) -> Finding:
        if name in edge.settings.unsafe:
            return not_met(f"{name} is set in edge.toml: {meaning}")
        return met(f"{name} is off")
    return check


def _wan_gate(edge: EdgeView) -> Finding:
    interface = edge.settings.sandbox.wan_interface
    if not interface:
        return not_met("sandbox.wan_interface is not set: the appliance's WAN stays up while jobs run (the job's "
                       "own sandbox has no network either way)")
    return met(f"the WAN gate takes {interface} down while a job runs")


def _key_modes(edge: EdgeView) -> Finding:
    s = edge.settings
    keys = sorted(p for p in s.keys_dir.iterdir() if p.is_file()) if s.keys_dir.is_dir() else []
    chain_key = s.path(s.chain.key_file)
    keys += [chain_key] if chain_key is not None and chain_key.is_file() else []
    if not keys:
        return not_met(f"no key files in {s.keys_dir}")
    loose = [f"{p.name} ({p.stat().st_mode & 0o777:o})" for p in keys if p.stat().st_mode & 0o077]
    if loose:
        return not_met(f"key files readable by others: {', '.join(loose)}; chmod 600 them")
    return met(f"{len(keys)} key files, each readable by its owner only")


def _state_dir_modes(edge: EdgeView) -> Finding:
    s = edge.settings
    loose = [f"{p} ({p.stat().st_mode & 0o777:o})" for p in (s.keys_dir, s.state_dir)
             if not p.is_dir() or p.stat().st_mode & 0o077]
    if loose:
        return not_met(f"directories open to others or missing: {', '.join(loose)}; chmod 700 them")
    return met("keys/ and state/ (the admin socket's directory) are mode 0700")


def _audit_chain(edge: EdgeView) -> Finding:
    status = edge.audit
    return met(status.message) if status.ok else not_met(f"{status.message}; {status.hint}")


def _anchor_backend(edge: EdgeView) -> Finding:
    backend = edge.settings.chain.backend
    if backend == "embedded":
        return not_met("chain.backend is embedded: receipts are anchored on a chain this edge runs itself, which "
                       "no one outside can check; set rpc or rfc3161")
    return met(f"receipts are anchored with chain.backend {backend}")


def _datasets_granted(edge: EdgeView) -> dict[str, Any] | None:
    datasets = edge.hospital.get("datasets") if edge.hospital is not None else None
    return datasets if isinstance(datasets, dict) else None


def _every_dataset(key: str, what: str, *alternatives: str) -> Callable[[EdgeView], Finding]:
    """Met when every dataset granted in the policy data lists ``key`` (or one of
    ``alternatives``) as a non-empty list."""
    def check(edge: EdgeView) -> Finding:
        datasets = _datasets_granted(edge)
        if datasets is None:
            return NO_POLICY_DATA
        if not datasets:
            return Finding(NOT_APPLICABLE, "no dataset is granted in policies/data.json")
        bare = sorted(name for name, grant in datasets.items()
                      if not any(isinstance(grant, dict) and isinstance(grant.get(k), list) and grant.get(k)
                                 for k in (key, *alternatives)))
        if bare:
            return not_met(f"granted without {what}: {', '.join(bare)}")
        return met(f"each of the {len(datasets)} granted datasets lists its {what}")
    return check


def _budget_ceilings(edge: EdgeView) -> Finding:
    if edge.hospital is None:
        return NO_POLICY_DATA
    budget = edge.section("budget")
    names = ("max_records_per_job", "max_seconds", "max_cost_per_job", "max_epochs")
    missing = [n for n in names if not _positive(budget.get(n))]
    if missing:
        return not_met(f"budget ceilings not set in policies/data.json: {', '.join(missing)}")
    return met(", ".join(f"{n} {budget[n]}" for n in names))


def _positive(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _declared_metrics(edge: EdgeView) -> Finding:
    if edge.hospital is None:
        return NO_POLICY_DATA
    if edge.section("output").get("require_declared_metrics") is not True:
        return not_met("output.require_declared_metrics is not true: a job may log metrics under names it did "
                       "not declare (they are still bounded in number and length)")
    return met("metrics leave only under names declared before the job ran")


def _output_caps(edge: EdgeView) -> Finding:
    if edge.hospital is None:
        return NO_POLICY_DATA
    output = edge.section("output")
    names = ("max_weights_bytes", "max_metric_names", "max_metric_points")
    missing = [n for n in names if not _positive(output.get(n))]
    if missing:
        return not_met(f"output caps not set in policies/data.json: {', '.join(missing)}")
    return met(", ".join(f"{n} {output[n]}" for n in names))


def _release_thresholds(edge: EdgeView) -> list[tuple[str, dict[str, Any]]]:
    """("edge", the edge's thresholds) and each dataset's overrides merged over them."""
    release = edge.section("release")
    base = _object(release.get("thresholds"))
    merged = [("edge", base)]
    for name, entry in sorted(_object(release.get("datasets")).items()):
        own = _object(entry).get("thresholds")
        if isinstance(own, dict):
            merged.append((f"dataset {name}", {**base, **own}))
    return merged


def _record_copy_threshold(edge: EdgeView) -> Finding:
    if edge.hospital is None:
        return NO_POLICY_DATA
    loose = [f"{who} ({t.get('max_records_matched')!r})" for who, t in _release_thresholds(edge)
             if t.get("max_records_matched") != 0]
    if loose:
        return not_met(f"max_records_matched is not 0 for: {', '.join(loose)}: outputs holding copied records "
                       "may leave")
    return met("one record found copied in the outputs refuses the release")


def _membership_threshold(edge: EdgeView) -> Finding:
    if edge.hospital is None:
        return NO_POLICY_DATA
    loose = []
    for who, t in _release_thresholds(edge):
        auc, over = t.get("max_mia_auc"), t.get("mia_over_threshold")
        if not _positive(auc) or auc > MIA_AUC_CEILING or over not in ("refuse", "review"):
            loose.append(f"{who} (max_mia_auc {auc!r}, over it: {over!r})")
    if loose:
        return not_met(f"membership inference allowed above AUC {MIA_AUC_CEILING} or unhandled for: "
                       f"{', '.join(loose)}")
    return met(f"a model over the membership inference threshold (at most AUC {MIA_AUC_CEILING}) is refused or "
               "reviewed")


def _release_review(edge: EdgeView) -> Finding:
    if edge.hospital is None:
        return NO_POLICY_DATA
    release = edge.section("release")
    default = release.get("default_mode")
    auto = sorted(name for name, entry in _object(release.get("datasets")).items()
                  if _object(entry).get("mode") == "auto")
    if default not in ("review", "two_person"):
        return not_met(f"release.default_mode is {default!r}: outputs under the thresholds leave without an output "
                       "checker")
    if auto:
        return not_met(f"release mode auto (no output checker) for: {', '.join(auto)}")
    return met(f"every dataset's outputs wait for output checkers (default mode {default})")


def _dp_required(edge: EdgeView) -> Finding:
    if edge.hospital is None:
        return NO_POLICY_DATA
    listed = edge.section("privacy").get("dp_required_sensitivities")
    if not isinstance(listed, list) or "special-category" not in listed:
        return not_met(f"privacy.dp_required_sensitivities is {listed!r}: special-category data may train "
                       "without differential privacy")
    return met(f"differential privacy is required for: {', '.join(map(str, listed))}")


def _consent_minimum(edge: EdgeView) -> Finding:
    if edge.hospital is None:
        return NO_POLICY_DATA
    minimum = edge.section("consent").get("min_cohort")
    if not isinstance(minimum, int) or isinstance(minimum, bool) or minimum < MIN_COHORT_FLOOR:
        return not_met(f"consent.min_cohort is {minimum!r}: at least {MIN_COHORT_FLOOR} consented records are "
                       "needed for a job to run")
    return met(f"a job needs at least {minimum} consented records (after the opt-out)")


def _opt_out_lists(edge: EdgeView) -> Finding:
    datasets = edge.registered_datasets
    if datasets is None:
        return not_met("the dataset registry cannot be read")
    if not datasets:
        return Finding(NOT_APPLICABLE, "no dataset is registered")
    bare = sorted(name for name, dataset in datasets.items() if not dataset.opt_out)
    if bare:
        return not_met(f"registered without an opt-out list: {', '.join(bare)} (datasets add --opt-out FILE)")
    return met(f"each of the {len(datasets)} registered datasets applies its opt-out list")


def _holdback(edge: EdgeView) -> Finding:
    if edge.hospital is None:
        return NO_POLICY_DATA
    holdback = edge.section("disclosure").get("holdback")
    fraction = holdback.get("fraction") if isinstance(holdback, dict) else None
    minimum = holdback.get("minimum") if isinstance(holdback, dict) else None
    if not _positive(fraction) or fraction >= 1 or not isinstance(minimum, int) or minimum < 1:
        return not_met(f"disclosure.holdback is {holdback!r}: without a held-back set no model can be checked for "
                       "membership inference")
    return met(f"{fraction:.0%} of each cohort, at least {minimum} records, is held back from the job")


def _scan_deny_rules(edge: EdgeView) -> Finding:
    if edge.hospital is None:
        return NO_POLICY_DATA
    rules = edge.section("network").get("deny_scan_rules")
    if not isinstance(rules, list) or not rules:
        return not_met("network.deny_scan_rules is empty: only high-severity scan findings deny a job")
    return met(f"high findings and these scan rules deny a job: {', '.join(map(str, rules))}")


def _policy_files(edge: EdgeView) -> Finding:
    shipped = sorted(p.name for p in MAP_FILE.parent.glob("*.rego") if not p.name.endswith("_test.rego"))
    missing = [name for name in shipped if not (edge.settings.policies_dir / name).is_file()]
    if missing:
        return not_met(f"policy files missing from {edge.settings.policies_dir}: {', '.join(missing)}")
    return met(f"{len(shipped)} policy files in force, their bundle digest in each receipt")


CHECKS: dict[str, Callable[[EdgeView], Finding]] = {
    "tls": _tls,
    "attestation": _attestation,
    "airgap": _unsafe("unsafe_no_airgap", "jobs run with the host's network"),
    "wan_gate": _wan_gate,
    "key_modes": _key_modes,
    "state_dir_modes": _state_dir_modes,
    "audit_chain": _audit_chain,
    "anchor_backend": _anchor_backend,
    "purposes_listed": _every_dataset("purposes", "approved purposes"),
    "fields_listed": _every_dataset("fields", "released fields"),
    "roles_granted": _every_dataset("roles", "roles or named researchers", "researchers"),
    "budget_ceilings": _budget_ceilings,
    "declared_metrics": _declared_metrics,
    "output_caps": _output_caps,
    "record_copy_threshold": _record_copy_threshold,
    "membership_threshold": _membership_threshold,
    "release_review": _release_review,
    "dp_required": _dp_required,
    "consent_minimum": _consent_minimum,
    "opt_out_lists": _opt_out_lists,
    "holdback": _holdback,
    "scan_deny_rules": _scan_deny_rules,
    "policy_files": _policy_files,
    "builtin": lambda edge: met("built into the edge: no setting turns it off"),
    "organisational": lambda edge: Finding(NOT_APPLICABLE, "an organisational control the hospital keeps outside "
                                                           "the edge"),
}


# ---- the map and the report ---------------------------------------------------------------

def load_map(path: Path = MAP_FILE) -> list[dict[str, Any]]:
    try:
        controls = json.loads(path.read_text("utf-8"))["controls"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigFault(f"the compliance map {path.name} cannot be read: {exc}") from exc
    unknown = sorted({c.get("check") for c in controls} - set(CHECKS), key=str)
    if unknown:
        raise ConfigFault(f"the compliance map names checks this edge does not have: {unknown}")
    return list(controls)


def evaluate(settings: Settings, controls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Every control of the map with its status and why, and the counts."""
    edge = EdgeView(settings)
    rows = []
    for control in controls if controls is not None else load_map():
        try:
            finding = CHECKS[control["check"]](edge)
        except (OSError, ValueError, RaphaError, sqlite3.Error) as exc:  # what it reads is unreadable: fail closed
            finding = not_met(f"the check could not read what it needs: {exc}")
        rows.append({**control, "status": finding.status, "why": finding.why})
    counts = {status: sum(r["status"] == status for r in rows) for status in (MET, NOT_MET, NOT_APPLICABLE)}
    return {"edge_id": settings.edge_id, "controls": rows, "counts": counts}


def render_text(report: dict[str, Any]) -> str:
    lines = [f"compliance of edge {report['edge_id']}: " + ", ".join(f"{n} {s}" for s, n in report["counts"].items())]
    for row in report["controls"]:
        lines.append(f"{row['status'].upper():15} {row['framework']} {row['reference']}: {row['title']}")
        lines.append(f"{'':15} {row['why']}")
    return "\n".join(lines)


def render_html(report: dict[str, Any]) -> str:
    """One self-contained page for the DPO: no script, no outside resource."""
    e = html.escape
    rows = "".join(
        f"<tr class=\"{e(r['status'].replace(' ', '-'))}\"><td>{e(r['id'])}</td><td>{e(r['framework'])}</td>"
        f"<td>{e(r['reference'])}</td>"
        f"<td>{e(r['title'])}<br><small>{e(r['mechanism'])}</small></td><td>{e(r['status'])}</td>"
        f"<td>{e(r['why'])}</td><td><small>{'<br>'.join(e(t) for t in r['tests'])}</small></td></tr>"
        for r in report["controls"])
    counts = ", ".join(f"{n} {e(s)}" for s, n in report["counts"].items())
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Compliance of edge {e(report['edge_id'])}</title><style>"
            "body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #999;padding:4px;"
            "vertical-align:top}.met td:nth-child(5){color:#060}.not-met td:nth-child(5){color:#a00;font-weight:bold}"
            "</style></head><body>"
            f"<h1>Compliance of edge {e(report['edge_id'])}</h1><p>{counts}</p><table><tr><th>Control</th>"
            "<th>Framework</th><th>Reference</th><th>Control and mechanism</th><th>Status</th><th>Why</th>"
            "<th>Tests</th></tr>"
            f"{rows}</table></body></html>\n")
