"""The console's pages: HTML from plain data, rendered on the server (no script, no outside
resource; the stylesheet is served by the console itself under its strict CSP).

Every value is escaped here; every form carries the one-time nonce the caller made for it.
The plots are inline SVG drawn from numbers (presentation attributes only: the CSP allows
no inline style).
"""

from __future__ import annotations

import datetime
import html
import json
from collections.abc import Callable, Sequence
from typing import Any

from ..release.commands import researcher_of as _who

e = html.escape
# A form nonce for (action, job id): made by the app, bound to the session, spent once.
NonceMaker = Callable[[str, str], str]

NAV = (("/", "Jobs"), ("/approvals", "Approvals"), ("/releases", "Release reviews"), ("/datasets", "Datasets"),
       ("/researchers", "Researchers and roles"), ("/audit", "Audit log"), ("/edge", "Air gap, attestation, anchors"),
       ("/compliance", "Compliance"))

STYLESHEET = """
body{font-family:sans-serif;margin:0;color:#1a1a1a}
header{background:#0b3d5c;color:#fff;padding:8px 16px}
header a{color:#fff;margin:0 6px;text-decoration:none}\nheader nav{display:inline}
header .who{float:right}
main{padding:12px 16px}
table{border-collapse:collapse;margin-bottom:12px}
td,th{border:1px solid #aaa;padding:3px 6px;vertical-align:top;text-align:left}
.state{font-weight:bold}
.error{border:2px solid #a00;background:#fde;padding:8px;margin:8px 0}
.notice{border:2px solid #060;background:#dfd;padding:8px;margin:8px 0}
.ok{color:#060;font-weight:bold}.bad{color:#a00;font-weight:bold}
form.decide{display:inline-block;border:1px solid #aaa;padding:6px;margin:4px 8px 4px 0}
button.approve{background:#060;color:#fff;border:0;padding:6px 14px;font-size:15px}
button.reject{background:#a00;color:#fff;border:0;padding:6px 14px;font-size:15px}
pre{background:#f4f4f4;padding:6px;overflow:auto}
"""


def nav() -> str:
    return "<nav>" + " | ".join(f'<a href="{href}">{e(label)}</a>' for href, label in NAV) + "</nav>"


def page(title: str, body: str, *, who: str, notice: str = "", error: str = "") -> str:
    banner = (f'<div class="notice" id="notice">{e(notice)}</div>' if notice else "") + (
        f'<div class="error" id="error">{e(error)}</div>' if error else "")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title><link rel=\"stylesheet\" href=\"/console.css\"></head><body>"
            f"<header>{nav()}<span class=\"who\">{e(who)}</span></header><main><h1>{e(title)}</h1>{banner}{body}"
            "</main></body></html>\n")


