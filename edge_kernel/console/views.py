"""What the console's read-only pages show: each reads the config directory as the CLI's
own commands do (``jobs list``, ``status``, ``audit verify``, ``compliance``), or asks the
running edge's admin socket (approvals, release reviews), and hands plain data to
``pages.py``. Each answers ``(title, body)``; none changes anything.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from jupyter_rapha.protocol.errors import NotFound, StorageFault

from . import pages

if TYPE_CHECKING:
    from ..settings import Settings
    from .app import Console

RECENT_AUDIT = 100
RECENT_OUTBOX = 20


@contextmanager
def _read_only(settings: Settings) -> Iterator[sqlite3.Connection]:
    """The edge database, opened read-only: the console never writes the edge's state."""
    if not settings.db_path.exists():
        raise StorageFault("the edge has no database yet: start it with 'rapha-edge serve'")
    db = sqlite3.connect(f"file:{settings.db_path}?mode=ro", uri=True, timeout=10)
    db.row_factory = sqlite3.Row
    try:
        yield db
    except sqlite3.Error as exc:
        raise StorageFault(f"the edge database cannot be read: {exc}") from exc
    finally:
        db.close()


def _names(settings: Settings) -> dict[str, str]:
    from ..researchers import ResearcherRegistry

    return {r.key_id: r.name for r in ResearcherRegistry(settings.config_dir).all()}


def _job_line(row: sqlite3.Row, names: dict[str, str]) -> dict[str, Any]:
    spec = json.loads(row["spec"])
    budget = spec.get("budget") if isinstance(spec.get("budget"), dict) else {}
    key_id = row["researcher_key_id"]
    return {"job_id": row["job_id"], "state": row["state"], "dataset": row["dataset"],
            "researcher": names.get(key_id) or f"key {key_id[:12]} (unregistered)", "submitted": row["submitted"],
            "updated": row["updated"], "reasons": json.loads(row["reasons"] or "[]"),
            "progress": json.loads(row["progress"] or "{}"), "max_records": budget.get("max_records"),
            "gates": json.loads(row["gates"] or "[]")}


def job_lines(settings: Settings, limit: int = 200) -> list[dict[str, Any]]:
    names = _names(settings)
    with _read_only(settings) as db:
        rows = db.execute("SELECT * FROM jobs ORDER BY submitted DESC LIMIT ?", (limit,)).fetchall()
    return [_job_line(row, names) for row in rows]


def jobs(console: Console) -> tuple[str, str]:
    return "Jobs", pages.jobs_page(job_lines(console.settings))


def job(console: Console, job_id: str) -> tuple[str, str]:
    with _read_only(console.settings) as db:
        row = db.execute("SELECT * FROM jobs WHERE job_id=?", (job_id,)).fetchone()
    if row is None:
        raise NotFound(f"no job {job_id[:64]} at this edge")
    line = _job_line(row, _names(console.settings))
    return f"Job {line['job_id']}", pages.job_page(line)


def approvals(console: Console) -> tuple[str, str]:
    return "Jobs awaiting approval", pages.approvals_page(console.admin_get("/admin/v1/approval")["jobs"])


def releases(console: Console) -> tuple[str, str]:
    return "Release reviews", pages.releases_page(console.admin_get("/admin/v1/release")["jobs"])