def message_page(title: str, message: str) -> str:
    """For a request with no session: no navigation, nothing about the edge."""
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title></head><body><main>"
            f"<h1>{e(title)}</h1><div class=\"error\" id=\"error\">{e(message)}</div></main></body></html>\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, table_id: str = "") -> str:
    """``rows`` hold HTML already escaped (cells built with ``e``)."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    ident = f' id="{e(table_id)}"' if table_id else ""
    return f"<table{ident}><tr>{head}</tr>{body}</table>"


def when(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return ""
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# ---- jobs --------------------------------------------------------------------------------

def progress_bar(job: dict[str, Any]) -> str:
    progress = job.get("progress") or {}
    used, limit = progress.get("records_used"), job.get("max_records")
    if job["state"] != "running" or not isinstance(used, int) or not isinstance(limit, int) or limit <= 0:
        return ""
    return (f'<progress class="job-progress" max="{limit}" value="{min(used, limit)}"></progress> '
            f"{used} of {limit} records")


def jobs_page(jobs: list[dict[str, Any]]) -> str:
    rows = [[f'<a href="/jobs/{e(j["job_id"])}">{e(j["job_id"][:12])}</a>',
             f'<span class="state">{e(j["state"])}</span> {progress_bar(j)}', e(j["dataset"]), e(j["researcher"]),
             e(j["submitted"]), e(j["updated"]), e("; ".join(j["reasons"]))] for j in jobs]
    running = sum(1 for j in jobs if j["state"] in ("submitted", "running", "awaiting_approval", "held"))
    return (f"<p>{running} job(s) in the queue or waiting, {len(jobs)} shown (newest first).</p>" +
            table(["Job", "State", "Dataset", "Researcher", "Submitted", "Updated", "Reasons"], rows,
                  table_id="jobs") +
            "<h2>Records used over time</h2>" + records_plot(jobs))


def job_page(job: dict[str, Any]) -> str:
    gates = [[e(str(g.get("gate", g.get("name", "")))), e(str(g.get("outcome", g.get("status", "")))),
              e(json.dumps({k: v for k, v in g.items() if k not in ("gate", "name", "quote", "checks")})[:400])]
             for g in job["gates"] if isinstance(g, dict)]
    facts = [["State", f'<span class="state">{e(job["state"])}</span> {progress_bar(job)}'],
             ["Dataset", e(job["dataset"])], ["Researcher", e(job["researcher"])],
             ["Submitted", e(job["submitted"])], ["Updated", e(job["updated"])],
             ["Reasons", e("; ".join(job["reasons"]))], ["Progress", e(json.dumps(job.get("progress") or {}))]]
    links = []
    if job["state"] == "awaiting_approval":
        links.append(f'<a href="/approvals/{e(job["job_id"])}">Approval</a>')
    if job["state"] == "held":
        links.append(f'<a href="/releases/{e(job["job_id"])}">Release review</a>')
    return (table(["", ""], facts, table_id="job") + " ".join(links) + "<h2>Gates</h2>" +
            table(["Gate", "Outcome", "Evidence"], gates))


def records_plot(jobs: list[dict[str, Any]]) -> str:
    """Cumulative records used by jobs that ended, against the time each ended."""
    points: list[tuple[float, int]] = []
    for job in jobs:
        used = (job.get("progress") or {}).get("records_used")
        stamp = _timestamp(job.get("updated", ""))
        if isinstance(used, int) and used > 0 and stamp is not None and job["state"] not in ("running", "submitted"):
            points.append((stamp, used))
    if not points:
        return '<p id="records-plot">No job has used records yet.</p>'
    points.sort()
    total = 0
    series: list[tuple[float, float]] = []
    for stamp, used in points:
        total += used
        series.append((stamp, total))
    return line_plot(series, x_label="time (UTC)", y_label="records used, cumulative", plot_id="records-plot",
                     x_text=lambda x: datetime.datetime.fromtimestamp(x, datetime.UTC).strftime("%m-%d %H:%M"))


def _timestamp(text: Any) -> float | None:
    try:
        stamp = datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return stamp.timestamp()


def line_plot(series: list[tuple[float, float]], *, x_label: str, y_label: str, plot_id: str,
              x_text: Callable[[float], str] = lambda x: f"{x:g}") -> str:
    width, height, left, bottom = 520, 220, 60, 40
    xs, ys = [p[0] for p in series], [p[1] for p in series]
    x0, x1 = min(xs), max(xs)
    y1 = max(ys) or 1
    span = (x1 - x0) or 1

    def px(x: float) -> float:
        return left + (x - x0) / span * (width - left - 20)

    def py(y: float) -> float:
        return height - bottom - y / y1 * (height - bottom - 20)

    path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in series)
    dots = "".join(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="#0b3d5c"/>' for x, y in series)
    return (f'<svg id="{e(plot_id)}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'role="img" aria-label="{e(y_label)}">'
            f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#333"/>'
            f'<line x1="{left}" y1="10" x2="{left}" y2="{height - bottom}" stroke="#333"/>'
            f'<polyline points="{path}" fill="none" stroke="#0b3d5c" stroke-width="2"/>{dots}'
            f'<text x="{left - 4}" y="{py(y1) + 4:.1f}" text-anchor="end" font-size="11">{y1:g}</text>'
            f'<text x="{left - 4}" y="{height - bottom + 4}" text-anchor="end" font-size="11">0</text>'
            f'<text x="{left}" y="{height - bottom + 16}" font-size="11">{e(x_text(x0))}</text>'
            f'<text x="{width - 10}" y="{height - bottom + 16}" text-anchor="end" font-size="11">{e(x_text(x1))}</text>'
            f'<text x="{(left + width) / 2:.0f}" y="{height - 6}" text-anchor="middle" font-size="12">'
            f'{e(x_label)}</text><text x="14" y="{(height - bottom) / 2:.0f}" font-size="12" '
            f'transform="rotate(-90 14 {(height - bottom) / 2:.0f})" text-anchor="middle">{e(y_label)}</text></svg>')


# ---- approvals ---------------------------------------------------------------------------

def approvals_page(jobs: list[dict[str, Any]]) -> str:
    if not jobs:
        return '<p id="approvals">No job is awaiting approval.</p>'
    rows = [[f'<a href="/approvals/{e(j["job_id"])}">{e(j["job_id"][:12])}</a>', e(j["dataset"]), e(_who(j)),
             e(j["submitted"]), e(f"{j.get('approvals', 0)} of {j.get('approvals_needed', 1)}")] for j in jobs]
    return table(["Job", "Dataset", "Researcher", "Submitted", "Approvals"], rows, table_id="approvals")


def approval_page(detail: dict[str, Any], nonce: NonceMaker | None) -> str:
    job_id = detail["job_id"]
    facts = [["State", f'<span class="state">{e(detail["state"])}</span>'], ["Dataset", e(detail["dataset"])],
             ["Researcher", e(_who(detail))], ["Submitted", e(detail["submitted"])]]
    request = detail.get("request")
    parts = []
    if request is None:
        facts.append(["Reasons", e("; ".join(detail.get("reasons") or []))])
    else:
        budget, cost, policy = request.get("budget") or {}, request.get("cost") or {}, request.get("policy") or {}
        scan = request.get("scan") or {}
        findings = [f for f in scan.get("findings") or [] if isinstance(f, dict)]
        facts += [["Run approval", e(f"{request['mode']}: {detail.get('approvals', 0)} of "
                                     f"{request['approvals_needed']} approvals")],
                  ["Budget", e(f"{budget.get('max_records')} records, {budget.get('max_seconds')} s")],
                  ["Cost at most", e(f"{cost.get('amount')} {cost.get('currency')} "
                                     f"({cost.get('price_per_record')} a record)")],
                  ["Fields", e(", ".join(request.get("fields") or []))],
                  ["Policy", e(f"allow={policy.get('allow')}; obligations {json.dumps(policy.get('obligations'))}")],
                  ["Scan", e(f"{len(findings)} finding(s) {json.dumps(scan.get('counts'))}")],
                  ["Request digest", f'<code>{e(detail["subject"]["request_sha256"])}</code>']]
        parts.append(table(["Severity", "Line", "Finding"], [[e(str(f.get("severity"))), e(str(f.get("line"))),
                                                              e(str(f.get("message")))] for f in findings],
                           table_id="findings") if findings else "<p>The scan found nothing.</p>")
        includes = request.get("includes") or []
        if includes:
            parts.append(table(["Included file", "SHA-256"], [[e(str(i.get("path"))), e(str(i.get("sha256")))]
                                                             for i in includes if isinstance(i, dict)]))
        parts.append(f'<h2>Cell</h2><pre id="cell">{e(str(request.get("code", "")))}</pre>')
        if nonce is not None and detail["state"] == "awaiting_approval":
            parts.append("<h2>Decide</h2>" + decision_forms(f"/approvals/{job_id}/decide",
                                                            nonce("approval", job_id), ("approve", "Approve to run"),
                                                            ("reject", "Reject")))
    return table(["", ""], facts, table_id="approval") + "".join(parts) + decisions_table(
        detail.get("decisions") or [], "steward")


def decision_forms(action: str, nonces: str | tuple[str, str], approve: tuple[str, str],
                   reject: tuple[str, str]) -> str:
    first, second = (nonces, nonces) if isinstance(nonces, str) else nonces
    forms = []
    for (decision, label), token in ((approve, first), (reject, second)):
        forms.append(f'<form class="decide" method="post" action="{e(action)}" id="form-{e(decision)}">'
                     f'<input type="hidden" name="nonce" value="{e(token)}">'
                     f'<input type="hidden" name="decision" value="{e(decision)}">'
                     f'<label>Reason (kept in the audit log; write no patient data):<br>'
                     f'<input type="text" name="reason" size="50" maxlength="500" required></label><br>'
                     f'<button type="submit" class="{e(decision)}">{e(label)}</button></form>')
    return "".join(forms)


def decisions_table(decisions: list[dict[str, Any]], role: str) -> str:
    if not decisions:
        return "<h2>Decisions</h2><p>None yet.</p>"
    rows = [[e(str(d.get("decision"))), e(str(d.get(role, ""))), e(str(d.get(f"{role}_key_id", ""))[:12]),
             e(when(d.get("signed_at"))), e(str(d.get("reason", "")))] for d in decisions]
    return "<h2>Decisions</h2>" + table(["Decision", "By", "Key", "Signed", "Reason"], rows, table_id="decisions")


# ---- release reviews ---------------------------------------------------------------------

def releases_page(jobs: list[dict[str, Any]]) -> str:
    if not jobs:
        return '<p id="releases">No job is held.</p>'
    rows = [[f'<a href="/releases/{e(j["job_id"])}">{e(j["job_id"][:12])}</a>', e(j["dataset"]), e(_who(j)),
             e(j["submitted"]), e(_waits_for(j))] for j in jobs]
    return table(["Job", "Dataset", "Researcher", "Submitted", "Waits for"], rows, table_id="releases")


def _waits_for(job: dict[str, Any]) -> str:
    if job.get("checks_done", 0) < job.get("checks_total", 0):
        return f"checks running ({job.get('checks_done', 0)} of {job['checks_total']} done)"
    if job.get("review_needed"):
        return f"review ({job.get('approvals', 0)} of {job.get('approvals_needed', 1)} approvals)"
    return "held"


def release_page(detail: dict[str, Any], nonce: NonceMaker | None) -> str:
    job_id = detail["job_id"]
    facts = [["State", f'<span class="state">{e(detail["state"])}</span>'], ["Dataset", e(detail["dataset"])],
             ["Researcher", e(_who(detail))], ["Submitted", e(detail["submitted"])]]
    if detail["state"] != "held":
        facts.append(["Reasons", e("; ".join(detail.get("reasons") or []))])
        return table(["", ""], facts, table_id="release") + decisions_table(detail.get("decisions") or [], "checker")
    facts.append(["Waits for", e(_waits_for(detail))])
    policy = detail.get("policy") or {}
    if isinstance(policy, dict):
        facts.append(["Release policy", e(", ".join(f"{k}={policy[k]}" for k in ("decision", "rule", "mode")
                                                    if k in policy) + "; " + "; ".join(policy.get("reasons") or []))])
    outputs = detail.get("outputs") or {}
    facts.append(["Outputs", e(json.dumps(outputs))])
    facts.append(["Outputs digest", f'<code>{e(detail["subject"]["outputs_sha256"])}</code>'])
    held_checks: dict[str, Any] = detail["checks"] if isinstance(detail.get("checks"), dict) else {}
    checks: dict[str, Any] = held_checks["checks"] if isinstance(held_checks.get("checks"), dict) else {}
    rows = [[e(name), e(", ".join(f"{k}={_figure(v)}" for k, v in sorted(figures.items()))
                        if isinstance(figures, dict) else str(figures))] for name, figures in sorted(checks.items())]
    parts = [f"<h2>Disclosure checks</h2><p>Held-back records: {e(str(held_checks.get('holdback_size', 0)))}</p>",
             table(["Check", "Figures"], rows, table_id="checks") if rows else "<p>No check has finished yet.</p>",
             membership_plot(checks)]
    if nonce is not None and detail.get("review_needed") and detail.get("checks_done", 0) >= detail.get(
            "checks_total", 0):
        parts.append("<h2>Decide</h2>" + decision_forms(f"/releases/{job_id}/decide", nonce("release", job_id),
                                                        ("approve", "Release to the researcher"),
                                                        ("reject", "Refuse the release")))
    return table(["", ""], facts, table_id="release") + "".join(parts) + decisions_table(
        detail.get("decisions") or [], "checker")


def _figure(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)


def membership_plot(checks: dict[str, Any]) -> str:
    """The membership test's figures (and the copy scan's largest correlation) as bars on
    their 0 to 1 scale (an AUC of 0.5 is chance)."""
    bars = []
    membership = checks.get("membership")
    note = ""
    if isinstance(membership, dict) and membership.get("status") == "not_checkable":
        note = (f'<p id="membership-note">The membership test could not be made on '
                f'{e(str(membership.get("records_used")))} record(s) used and a held-back set of '
                f'{e(str(membership.get("holdback_size")))}: no AUC or TPR to show.</p>')
    for name, figures in sorted(checks.items()):
        if not isinstance(figures, dict):
            continue
        for key, value in sorted(figures.items()):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1 and (
                    "auc" in key or "tpr" in key or "correlation" in key):
                bars.append((f"{name}.{key}", float(value)))
    if not bars:
        return note
    width, row = 520, 26
    height = row * len(bars) + 30
    left, scale = 200, width - 220
    items = []
    for i, (label, value) in enumerate(bars):
        y = 10 + i * row
        items.append(f'<text x="{left - 6}" y="{y + 15}" text-anchor="end" font-size="12">{e(label)}</text>'
                     f'<rect x="{left}" y="{y + 3}" width="{value * scale:.1f}" height="16" fill="#0b3d5c"/>'
                     f'<text x="{left + value * scale + 4:.1f}" y="{y + 15}" font-size="12">{value:.3f}</text>')
    chance = left + 0.5 * scale
    return (f'<h2>Membership and copy figures</h2>{note}<svg id="membership-plot" xmlns="http://www.w3.org/2000/svg" '
            f'width="{width}" height="{height}" role="img" aria-label="membership inference figures">'
            f'{"".join(items)}<line x1="{chance:.1f}" y1="4" x2="{chance:.1f}" y2="{height - 20}" stroke="#a00" '
            f'stroke-dasharray="4 3"/><text x="{chance:.1f}" y="{height - 6}" text-anchor="middle" font-size="11">'
            f'0.5 (chance)</text></svg>')


# ---- the edge's own pages ----------------------------------------------------------------

def datasets_page(datasets: list[dict[str, Any]]) -> str:
    rows = [[e(d["name"]), e(str(d["version"])), e(d["source"]), e(d["sensitivity"]), e(str(d["price_per_record"])),
             e(str(d["max_records"])), e(d["cohort"]), e(d["opt_out"]), e(d["run_approval"]), e(d["release"]),
             e("yes" if d["granted"] else "no (every job refused)")] for d in datasets]
    return table(["Dataset", "Version", "Source", "Sensitivity", "Price a record", "Largest budget",
                  "Cohort after opt-out (last job)", "Opt-out list", "Run approval", "Release", "Granted"], rows,
                 table_id="datasets")


def researchers_page(people: list[dict[str, Any]]) -> str:
    rows = [[e(p["name"]), f'<code>{e(p["key_id"])}</code>', e(", ".join(p["roles"])), e(", ".join(p["purposes"]))]
            for p in people]
    return table(["Name", "Key id", "Roles", "Purposes"], rows, table_id="researchers")


def audit_page(check: dict[str, Any], entries: list[dict[str, Any]]) -> str:
    verdict = (f'<p id="chain" class="ok">Chain verified: {e(check["message"])}</p>' if check["ok"] else
               f'<p id="chain" class="bad">Chain NOT intact: {e(check["message"])} ({e(check["hint"])})</p>')
    rows = [[e(str(r["seq"])), e(r["ts"]), e(r["event"]), e(r.get("job_id") or ""), e(r.get("actor") or ""),
             e(json.dumps(r.get("detail"))[:300])] for r in entries]
    return verdict + f"<p>The last {len(entries)} entries, newest first.</p>" + table(
        ["Seq", "Time", "Event", "Job", "Actor", "Detail"], rows, table_id="audit")


def edge_page(facts: dict[str, Any]) -> str:
    gate = facts["wan"]
    sections = [
        "<h2>Air gap and WAN gate</h2>", table(["", ""], [[e(k), e(str(v))] for k, v in facts["airgap"].items()],
                                               table_id="airgap"),
        table(["", ""], [[e(k), e(str(v))] for k, v in gate.items()], table_id="wan"),
        "<h2>Attestation</h2>", table(["", ""], [[e(k), e(str(v))] for k, v in facts["attestation"].items()],
                                      table_id="attestation"),
        "<h2>Anchor outbox</h2>", table(["", ""], [[e(k), e(str(v))] for k, v in facts["outbox"]["counts"].items()],
                                        table_id="outbox"),
        table(["Seq", "Job", "Enqueued", "Batch", "Published"],
              [[e(str(r["seq"])), e(r["job_id"]), e(when(r["enqueued"])), e(str(r["batch_id"] or "")),
                e(r["published"] or "waiting")] for r in facts["outbox"]["recent"]], table_id="outbox-recent"),
    ]
    return "".join(sections)