def datasets(console: Console) -> tuple[str, str]:
    from jupyter_rapha.protocol.policy import DATA_FILE

    from ..data.registry import DatasetRegistry

    settings = console.settings
    registry = DatasetRegistry(settings.config_dir)
    try:
        hospital = json.loads((settings.policies_dir / DATA_FILE).read_text("utf-8"))["hospital"]
        grants, release = hospital.get("datasets") or {}, (hospital.get("release") or {}).get("datasets") or {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        grants, release = {}, {}
    cohorts: dict[str, int] = {}
    for line in reversed(job_lines(settings)):  # oldest first: the newest job's count stays
        size = line["progress"].get("cohort_size")
        if isinstance(size, int):
            cohorts[line["dataset"]] = size
    shown = []
    for name, dataset in registry.all().items():
        grant = grants.get(name) if isinstance(grants.get(name), dict) else None
        mode: dict[str, Any] = release[name] if isinstance(release.get(name), dict) else {}
        shown.append({
            "name": name, "version": dataset.version, "source": dataset.source, "sensitivity": dataset.sensitivity,
            "price_per_record": dataset.price_per_record, "max_records": dataset.max_records,
            "cohort": str(cohorts[name]) if name in cohorts else "no job yet", "opt_out": _opt_out(registry, dataset),
            "run_approval": str((grant or {}).get("run_approval", "none")), "release": str(mode.get("mode", "auto")),
            "granted": grant is not None})
    return "Datasets", pages.datasets_page(shown)


def _opt_out(registry: Any, dataset: Any) -> str:
    try:
        path = registry.resolve_opt_out(dataset)
    except Exception as exc:  # noqa: BLE001 - shown, not raised: the page still lists the rest
        return f"cannot be read ({type(exc).__name__})"
    if path is None:
        return "none"
    try:
        entries = [line for line in path.read_text("utf-8").splitlines() if line.strip()]
    except OSError as exc:
        return f"cannot be read ({type(exc).__name__})"
    return f"{len(entries)} patient(s) opted out"


def researchers(console: Console) -> tuple[str, str]:
    from ..researchers import ResearcherRegistry

    people = [{"name": r.name, "key_id": r.key_id, "roles": list(r.roles), "purposes": list(r.purposes)}
              for r in ResearcherRegistry(console.settings.config_dir).all()]
    return "Researchers and roles", pages.researchers_page(people)


def audit(console: Console) -> tuple[str, str]:
    from ..compliance import open_audit_status

    status, log = open_audit_status(console.settings)
    if log is not None:
        log.db.close()
    check = {"ok": status.ok, "message": status.message, "hint": status.hint}
    entries: list[dict[str, Any]] = []
    if console.settings.db_path.exists():
        with _read_only(console.settings) as db:
            for row in db.execute("SELECT * FROM audit ORDER BY seq DESC LIMIT ?", (RECENT_AUDIT,)):
                entries.append(dict(row) | {"detail": json.loads(row["detail"])})
    return "Audit log", pages.audit_page(check, entries)


def edge(console: Console) -> tuple[str, str]:
    from ..sandbox.wan import HALT_FILE
    from ..status import tee_readiness

    settings = console.settings
    sandbox = settings.sandbox
    airgap = {"air gap": "OFF (unsafe_no_airgap: jobs run without it)" if sandbox.unsafe_no_airgap else
              "on: each job runs in its own network namespace with no route out",
              "job files kept (unsafe_keep_job_files)": sandbox.unsafe_keep_job_files}
    halt = settings.state_dir / HALT_FILE
    wan = {"WAN gate interface": sandbox.wan_interface or "none configured (no appliance WAN gate)",
           "state": ("HALTED: a restore failed; run 'rapha-edge wan resume'" if halt.exists() else
                     "not halted (severed only while jobs run)") if sandbox.wan_interface else "not applicable"}
    tee = tee_readiness(settings)
    attestation: dict[str, Any] = {"configured backend": tee["configured"], "backend chosen": tee["backend"],
                                   "hardware found": ", ".join(tee["hardware"]) or "none",
                                   "problem": tee["problem"] or "none"}
    attestation.update(_last_quote(settings))
    counts: dict[str, Any] = {}
    recent: list[dict[str, Any]] = []
    if settings.db_path.exists():
        with _read_only(settings) as db:
            try:
                total, waiting = db.execute(
                    "SELECT COUNT(*), COUNT(*) - COUNT(published) FROM anchor_outbox").fetchone()
                recent = [dict(r) for r in db.execute(
                    "SELECT seq, job_id, enqueued, batch_id, published FROM anchor_outbox ORDER BY seq DESC LIMIT ?",
                    (RECENT_OUTBOX,))]
                counts = {"receipts in the outbox": total, "waiting for their anchor": waiting}
            except sqlite3.OperationalError:  # no anchor configured yet: the table is made on first use
                counts = {"receipts in the outbox": 0, "waiting for their anchor": 0}
    return "Air gap, attestation, anchors", pages.edge_page(
        {"airgap": airgap, "wan": wan, "attestation": attestation, "outbox": {"counts": counts, "recent": recent}})


def _last_quote(settings: Settings) -> dict[str, Any]:
    """The attestation evidence in the newest signed receipt: backend, outcome, quote digest,
    TCB status (the quote itself stays in the receipt)."""
    import base64

    with _read_only(settings) as db:
        rows = db.execute("SELECT job_id, updated, receipt FROM jobs WHERE receipt IS NOT NULL "
                          "ORDER BY updated DESC LIMIT 20").fetchall()
    for row in rows:
        try:
            envelope = json.loads(row["receipt"])["envelope"]
            evidence = _find_quote(json.loads(base64.b64decode(envelope["payload"])))
        except (ValueError, KeyError, TypeError):
            continue
        if evidence is not None:
            return {"last quote (job)": row["job_id"], "last quote backend": evidence.get("backend"),
                    "last quote outcome": evidence.get("outcome"), "last quote SHA-256": evidence.get("quote_sha256"),
                    "last quote TCB status": evidence.get("tcb_status"), "last quote at": row["updated"]}
    return {"last quote": "no receipt holds one yet"}


def _find_quote(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict):
        if "quote_sha256" in value:
            return value
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = _find_quote(item)
            if found is not None:
                return found
    return None


def compliance(console: Console) -> tuple[str, str]:
    """The same page as 'rapha-edge compliance --html', its one stylesheet moved to the console's."""
    from ..compliance import evaluate, render_html

    return "compliance", render_html(evaluate(console.settings))
